"""Signals modeling sends to the apps downstream of it (annotation, quality).

``proposal_ready`` is sent inside the transaction that completes a :class:`ProposalJob`, with
``job`` and ``proposal`` (:class:`modeling.inference.Proposal`). A receiver stores the result and
returns a dict; the job records the ``revision_id`` a receiver returns. An exception in a
receiver rolls the completion back and the job is retried or failed like any other error.
"""

from __future__ import annotations

from django.dispatch import Signal

proposal_ready = Signal()
