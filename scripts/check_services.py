"""Stop the test run at once, with a helpful message, when PostgreSQL or Redis is unreachable."""

from __future__ import annotations

import argparse
import socket
import sys
from urllib.parse import urlparse


def _reachable(url: str, default_port: int) -> tuple[bool, str]:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=3):
            return True, f"{host}:{port}"
    except OSError as exc:
        return False, f"{host}:{port} ({exc})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    problems = []
    ok, where = _reachable(args.database_url, 5432)
    if not ok:
        problems.append(
            f"PostgreSQL is not reachable at {where}. Start it, e.g. "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
            "or set TEST_DATABASE_URL."
        )
    ok, where = _reachable(args.redis_url, 6379)
    if not ok:
        problems.append(
            f"Redis is not reachable at {where}. Start it, e.g. "
            "`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''`, "
            "or set TEST_REDIS_URL."
        )
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
