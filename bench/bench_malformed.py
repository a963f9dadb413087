"""Malformed-input benchmark: peak RSS of a real gunicorn web worker across the malformed corpus.

Starts ``gunicorn config.wsgi --chdir backend`` with ONE sync worker (``DEBUG=0``, PostgreSQL
from ``--database-url``, a fresh database), creates a user with a project-admin role and an API
token, then posts every case of ``tests/backend/malformed_corpus.py`` to ``POST /api/uploads/``
with ``Authorization: Token …``. After each answer it reads the worker's ``VmHWM`` (peak resident
set since the worker started) and ``VmRSS`` from ``/proc/<pid>/status``. A valid 64x64 DICOM is
uploaded first (warm-up: imports and the first decode) and last (the worker still serves).

The bound (``--bound-mib``, default 1024) holds when the worker's peak RSS over the whole run
stays under it; the run fails (exit 1) when it does not, when a case gets another status or code
than the corpus states, or when the worker is replaced without ``--max-requests`` (a crash).
Without ``--max-requests`` the one worker serves every request, so its VmHWM is the peak over the
whole corpus; with it, the peak is the largest VmHWM of the workers seen.

Celery tasks queued by the two valid uploads go to a Redis queue of their own that nothing
consumes and that is deleted at the end (no proposal runs in the web worker).

Usage: ``python bench/bench_malformed.py --out bench/results/malformed.json
[--database-url postgres://postgres@127.0.0.1:5432/pleura_bench_malformed] [--bound-mib 1024]
[--max-requests N]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests" / "backend")]

from bench_proposals import _fresh_postgres, _reachable  # noqa: E402 - after the path set-up

logger = logging.getLogger("bench.malformed")
MIB = 1024 * 1024
SETUP_SCRIPT = """
import json
from accounts.models import Membership, Role, User
from imaging.models import Project
from rest_framework.authtoken.models import Token
user = User.objects.create_user("bench-malformed")
project = Project.objects.create(name="bench-malformed")
Membership.objects.create(user=user, project=project, role=Role.ADMIN)
print(json.dumps({"token": Token.objects.create(user=user).key, "project": project.pk}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(args: argparse.Namespace, data_dir: Path, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "PLEURA_", "DATABASE_URL", "REDIS_URL"))}
    env.update({
        "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url, "PLEURA_CELERY_EAGER": "0",
        "PLEURA_DEFAULT_QUEUE": queue, "PLEURA_DATA_DIR": str(data_dir), "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1", "PLEURA_LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(REPO),
    })
    return env


def _manage(env: dict[str, str], *command: str) -> str:
    proc = subprocess.run([sys.executable, "manage.py", *command], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"manage.py {command[0]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def _start_gunicorn(env: dict[str, str], port: int, max_requests: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "gunicorn", "config.wsgi", "--chdir", "backend", "--workers", "1",
           "--worker-class", "sync", "--bind", f"127.0.0.1:{port}", "--timeout", "300"]
    if max_requests:
        cmd += ["--max-requests", str(max_requests)]
    logger.info("starting %s", " ".join(cmd[1:]))
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _worker_pid(master: int, deadline_s: float = 60.0) -> int:
    """The pid of the (single) worker forked by gunicorn's master."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{master}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def _memory(pid: int) -> dict[str, float]:
    """``VmHWM`` and ``VmRSS`` of ``pid`` in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)
    return values


def _post(port: int, token: str, project: int, filename: str, data: bytes) -> tuple[int, dict[str, Any]]:
    """Multipart ``POST /api/uploads/`` with one file; ``(status, JSON body)``."""
    boundary = secrets.token_hex(16)
    body = b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="project"\r\n\r\n{project}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(), data, f"\r\n--{boundary}--\r\n".encode(),
    ])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", "/api/uploads/", body=body, headers={
            "Authorization": f"Token {token}", "Content-Type": f"multipart/form-data; boundary={boundary}",
            "X-Forwarded-Proto": "https",  # DEBUG=0 settings trust it: no redirect to https
        })
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, {"detail": raw[:300].decode("utf-8", "replace")}


def _wait_until_serving(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/", headers={"X-Forwarded-Proto": "https"})
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 120 s")


def _upload(port: int, setup: dict[str, Any], master: int, name: str, filename: str, data: bytes) -> dict[str, Any]:
    started = time.perf_counter()
    status, body = _post(port, setup["token"], setup["project"], filename, data)
    wall_ms = round((time.perf_counter() - started) * 1000, 1)
    for _ in range(50):  # with --max-requests the worker may be replaced right after answering
        pid = _worker_pid(master)
        try:
            memory = _memory(pid)
            break
        except FileNotFoundError:
            time.sleep(0.1)
    else:
        raise RuntimeError("the gunicorn worker vanished")
    row = {"case": name, "file": filename, "bytes": len(data), "status": status, "code": body.get("code", ""),
           "error_file": body.get("file", ""), "wall_ms": wall_ms, "worker_pid": pid, **memory}
    logger.info("%-28s %9d B -> %d %-26s %7.1f ms  VmHWM %7.1f MiB  VmRSS %7.1f MiB", name, len(data), status,
                row["code"], wall_ms, row.get("VmHWM", -1), row.get("VmRSS", -1))
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    from backend_factories import make_dicom
    from malformed_corpus import CASES

    if not (_reachable(args.database_url, 5432) and _fresh_postgres(args.database_url)):
        raise RuntimeError(f"PostgreSQL is not usable at {args.database_url}")
    queue = f"bench-malformed-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="pleura-bench-malformed-") as tmp:
        env = _environment(args, Path(tmp), queue)
        _manage(env, "migrate", "--noinput")
        setup = json.loads(_manage(env, "shell", "-c", SETUP_SCRIPT).strip().splitlines()[-1])
        port, log = _free_port(), Path(tmp) / "gunicorn.log"
        proc = _start_gunicorn(env, port, args.max_requests, log)
        try:
            _wait_until_serving(port, proc, log)
            master = proc.pid
            first_pid = _worker_pid(master)
            booted = _memory(first_pid)
            warm = _upload(port, setup, master, "control_valid_dicom", "control.dcm", make_dicom(rows=64, columns=64))
            rows = []
            for case in CASES:
                row = _upload(port, setup, master, case.name, case.filename, case.build())
                row.update(expected_status=case.status, expected_code=case.code, declares=case.declares,
                           ok=(row["status"], row["code"], row["error_file"]) == (case.status, case.code, case.error_file))
                rows.append(row)
            last = _upload(port, setup, master, "control_valid_dicom_after", "control-after.dcm",
                           make_dicom(rows=64, columns=64, sop_uid="1.2.826.0.1.3680043.8.498.999", z=1.0))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            _drop_queue(args.redis_url, queue)
    peak = max(r.get("VmHWM", 0.0) for r in [warm, *rows, last])
    workers = len({r["worker_pid"] for r in [warm, *rows, last]} | {first_pid})
    return {
        "benchmark": "malformed", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "server": f"gunicorn config.wsgi --chdir backend --workers 1 --worker-class sync"
                  + (f" --max-requests {args.max_requests}" if args.max_requests else ""),
        "database": "postgresql", "debug": False, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "bound_mib": args.bound_mib,
        "worker_after_boot": booted, "control_first": warm, "control_last": last,
        "peak_rss_mib": peak, "within_bound": peak < args.bound_mib, "workers_seen": workers,
        "worker_restarted": workers > 1 and not args.max_requests,
        "cases_ok": sum(r["ok"] for r in rows), "cases": len(rows),
        "failed_cases": [r["case"] for r in rows if not r["ok"]], "results": rows,
    }


def _drop_queue(redis_url: str, queue: str) -> None:
    """Delete the queue the two valid uploads' tasks went to (nothing consumes it)."""
    import redis

    try:
        redis.Redis.from_url(redis_url).delete(queue)
    except redis.RedisError as exc:
        logger.warning("could not delete Redis queue %s: %s", queue, exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "malformed.json")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/pleura_bench_malformed",
                        help="PostgreSQL database, dropped and created afresh")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--bound-mib", type=float, default=1024.0, help="peak RSS the worker must stay under")
    parser.add_argument("--max-requests", type=int, default=0, help="gunicorn --max-requests (0: never recycle)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    ok = report["within_bound"] and not report["failed_cases"] and not report["worker_restarted"]
    ok = ok and report["control_first"]["status"] == 201 and report["control_last"]["status"] == 201
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
