"""Runs the front-end unit tests (`npm test` in frontend/: mask codec, autosave) inside pytest,
so that `make test` and CI cover them. Skips with the reason when Node or the packages are absent."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from viewer_support import REPO_ROOT

FRONTEND = REPO_ROOT / "frontend"


def test_npm_unit_tests_pass() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not found on PATH")
    if not (FRONTEND / "node_modules" / "typescript").is_dir():
        pytest.skip("frontend/node_modules is missing: run `make frontend` (npm ci in frontend/)")
    proc = subprocess.run([npm, "test"], cwd=FRONTEND, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", output, re.MULTILINE)
    assert passed and failed, output[-2000:]
    assert int(failed.group(1)) == 0 and int(passed.group(1)) >= 19, output[-2000:]
