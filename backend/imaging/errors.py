"""Ingest errors: each names the uploaded file (by its upload name) and the reason.

Messages never contain values read from the file (patient names, IDs, dates): only the upload
name, what was expected and what was found structurally.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base class: a rejected upload. ``status_code`` is the HTTP status the API answers with."""

    status_code: int = 400
    code: str = "invalid_upload"

    def __init__(self, file_name: str, reason: str) -> None:
        super().__init__(f"{file_name}: {reason}")
        self.file_name = file_name
        self.reason = reason

    def as_dict(self) -> dict[str, str]:
        """The JSON body the API returns."""
        return {"detail": f"{self.file_name}: {self.reason}", "file": self.file_name, "code": self.code}


class EmptyFileError(IngestError):
    code = "empty_file"


class NotDicomError(IngestError):
    status_code = 415
    code = "not_dicom"


class TruncatedDicomError(IngestError):
    code = "truncated_dicom"


class MalformedDicomError(IngestError):
    code = "invalid_dicom"


class NoPixelDataError(IngestError):
    code = "no_pixel_data"


class UnsupportedTransferSyntaxError(IngestError):
    status_code = 415
    code = "unsupported_transfer_syntax"


class UnsupportedModalityError(IngestError):
    status_code = 415
    code = "unsupported_modality"


class ZeroSizeImageError(IngestError):
    code = "zero_size_image"


class InvalidFileError(IngestError):
    code = "invalid_file"


class InvalidImageError(IngestError):
    code = "invalid_image"


class UnsafeArchiveError(IngestError):
    code = "unsafe_archive_path"


class ArchiveBombError(IngestError):
    """An archive or compressed stream inflates beyond its declared size, a ratio or a size limit."""

    status_code = 413
    code = "archive_too_large"


class FileTooLargeError(IngestError):
    status_code = 413
    code = "file_too_large"


class InconsistentSeriesError(IngestError):
    code = "inconsistent_series"


class MixedPatientsError(IngestError):
    code = "mixed_patients"


class NoFilesError(IngestError):
    code = "no_files"


class InconsistentPixelDataError(IngestError):
    """The declared image size cannot match the pixel data the file holds."""

    code = "inconsistent_pixel_data"


class ImageTooLargeError(IngestError):
    """One image (frame, slice) declares more pixels than ``PLEURA_MAX_IMAGE_PIXELS``."""

    status_code = 413
    code = "image_too_large"


class DicomTooComplexError(IngestError):
    """A DICOM data set with more elements or sequence items than any image header needs."""

    status_code = 413
    code = "dicom_too_complex"


class RequestTooLargeError(IngestError):
    """The upload request as a whole is larger than ``PLEURA_UPLOAD_MAX_REQUEST_BYTES``."""

    status_code = 413
    code = "request_too_large"


class UploadBudgetError(IngestError):
    """The request as a whole inflates or decodes more than its budget."""

    status_code = 413
    code = "upload_budget_exceeded"
