"""Log lines without PHI and without injection: the one helper for user-supplied text in logs.

Uploaded file and archive member names often carry patient names (``DOE_JOHN_CT.zip``), so log
lines refer to them by :func:`file_ref`, a keyed hash that identifies the same name again
without revealing it. Any other user-supplied text that reaches a log line goes through
:func:`escape`, which keeps it on one line (a newline in a zip member name cannot forge a line).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from django.conf import settings

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_LOGGED_CHARS = 200


def escape(text: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` made safe for one log line: control characters as ``\\n``, ``\\x1b``…; at most ``limit`` characters."""
    line = CONTROL_CHARACTERS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return line if len(line) <= limit else line[:limit] + "…"


def file_ref(name: str) -> str:
    """Non-identifying reference to an uploaded file name: ``file-`` + 12 hex of HMAC-SHA256 (SECRET_KEY).

    The same name always gives the same reference on one deployment, so an operator told the
    name by its uploader can find the log lines (``python manage.py shell -c "from
    config.logsafe import file_ref; print(file_ref('…'))"``); the name cannot be read back.
    """
    digest = hmac.new(settings.SECRET_KEY.encode(), f"file-name:{name}".encode(), hashlib.sha256)
    return "file-" + digest.hexdigest()[:12]
