"""Translate domain errors into 4xx JSON responses for the REST API."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler

from imaging.errors import IngestError

from .logsafe import file_ref

logger = logging.getLogger(__name__)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: ``IngestError`` → ``{"detail", "file", "code"}`` with its status.

    The log line names the file by ``file_ref`` only: upload names often carry patient names.

    Everything else goes to DRF's default handler (which returns ``None`` for unexpected errors,
    so they surface as 500s and are logged by Django).
    """
    if isinstance(exc, IngestError):
        user = getattr(getattr(context.get("request"), "user", None), "pk", None)
        logger.info("upload rejected (%s, HTTP %d): %s from user %s", exc.code, exc.status_code, file_ref(exc.file_name), user)
        return Response(exc.as_dict(), status=exc.status_code)
    return exception_handler(exc, context)
