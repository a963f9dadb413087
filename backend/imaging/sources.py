"""Input files for ingest: upload names + bytes, from uploads, paths and .zip archives.

Archive members are checked before extraction: no absolute or ``..`` names, no nested archives,
bounded member count, bounded total size and compression ratio (per member and for the whole
archive); reads are bounded too (headers can lie) and charged to the request's ``DecodeBudget``.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from .errors import ArchiveBombError, FileTooLargeError, NotDicomError, UnsafeArchiveError
from .limits import DecodeBudget, check_ratio

logger = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
SKIPPED_NAMES = frozenset({"DICOMDIR", ".DS_Store", "Thumbs.db"})
ARCHIVE_SUFFIXES = (".zip",)


@dataclass(frozen=True)
class SourceFile:
    """One input file: ``name`` is the upload name used in messages, ``data`` its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Limits:
    """Size limits for uploads and archives (bytes)."""

    max_file_bytes: int
    max_archive_total_bytes: int
    max_archive_ratio: int
    max_archive_members: int

    @classmethod
    def from_settings(cls) -> Limits:
        """The limits configured in Django settings."""
        return cls(
            max_file_bytes=settings.PLEURA_MAX_UPLOAD_BYTES,
            max_archive_total_bytes=settings.PLEURA_ZIP_MAX_TOTAL_BYTES,
            max_archive_ratio=settings.PLEURA_ZIP_MAX_RATIO,
            max_archive_members=settings.PLEURA_ZIP_MAX_MEMBERS,
        )


def kind_of(source: SourceFile) -> str:
    """``zip``, ``nifti``, ``image`` or ``dicom`` from the name and magic bytes."""
    lower = source.name.lower()
    if lower.endswith(".zip") or source.data[:4] == ZIP_MAGIC:
        return "zip"
    if lower.endswith((".nii", ".nii.gz")):
        return "nifti"
    if lower.endswith((".png", ".jpg", ".jpeg")) or source.data[:8] == b"\x89PNG\r\n\x1a\n" or source.data[:3] == b"\xff\xd8\xff":
        return "image"
    return "dicom"


def check_size(name: str, size: int, limits: Limits) -> None:
    """Raise ``FileTooLargeError`` when a file exceeds the configured upload size."""
    if size > limits.max_file_bytes:
        raise FileTooLargeError(name, f"the file is {size} bytes, over the limit of {limits.max_file_bytes} bytes")


def expand(sources: Iterable[SourceFile], limits: Limits, budget: DecodeBudget | None = None) -> list[SourceFile]:
    """Check sizes and replace each .zip by its members (one level; nested archives rejected).

    Inflated member bytes are charged to ``budget`` (a fresh one from settings when omitted).
    """
    budget = budget if budget is not None else DecodeBudget.from_settings()
    out: list[SourceFile] = []
    for source in sources:
        check_size(source.name, len(source.data), limits)
        if kind_of(source) == "zip":
            out.extend(read_zip(source, limits, budget))
        else:
            out.append(source)
    return out


def _safe_member_name(archive: str, member: str) -> str:
    normalized = member.replace("\\", "/")
    parts = PurePosixPath(normalized).parts
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":") or ".." in parts:
        raise UnsafeArchiveError(
            f"{archive}/{member}", "archive member name points outside the archive (absolute path or '..')"
        )
    return normalized


def read_zip(source: SourceFile, limits: Limits, budget: DecodeBudget) -> list[SourceFile]:
    """Members of a zip archive as ``SourceFile`` (named ``archive.zip/member``), bounded."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(source.data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise NotDicomError(source.name, "not a readable .zip archive") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_archive_members:
            raise ArchiveBombError(source.name, f"the archive has more than {limits.max_archive_members} members")
        members = [(info, _safe_member_name(source.name, info.filename)) for info in infos]
        _check_declared_sizes(source, [info for info, _ in members], limits)
        out = []
        total = 0
        for info, member in members:
            if info.is_dir() or _skipped(member):
                continue
            name = f"{source.name}/{member}"
            if member.lower().endswith(ARCHIVE_SUFFIXES):
                raise NotDicomError(name, "nested archives are not supported; put the files in one .zip")
            data = _read_member(archive, info, name, limits, total, budget)
            total += len(data)
            member_source = SourceFile(name, data)
            if kind_of(member_source) == "zip":
                raise NotDicomError(member_source.name, "nested archives are not supported; put the files in one .zip")
            out.append(member_source)
    return out


def _skipped(member: str) -> bool:
    path = PurePosixPath(member)
    return path.name in SKIPPED_NAMES or path.name.startswith(".") or "__MACOSX" in path.parts


def _check_declared_sizes(source: SourceFile, infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Totals and ratios from the central directory, before any member is inflated.

    Compressed sizes are capped at the archive's own size, so a directory that overstates them
    cannot hide a high ratio.
    """
    total = sum(info.file_size for info in infos)
    if total > limits.max_archive_total_bytes:
        raise ArchiveBombError(
            source.name, f"the archive expands to {total} bytes, over the limit of {limits.max_archive_total_bytes} "
            "(PLEURA_ZIP_MAX_TOTAL_BYTES)"
        )
    archive_size = len(source.data)
    for info in infos:
        if info.flag_bits & 0x1:
            raise NotDicomError(f"{source.name}/{info.filename}", "encrypted archive members are not supported")
        check_size(f"{source.name}/{info.filename}", info.file_size, limits)
        check_ratio(f"{source.name}/{info.filename}", info.file_size, min(info.compress_size, archive_size),
                    limits.max_archive_ratio)
    compressed = min(sum(info.compress_size for info in infos), archive_size)
    check_ratio(source.name, total, compressed, limits.max_archive_ratio)


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limits: Limits, total: int, budget: DecodeBudget
) -> bytes:
    """Read a member, stopping as soon as it exceeds its declared size or the limits."""
    room = min(info.file_size, limits.max_file_bytes, limits.max_archive_total_bytes - total)
    out = io.BytesIO()
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(1024 * 1024):
                budget.charge_inflated(name, len(chunk))
                out.write(chunk)
                if out.tell() > room:
                    raise ArchiveBombError(name, "the member expands beyond its declared size or the limits")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise NotDicomError(name, f"the archive member cannot be read ({type(exc).__name__})") from exc
    return out.getvalue()


def iter_paths(path: Path) -> Iterator[Path]:
    """Files under ``path`` (itself if a file), sorted, hidden files skipped."""
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        if child.is_file() and not child.name.startswith(".") and child.name not in SKIPPED_NAMES:
            yield child


def read_path(path: Path, display_name: str, limits: Limits) -> SourceFile:
    """Read one file from disk after checking its size (never reads an oversized file)."""
    check_size(display_name, path.stat().st_size, limits)
    return SourceFile(display_name, path.read_bytes())
