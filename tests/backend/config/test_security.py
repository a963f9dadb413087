"""Fail-closed settings, password validators, login throttling, security headers, ignored secrets."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ImproperlyConfigured, ValidationError

from accounts.models import User
from config.security import DEVELOPMENT_SECRET_KEY, estimated_entropy_bits, require_strong_secret_key

REPO = Path(__file__).resolve().parents[3]
STRONG_KEY = secrets.token_urlsafe(50)

# Production mode in a fresh process: a request to the login page over the TLS proxy.
PRODUCTION_PROBE = """
import django
django.setup()
from django.conf import settings
from django.test import Client
response = Client().get("/login/", headers={"x-forwarded-proto": "https"})
print("DEBUG", settings.DEBUG)
print("STATUS", response.status_code)
print("HSTS", response.get("Strict-Transport-Security"))
print("CSP", response.get("Content-Security-Policy"))
print("COOKIE_SECURE", settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE)
"""


def production_env(**overrides: str) -> dict[str, str]:
    """The environment a production process gets: nothing of the test suite's DEBUG=1."""
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}}
    env.update(PYTHONPATH=str(REPO / "backend"), DJANGO_SETTINGS_MODULE="config.settings", ALLOWED_HOSTS="testserver",
               **overrides)
    return env


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "key,message",
    [
        (None, "SECRET_KEY must be set when DEBUG is off"),
        (DEVELOPMENT_SECRET_KEY, "published development key"),
        ("django-insecure-" + "x1" * 30, "published development key"),
        ("short-but-random-" + secrets.token_hex(8), "at least 50 are needed"),
        ("ab" * 40, "too predictable"),
    ],
    ids=["unset", "development", "django-insecure", "short", "repetitive"],
)
def test_production_refuses_to_start_with_a_bad_secret_key(key: str | None, message: str) -> None:
    env = production_env(**({"SECRET_KEY": key} if key is not None else {}))
    proc = run_python("import django; django.setup()", env)
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr and message in proc.stderr, proc.stderr[-2000:]
    assert "secrets.token_urlsafe(50)" in proc.stderr  # the message says how to make a good one


def test_debug_is_off_unless_asked_for_and_production_sends_hsts_and_csp() -> None:
    proc = run_python(PRODUCTION_PROBE, production_env(SECRET_KEY=STRONG_KEY))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert out["DEBUG"] == "False" and out["STATUS"] == "200"
    assert out["HSTS"] == "max-age=31536000"
    policy = dict(d.strip().split(" ", 1) for d in out["CSP"].split(";"))
    assert policy["script-src"] == "'self' 'wasm-unsafe-eval'"  # no inline script (pages add their nonce)
    assert policy["worker-src"] == "'self' blob:" and policy["frame-ancestors"] == "'none'"
    assert out["COOKIE_SECURE"] == "True True"


def test_secret_key_check_in_process() -> None:
    assert require_strong_secret_key(STRONG_KEY) == STRONG_KEY
    assert estimated_entropy_bits("a" * 64) == 0
    assert estimated_entropy_bits(STRONG_KEY) > 250
    with pytest.raises(ImproperlyConfigured, match="too predictable"):
        require_strong_secret_key("abc" * 20)  # 60 characters, 3 symbols: about 95 bits


@pytest.mark.parametrize(
    "password,problem",
    [("k7#Qx", "too short"), ("password1234", "too common"), ("483920175539", "entirely numeric"),
     ("alice-smith-2026", "too similar")],
)
def test_password_validators(password: str, problem: str) -> None:
    user = User(username="alice-smith-2026", email="alice@example.org")
    with pytest.raises(ValidationError, match=problem):
        validate_password(password, user)
    validate_password("correct horse battery staple", user)


@pytest.fixture
def throttled(settings: Any, db: Any) -> User:
    """Throttling on, as in production (the test settings switch it off for the test client)."""
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    return User.objects.create_user("victim", password="the right password 42", is_staff=True)


LOGINS = {
    "/login/": lambda password: {"username": "victim", "password": password},
    "/admin/login/": lambda password: {"username": "victim", "password": password},
    "/api/auth/token/": lambda password: {"username": "victim", "password": password},
}


def good_login(url: str, response: Any) -> bool:
    return response.status_code == 200 if url == "/api/auth/token/" else response.status_code == 302


@pytest.mark.parametrize("url", list(LOGINS))
def test_login_is_throttled_after_repeated_failures(url: str, throttled: User, client: Any) -> None:
    assert good_login(url, client.post(url, LOGINS[url]("the right password 42")))
    client.logout()
    statuses = [client.post(url, LOGINS[url]("guess")).status_code for _ in range(3)]
    assert statuses[:2] == [200, 200] or statuses[:2] == [400, 400], statuses  # the form again / 400 from the API
    assert statuses[2] == 429  # the third failure reaches the limit
    locked = client.post(url, LOGINS[url]("the right password 42"))
    assert locked.status_code == 429
    assert not locked.has_header("Set-Cookie") or "sessionid" not in locked.cookies


def test_successful_logins_never_lock(throttled: User, client: Any) -> None:
    for _ in range(10):
        assert client.post("/login/", LOGINS["/login/"]("the right password 42")).status_code == 302
        client.logout()


def test_api_docs_have_no_inline_script(client: Any, db: Any) -> None:
    """Swagger UI under the policy: its set-up script is a separate file (drf-spectacular's split view)."""
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>" not in html and "?script=" in html
    script_url = html.split('src="')[-1].split('"')[0].replace("&amp;", "&")
    script = client.get(script_url)
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")


def test_env_files_are_ignored_by_git_and_the_image() -> None:
    for path in (".env", "deploy/.env.production"):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert proc.returncode == 0, f"{path} is not ignored by git"
    patterns = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert ".env" in patterns and "**/.env*" in patterns
