"""Signals annotation sends downstream (quality).

``revision_created`` is sent inside the transaction that stores a :class:`MaskRevision`, with
``revision`` and ``labels`` (the decoded ``(H, W)`` or ``(D, H, W)`` uint8 array, so receivers need
not read it back from storage).
"""

from __future__ import annotations

from django.dispatch import Signal

revision_created = Signal()
