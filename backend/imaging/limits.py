"""Per-request bounds on what an upload may make the server inflate and decode.

Every reader checks the sizes a file *declares* (DICOM Rows/Columns/NumberOfFrames/BitsAllocated,
NIfTI dims, PNG/JPEG headers, zip directory entries) against these bounds before it allocates
anything for them, and charges what it then inflates or decodes to one ``DecodeBudget`` per
request. A 3 KB file can therefore not make a web worker allocate gigabytes.

This module imports nothing from Django except in ``DecodeBudget.from_settings``, so the readers
stay usable without a configured project.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from .errors import (
    ArchiveBombError,
    DicomTooComplexError,
    ImageTooLargeError,
    InconsistentPixelDataError,
    TruncatedDicomError,
    UploadBudgetError,
)

logger = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
DEFAULT_MAX_INFLATED_BYTES = 2 * GIB
DEFAULT_MAX_DECODED_BYTES = 2 * GIB
DEFAULT_MAX_RATIO = 200
RATIO_CHECK_MIN_BYTES = 1024 * 1024


@dataclass
class DecodeBudget:
    """What one request may inflate and decode; charged as files are read.

    Attributes:
        max_image_pixels: Pixels of one 2-D image (a DICOM frame, a PNG/JPEG, a NIfTI slice).
        max_inflated_bytes: Bytes inflated from ``.zip`` members and ``.nii.gz`` in one request.
        max_decoded_bytes: Bytes of decoded pixel arrays (all files of one request together).
        max_ratio: Compression ratio allowed for a ``.nii.gz`` stream (as for zip members).
        inflated_bytes: Inflated so far.
        decoded_bytes: Decoded so far.
    """

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_ratio: int = DEFAULT_MAX_RATIO
    inflated_bytes: int = 0
    decoded_bytes: int = 0

    @classmethod
    def from_settings(cls) -> DecodeBudget:
        """A fresh budget with the limits configured in Django settings (see docs/backend.md)."""
        from django.conf import settings

        return cls(
            max_image_pixels=settings.PLEURA_MAX_IMAGE_PIXELS,
            max_inflated_bytes=settings.PLEURA_UPLOAD_MAX_INFLATED_BYTES,
            max_decoded_bytes=settings.PLEURA_UPLOAD_MAX_DECODED_BYTES,
            max_ratio=settings.PLEURA_ZIP_MAX_RATIO,
        )

    def check_image(self, name: str, rows: int, columns: int, what: str = "image") -> None:
        """Refuse a 2-D ``rows`` × ``columns`` image over ``max_image_pixels``.

        Raises:
            ImageTooLargeError: Naming the declared size and the limit.
        """
        if rows * columns > self.max_image_pixels:
            raise ImageTooLargeError(
                name, f"the {what} declares {columns}x{rows} = {rows * columns} pixels, over the limit of "
                f"{self.max_image_pixels} pixels per image (PLEURA_MAX_IMAGE_PIXELS)",
            )

    def inflated_room(self) -> int:
        """Bytes that may still be inflated in this request."""
        return max(self.max_inflated_bytes - self.inflated_bytes, 0)

    def charge_inflated(self, name: str, count: int) -> None:
        """Count ``count`` inflated bytes; raise once the request's budget is exceeded.

        Raises:
            UploadBudgetError: Naming the file that went over and the limit.
        """
        self.inflated_bytes += count
        if self.inflated_bytes > self.max_inflated_bytes:
            raise UploadBudgetError(
                name, f"this upload inflates to more than {self.max_inflated_bytes} bytes in total "
                "(PLEURA_UPLOAD_MAX_INFLATED_BYTES); upload fewer or smaller archives per request",
            )

    def charge_decoded(self, name: str, count: int) -> None:
        """Reserve ``count`` bytes of decoded pixels *before* decoding them.

        Raises:
            UploadBudgetError: Naming the file that went over and the limit.
        """
        if self.decoded_bytes + count > self.max_decoded_bytes:
            raise UploadBudgetError(
                name, f"decoding this file needs {count} bytes of pixels; with the rest of the upload "
                f"({self.decoded_bytes} bytes) that is over the limit of {self.max_decoded_bytes} bytes "
                "per upload (PLEURA_UPLOAD_MAX_DECODED_BYTES); upload fewer images per request",
            )
        self.decoded_bytes += count


def check_ratio(name: str, inflated: int, compressed: int, max_ratio: int) -> None:
    """Refuse a compressed stream that inflates more than ``max_ratio`` times (from 1 MiB on).

    Raises:
        ArchiveBombError: Naming the stream and the ratio limit.
    """
    if inflated >= RATIO_CHECK_MIN_BYTES and inflated > max_ratio * max(compressed, 1):
        raise ArchiveBombError(
            name, f"{compressed} compressed bytes inflate to {inflated} bytes: compression ratio over "
            f"{max_ratio}:1 (PLEURA_ZIP_MAX_RATIO; possible decompression bomb)",
        )


# --- DICOM data set structure: parsing costs time and memory per element and sequence item ----

# Parsing costs ~10 µs and up to ~700 bytes per element or sequence item (pydicom objects), so a
# file of empty items or elements is a memory and CPU amplifier (800 KB of empty items -> 64 MiB,
# 8 MB of empty elements -> 11 s). Image headers of CR/DX/CT, enhanced multi-frame included
# (about 10 items per frame, nested in sequences: not top-level elements), stay far below these.
MAX_DICOM_ELEMENTS = 10_000  # top level only: an image header has a few hundred
MAX_DICOM_ITEMS = 100_000
ITEM_TAGS = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # (FFFE,E000) little and big endian


def check_dicom_items(name: str, data: bytes) -> None:
    """Refuse a file holding more sequence items (or fragments) than ``MAX_DICOM_ITEMS``, unparsed.

    Counts the item tag's bytes anywhere in the file: an upper bound on the items pydicom would
    build (4 random bytes match once in 4 GiB).

    Raises:
        DicomTooComplexError: Naming the count and the limit.
    """
    count = sum(data.count(tag) for tag in ITEM_TAGS)
    if count > MAX_DICOM_ITEMS:
        raise DicomTooComplexError(
            name, f"the file holds {count} sequence items, over the limit of {MAX_DICOM_ITEMS}: not an image header",
        )


class ElementCounter:
    """A pydicom ``stop_when`` callback that aborts parsing after ``MAX_DICOM_ELEMENTS`` elements."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    def __call__(self, tag: object, vr: str | None, length: int) -> bool:
        """Count one top-level element; never stops, raises once over the limit.

        Raises:
            DicomTooComplexError: Naming the limit.
        """
        self.count += 1
        if self.count > MAX_DICOM_ELEMENTS:
            raise DicomTooComplexError(
                self.name, f"the data set has more than {MAX_DICOM_ELEMENTS} elements: not an image header",
            )
        return False


# --- Declared sizes in image headers, read before anything is decoded --------------------------

@dataclass(frozen=True)
class PixelGeometry:
    """The pixel layout a DICOM header declares."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    subsampled_422: bool = False  # PhotometricInterpretation YBR_FULL_422: 2 bytes per 3 samples

    @property
    def frame_pixels(self) -> int:
        """Pixels of one frame (``rows`` × ``columns``)."""
        return self.rows * self.columns

    @property
    def encoded_bytes(self) -> int:
        """Bytes of uncompressed (native) pixel data, all frames (1-bit data packed; PS3.5 8.1.1)."""
        length = -(-self.frame_pixels * self.samples * self.frames * self.bits_allocated // 8)
        return length // 3 * 2 if self.subsampled_422 else length

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded array (pydicom unpacks 1-bit data to one byte per pixel)."""
        return self.frame_pixels * self.samples * self.frames * max(self.bits_allocated // 8, 1)

    def describe(self) -> str:
        """``Rows R × Columns C × N frame(s) × S sample(s) × B bits``."""
        return (f"Rows {self.rows} x Columns {self.columns} x {self.frames} frame(s) x {self.samples} "
                f"sample(s) x {self.bits_allocated} bits")


VALID_BITS_ALLOCATED = frozenset({1, 8, 16, 32, 64})
# A replicate run of the DICOM RLE scheme (PS3.5 G.3) turns 2 bytes into at most 128.
RLE_MAX_RATIO = 64
RLE_HEADER_BYTES = 64
# A baseline JPEG block costs at least 2 bits (a DC and an end-of-block Huffman code, 1 bit each),
# so one byte of entropy-coded data holds at most 4 blocks of 8x8 = 256 pixels of one component.
JPEG_BASELINE_MAX_PIXELS_PER_BYTE = 256
JPEG_BASELINE_MARKERS = frozenset({0xC0, 0xC1})
# Deflate (PNG's zlib stream) inflates at most 1032 times (258-byte matches from 2-bit codes).
DEFLATE_MAX_RATIO = 1032
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def check_native_length(name: str, geometry: PixelGeometry, length: int) -> None:
    """Uncompressed pixel data must hold what the header declares (one padding byte allowed).

    Raises:
        TruncatedDicomError: Fewer bytes than declared.
        InconsistentPixelDataError: A whole frame's worth more than declared (a size attribute lies).
    """
    expected = geometry.encoded_bytes
    if length < expected:
        raise TruncatedDicomError(
            name, f"the pixel data holds {length} bytes but the header declares {geometry.describe()} = "
            f"{expected} bytes: the file is truncated or its size attributes are wrong",
        )
    frame_bytes = max(expected // geometry.frames, 1)
    if length - expected > 1 and length - expected >= frame_bytes:
        raise InconsistentPixelDataError(
            name, f"the pixel data holds {length} bytes, more than the {expected} bytes the header declares "
            f"({geometry.describe()}): Rows, Columns, NumberOfFrames or BitsAllocated is wrong",
        )


def check_rle_frame(name: str, geometry: PixelGeometry, index: int, frame: bytes) -> None:
    """An RLE frame must have one segment per sample byte and enough bytes to fill them.

    Raises:
        InconsistentPixelDataError: The segment count or the frame's size contradicts the header.
    """
    segments = geometry.samples * max(geometry.bits_allocated // 8, 1)
    declared = struct.unpack("<I", frame[:4])[0] if len(frame) >= 4 else 0
    if declared != segments:
        raise InconsistentPixelDataError(
            name, f"RLE frame {index + 1} has {declared} segments; {geometry.describe()} needs {segments}",
        )
    needed = RLE_HEADER_BYTES + segments * 2 * -(-geometry.frame_pixels // 128)
    if len(frame) < needed:
        raise InconsistentPixelDataError(
            name, f"RLE frame {index + 1} holds {len(frame)} bytes; {geometry.describe()} needs at least "
            f"{needed} (RLE compresses at most {RLE_MAX_RATIO}:1): truncated, or Rows/Columns are wrong",
        )


def jpeg_frame_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """``(marker, precision, height, width, components)`` of a JPEG's frame header, or ``None``."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 10 > len(data):
                return None
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return marker, precision, height, width, components
        if marker == 0xDA:  # a scan before any frame header
            return None
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def check_jpeg_frame(name: str, geometry: PixelGeometry, index: int, frame: bytes) -> None:
    """A JPEG baseline frame must be baseline, match Rows/Columns/SamplesPerPixel and be big enough.

    Raises:
        InconsistentPixelDataError: The JPEG header contradicts the DICOM header, or the frame is
            too small to hold the declared pixels.
    """
    header = jpeg_frame_header(frame)
    if header is None:
        raise InconsistentPixelDataError(name, f"JPEG frame {index + 1} has no readable frame header (SOF)")
    marker, precision, height, width, components = header
    if marker not in JPEG_BASELINE_MARKERS or precision != 8:
        raise InconsistentPixelDataError(
            name, f"JPEG frame {index + 1} is not 8-bit baseline JPEG (marker 0xFF{marker:02X}, {precision} bits) "
            "as its transfer syntax says",
        )
    if (height, width, components) != (geometry.rows, geometry.columns, geometry.samples):
        raise InconsistentPixelDataError(
            name, f"JPEG frame {index + 1} is {width}x{height} with {components} component(s), but the DICOM "
            f"header declares {geometry.describe()}",
        )
    check_jpeg_size(name, f"JPEG frame {index + 1}", width, height, len(frame))


def check_jpeg_size(name: str, what: str, width: int, height: int, length: int) -> None:
    """A baseline JPEG of ``length`` bytes cannot hold more than 256 pixels per byte.

    Raises:
        InconsistentPixelDataError: The declared size is impossible for the data held.
    """
    if width * height > JPEG_BASELINE_MAX_PIXELS_PER_BYTE * length:
        raise InconsistentPixelDataError(
            name, f"{what} declares {width}x{height} pixels but holds {length} bytes, too few for baseline JPEG "
            f"(at most {JPEG_BASELINE_MAX_PIXELS_PER_BYTE} pixels per byte): truncated or forged",
        )


def check_png_header(name: str, data: bytes) -> None:
    """The pixel bytes a PNG's IHDR declares must be inflatable from the file's size.

    Raises:
        InconsistentPixelDataError: The header declares more than deflate can hold in this file.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 26:
        return
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    raw = height * (1 + -(-width * depth * PNG_CHANNELS.get(color, 1) // 8))
    if raw > DEFLATE_MAX_RATIO * len(data):
        raise InconsistentPixelDataError(
            name, f"the PNG declares {width}x{height} pixels ({raw} bytes of image data) but the file holds "
            f"{len(data)} bytes, at most {DEFLATE_MAX_RATIO}x less than it can inflate to: truncated or forged",
        )
