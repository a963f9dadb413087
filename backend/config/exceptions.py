"""Translate domain errors into 4xx JSON responses for the REST API."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler

from imaging.errors import IngestError

logger = logging.getLogger(__name__)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: ``IngestError`` → ``{"detail", "file", "code"}`` with its status.

    Everything else goes to DRF's default handler (which returns ``None`` for unexpected errors,
    so they surface as 500s and are logged by Django).
    """
    if isinstance(exc, IngestError):
        logger.info("upload rejected: %s (%s): %s", exc.file_name, exc.code, exc.reason)
        return Response(exc.as_dict(), status=exc.status_code)
    return exception_handler(exc, context)
