"""The production path as README.md documents it: web, worker and beat started with the README's
own command lines from the repository root, in a virtual environment set up as ``make venv`` does
(project installed editable), on the test PostgreSQL database and Redis; an upload over HTTP ends
in a finished proposal, and static files are served without a manual step.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from rest_framework.authtoken.models import Token

from accounts.models import Membership, Role, User
from imaging.models import Project
from modeling import services
from modeling.models import JobStatus, ProposalJob
from proposal_helpers import write_tiny_cxr_model, xray_png

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]
README_COMMANDS = {
    "web": r"`(gunicorn config\.wsgi)`",
    "worker": r"`(celery -A config worker -Q cpu)`",
    "beat": r"`(celery -A config beat)`",
}
CONSOLE_SCRIPT = "#!{python}\nimport sys\nfrom {module} import {function}\nif __name__ == '__main__':\n    sys.exit({function}())\n"


def documented_commands() -> dict[str, list[str]]:
    """The three process command lines, read from README.md's production table."""
    readme = (REPO / "README.md").read_text()
    found = {name: re.search(pattern, readme) for name, pattern in README_COMMANDS.items()}
    missing = [name for name, match in found.items() if match is None]
    assert not missing, f"README.md no longer documents {missing}"
    return {name: match.group(1).split() for name, match in found.items()}


@pytest.fixture(scope="session")
def installed_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv as ``make venv`` leaves it: the pinned dependencies (shared with this interpreter's
    environment through a .pth file, not reinstalled), then ``pip install --no-deps -e .``."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "pleura-shared-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
               "--no-build-isolation", "-e", str(REPO)]
    proc = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, module, function in (("gunicorn", "gunicorn.app.wsgiapp", "run"), ("celery", "celery.__main__", "main")):
        script = venv / "bin" / name  # what pip writes for the packages' console scripts
        script.write_text(CONSOLE_SCRIPT.format(python=python, module=module, function=function))
        script.chmod(0o755)
    return venv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def production_env(installed_env: Path, tmp_path: Path) -> dict[str, str]:
    if connection.vendor != "postgresql":
        pytest.skip("the processes share the test database: they need PostgreSQL (DATABASE_URL)")
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {redis_url}: {exc}")
    db = connection.settings_dict
    queue = f"pleura-test-{uuid.uuid4().hex[:12]}"  # its own queue: parallel runs never share jobs
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELERY", "PLEURA_", "DJANGO_", "GUNICORN")) and k not in {"DEBUG", "PYTHONPATH", "SECRET_KEY"}}
    env.update(
        PATH=f"{installed_env / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        REDIS_URL=redis_url, SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="127.0.0.1",
        PLEURA_DATA_DIR=str(tmp_path / "data"), PLEURA_DEFAULT_QUEUE=queue,
        PLEURA_TASK_ROUTES=json.dumps({"modeling.tasks.*": {"queue": queue}}),
        GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{free_port()} --workers 2", OMP_NUM_THREADS="2",
    )
    (tmp_path / "data").mkdir()
    return env


@pytest.fixture
def start(production_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str, list[str]], tuple[subprocess.Popen, Path]]]:
    """Start a process from the repository root (log in tmp_path); all are stopped at the end."""
    started: list[tuple[subprocess.Popen, Any]] = []

    def _start(name: str, command: list[str]) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(command, cwd=REPO, env=production_env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        started.append((proc, handle))
        return proc, log

    yield _start
    for proc, handle in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        handle.close()
    connection.close()


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{tails}")


def http(url: str, token: str | None = None, body: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if token:
        request.add_header("Authorization", f"Token {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    for key, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{filename}"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_documented_processes_turn_an_upload_into_a_proposal(production_env: dict[str, str], start: Callable,
                                                            tmp_path: Path) -> None:
    from ml.registry import ModelCard

    (version,) = services.sync_registry([ModelCard.from_file(write_tiny_cxr_model(tmp_path / "weights"))])
    services.promote(version)
    project = Project.objects.create(name="prod-path")
    user = User.objects.create_user("uploader")
    Membership.objects.create(user=user, project=project, role=Role.ML_ENGINEER)
    token = Token.objects.create(user=user).key

    commands = documented_commands()
    worker_command = [production_env["PLEURA_DEFAULT_QUEUE"] if part == "cpu" else part for part in commands["worker"]]
    processes = dict(web=start("web", commands["web"]), worker=start("worker", worker_command),
                     beat=start("beat", commands["beat"]))
    logs = [log for _, log in processes.values()]
    base = "http://" + production_env["GUNICORN_CMD_ARGS"].split()[1]

    wait_for(lambda: http(f"{base}/api/me/", token)[0] == 200, 180, "gunicorn to answer", logs)

    body, content_type = multipart({"project": str(project.pk)}, {"files": ("chest.png", xray_png())})
    status, answer = http(f"{base}/api/uploads/", token, body, content_type)
    assert status == 201, answer[-2000:]
    jobs = ProposalJob.objects.filter(project=project)
    wait_for(lambda: jobs.filter(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).exists(), 300,
             "the proposal", logs)
    job = jobs.get()
    assert job.status == JobStatus.SUCCEEDED, job.error
    status, listed = http(f"{base}/api/proposals/?project={project.pk}", token)
    assert status == 200 and json.loads(listed)["results"][0]["status"] == "succeeded"

    # static files (collected when gunicorn starts) are served by whitenoise
    assert http(f"{base}/static/admin/css/base.css")[0] == 200
    manifest = json.loads((REPO / "frontend" / "dist" / ".vite" / "manifest.json").read_text())
    entry = next(item["file"] for item in manifest.values() if item.get("isEntry"))
    assert http(f"{base}/static/viewer/{entry}")[0] == 200
    assert b"celery beat" in processes["beat"][1].read_bytes()
    for name, (proc, log) in processes.items():
        assert proc.poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
        assert b"Traceback" not in log.read_bytes(), log.read_text()[-3000:]
