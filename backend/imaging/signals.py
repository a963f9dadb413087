"""Signals other apps connect to (imaging never imports them).

``series_stored`` is sent *inside* the ingest transaction, once per series that received new
instances. Receivers record the follow-up work as rows (an outbox: e.g. modeling's pending
proposal jobs), so that it commits with the upload or not at all, and send it to the broker with
``transaction.on_commit``. An exception in a receiver rolls the whole upload back.

``series_ingested`` is sent once per such series after the ingest transaction has committed.
Receivers may return a dict of counts to show the uploader, e.g. ``{"proposals": {"pending": 1}}``
(summed over the series into the upload response). Their errors are logged, never raised.

Keyword arguments of both: ``series`` (Series), ``created`` (bool: the series is new), ``upload``
(Upload). Example (app ``modeling``)::

    from imaging.signals import series_stored

    def queue_proposal(sender, series, created, upload, **kwargs):
        job = ProposalJob.objects.create(series=series, status="pending")
        transaction.on_commit(lambda: run_proposal.delay(job.pk))

    series_stored.connect(queue_proposal)

``series_deleting`` is sent inside the deletion transaction of a series (:func:`imaging.services.
delete_series`), before its rows are deleted, with ``series``. Receivers delete the rows of their
app that refer to it and would block the deletion, and return ``{"files": [storage names],
"removed": {model label: rows}}``: the files are deleted after the transaction commits, the counts
go into the audit record.
"""

from __future__ import annotations

from django.dispatch import Signal

series_stored = Signal()
series_ingested = Signal()
series_deleting = Signal()
