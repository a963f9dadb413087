"""`make bench`: run every benchmark and write one JSON file per benchmark under bench/results/.

Benchmarks measure speed and memory; tests never assert on wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench")

# name -> command (run from the repository root with this interpreter)
BENCHMARKS: dict[str, list[str]] = {
    "ml_cxr": ["-m", "ml", "bench", "--model", "cxr", "--out", "{out}/ml_cxr.json"],
    "ml_ct": ["-m", "ml", "bench", "--model", "ct", "--out", "{out}/ml_ct.json"],
    "proposals": ["bench/bench_proposals.py", "--out", "{out}/proposals.json"],
    "viewer": ["bench/bench_viewer.py", "--out", "{out}/viewer.json"],
    "malformed": ["bench/bench_malformed.py", "--out", "{out}/malformed.json"],
    "export": ["bench/bench_export.py", "--out", "{out}/export.json"],
    "load": ["bench/bench_load.py", "--out", "{out}/load.json"],
    "dashboard": ["bench/bench_dashboard.py", "--out", "{out}/dashboard.json"],
}


def _available(name: str, args: list[str]) -> bool:
    if args[0].endswith(".py"):
        return (REPO / args[0]).is_file()
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--only", nargs="*", help="names of the benchmarks to run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    status: dict[str, dict[str, object]] = {}
    for name, template in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        if not _available(name, template):
            status[name] = {"status": "missing"}
            continue
        cmd = [sys.executable, *(part.format(out=args.out) for part in template)]
        logger.info("== %s: %s", name, " ".join(cmd))
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, check=False)
        status[name] = {"status": "ok" if proc.returncode == 0 else f"failed ({proc.returncode})",
                        "wall_s": round(time.perf_counter() - started, 2)}
    summary = {"machine": {"platform": platform.platform(), "python": platform.python_version()},
               "benchmarks": status}
    (args.out / "index.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if all(s["status"] in ("ok", "missing") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
