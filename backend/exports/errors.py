"""Domain errors of exports and imports; the API turns them into 4xx JSON with their message."""

from __future__ import annotations


class ExportError(ValueError):
    """A request that cannot be exported as asked; ``status_code`` is the HTTP status to answer."""

    status_code = 400


class UnknownFormatError(ExportError):
    """The format is not one of :class:`exports.models.ExportFormat`."""


class SelectionError(ExportError):
    """The selection is malformed or names an unknown kind."""


class EmptySelectionError(ExportError):
    """The selection matches no case."""


class IncompatibleSelectionError(ExportError):
    """The selection cannot be written in the format (e.g. CT or mixed modalities for a 2D-only format)."""


class ExportPermissionError(ExportError):
    """The user may not export (or import into) the project."""

    status_code = 403


class ImportLabelsError(ExportError):
    """A label file to import is unreadable, references nothing in the project or has unmapped segments."""
