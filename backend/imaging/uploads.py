"""Upload handler keeping uploaded files in memory, bounded per file and per request.

Raw uploads are never spooled to a temporary file: de-identification happens in memory before
anything is written. A request whose body is larger than ``PLEURA_UPLOAD_MAX_REQUEST_BYTES`` is
refused from its Content-Length before any of it is read (413 ``request_too_large``). Files over
``PLEURA_MAX_UPLOAD_BYTES`` are dropped while streaming and their names recorded on the request
(``request.pleura_oversized``) so the API can answer 413 naming them.
"""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from .errors import RequestTooLargeError


class LimitedMemoryUploadHandler(FileUploadHandler):
    """Collect each uploaded file in memory; drop (and record) files over the size limit."""

    def handle_raw_input(
        self, input_data: Any, META: dict[str, Any], content_length: int, boundary: bytes, encoding: str | None = None
    ) -> None:
        """Refuse the whole request before reading it when its body is over the request limit.

        Raises:
            RequestTooLargeError: The API answers 413 with the limit's name.
        """
        limit = settings.PLEURA_UPLOAD_MAX_REQUEST_BYTES
        if content_length > limit:
            raise RequestTooLargeError(
                "(upload)", f"the request is {content_length} bytes, over the limit of {limit} bytes per upload "
                "(PLEURA_UPLOAD_MAX_REQUEST_BYTES); split the upload into several requests",
            )
        return None

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.buffer: io.BytesIO | None = io.BytesIO()
        self.too_large = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self.too_large:
            return None
        if start + len(raw_data) > settings.PLEURA_MAX_UPLOAD_BYTES:
            self.too_large = True
            self.buffer = None
            oversized = getattr(self.request, "pleura_oversized", [])
            oversized.append(self.file_name)
            self.request.pleura_oversized = oversized
            return None
        self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> InMemoryUploadedFile | None:
        if self.too_large or self.buffer is None:
            return None
        self.buffer.seek(0)
        return InMemoryUploadedFile(
            file=self.buffer, field_name=self.field_name, name=self.file_name, content_type=self.content_type,
            size=file_size, charset=self.charset, content_type_extra=self.content_type_extra,
        )
