"""Signals other apps connect to (imaging never imports them).

``series_ingested`` is sent once per series that received new instances, after the ingest
transaction has committed. Keyword arguments: ``series`` (Series), ``created`` (bool: the series
is new), ``upload`` (Upload). Receivers should enqueue work (e.g. a proposal job), not do it.
Example (app ``modeling``)::

    from django.dispatch import receiver
    from imaging.signals import series_ingested

    @receiver(series_ingested)
    def queue_proposal(sender, series, created, upload, **kwargs):
        run_proposal.delay(series.pk)
"""

from __future__ import annotations

from django.dispatch import Signal

series_ingested = Signal()
