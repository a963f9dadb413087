"""Receivers of quality: automatic QC of every new revision."""

from __future__ import annotations

from typing import Any

from . import services


def qc_new_revision(sender: Any, revision: Any, labels: Any, **kwargs: Any) -> None:
    """``annotation.signals.revision_created`` → flags and summary for the revision."""
    services.run_qc(revision, labels)
