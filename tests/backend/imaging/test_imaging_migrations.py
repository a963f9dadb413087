"""Models and migrations of accounts and imaging agree (no forgotten makemigrations)."""

from __future__ import annotations

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_missing_migrations() -> None:
    call_command("makemigrations", "accounts", "imaging", "--check", "--dry-run", verbosity=0)
