"""Signals annotation sends downstream (quality, retraining).

``revision_created`` is sent inside the transaction that stores a :class:`MaskRevision`, with
``revision`` and ``labels`` (the decoded ``(H, W)`` or ``(D, H, W)`` uint8 array, so receivers need
not read it back from storage).
"""

from __future__ import annotations

from django.dispatch import Signal

revision_created = Signal()

#: Sent inside the transaction in which a revision becomes curated (approved by a reviewer, by
#: adjudication or by the project's review policy), with ``revision``. Approval changes a stored
#: revision's status, so ``revision_created`` does not announce it.
revision_curated = Signal()
