"""The first production admin: ``create_admin`` needs a strong secret and never resets; ``setup_demo``
(published password) runs only on the development configuration."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditEntry, User

pytestmark = pytest.mark.django_db
GOOD = "vivid-otter-quarry-91-lantern"


@pytest.mark.parametrize(
    "password,message",
    [(None, "set PLEURA_ADMIN_PASSWORD"), ("pleura-admin", "published"), ("short1", "too short"),
     ("password12345", "too common"), ("alice-admin-1", "too similar")],
)
def test_create_admin_refuses_missing_default_and_weak_passwords(password: str | None, message: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    if password is None:
        monkeypatch.delenv("PLEURA_ADMIN_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("PLEURA_ADMIN_PASSWORD", password)
    with pytest.raises(CommandError, match=message):
        call_command("create_admin", "--username", "alice-admin")
    assert not User.objects.exists()


def test_create_admin_creates_once_and_never_resets(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("PLEURA_ADMIN_PASSWORD", GOOD)
    call_command("create_admin", "--username", "alice", "--email", "alice@example.org")
    user = User.objects.get(username="alice")
    assert user.is_superuser and user.is_staff and user.check_password(GOOD)
    assert GOOD not in capsys.readouterr().out
    assert AuditEntry.objects.get(action="user.create").target_id == str(user.pk)
    monkeypatch.setenv("PLEURA_ADMIN_PASSWORD", "another-strong-passphrase-77")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_admin", "--username", "alice")
    user.refresh_from_db()
    assert user.check_password(GOOD)


def test_setup_demo_refuses_a_production_configuration(settings: Any) -> None:
    settings.SECRET_KEY = "a-real-production-key-" + "x9Y8z7W6v5U4t3S2r1Q0p" * 3
    with pytest.raises(CommandError, match="embedded demo"):
        call_command("setup_demo")
    assert not User.objects.exists()
