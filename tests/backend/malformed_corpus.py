"""The malformed-input corpus: small files whose headers declare far more than they hold.

Each ``Case`` builds its bytes deterministically (no randomness between runs) and states what the
upload API must answer: the status, the error ``code`` and the file (or archive member) that the
JSON error names. Used by ``tests/backend/imaging/test_imaging_bad_input_bounds.py`` and by
``bench/bench_malformed.py`` (peak RSS of a real gunicorn worker across the corpus).

Imports nothing from Django; ``python tests/backend/malformed_corpus.py OUTDIR`` writes the files.
"""

from __future__ import annotations

import gzip
import io
import random
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from backend_factories import make_dicom

MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One malformed upload and the answer it must get."""

    name: str
    filename: str
    declares: str
    status: int
    code: str
    build: Callable[[], bytes]
    member: str = ""

    @property
    def error_file(self) -> str:
        """The name the JSON error must carry (``archive.zip/member`` for archive members)."""
        return f"{self.filename}/{self.member}" if self.member else self.filename


# --- DICOM ---------------------------------------------------------------------------------------

def _save(ds: object) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _dicom(transfer_syntax: str | None = None, **attributes: object) -> bytes:
    """The factory's 8x8 16-bit CT with ``attributes`` overwritten (``None`` deletes one)."""
    ds = dcmread(io.BytesIO(make_dicom()))
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return _save(ds)


def _rle_frame(segments: int, payload: bytes = b"\x7f" + b"\0" * 128) -> bytes:
    """An RLE frame (PS3.5 G.4): a 64-byte header with ``segments`` offsets and a literal run each."""
    offsets = [64 + i * len(payload) for i in range(segments)]
    header = struct.pack("<16I", segments, *offsets, *([0] * (15 - segments)))
    return header + payload * segments


def _jpeg(size: int = 64, quality: int = 90) -> bytes:
    """A small 8-bit grayscale baseline JPEG (gradient)."""
    buffer = io.BytesIO()
    array = (np.add.outer(np.arange(size), np.arange(size)) % 256).astype(np.uint8)
    Image.fromarray(array, mode="L").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _with_sof_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) rewritten to declare ``width`` x ``height``."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def _insert_before_patient_name(data: bytes, elements: bytes) -> bytes:
    """Explicit VR little endian ``elements`` inserted before (0010,0010) of a factory file."""
    at = data.index(b"\x10\x00\x10\x00PN")
    return data[:at] + elements + data[at:]


def dicom_many_items(count: int) -> bytes:
    """A private sequence (0009,1020) of ``count`` empty items (8 bytes each) in a valid image."""
    items = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" * count
    sequence = b"\x09\x00\x20\x10SQ\x00\x00\xff\xff\xff\xff" + items + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return _insert_before_patient_name(make_dicom(), sequence)


def dicom_many_elements(count: int) -> bytes:
    """``count`` distinct empty private LO elements (8 bytes each, groups 0011, 0013, …) in a valid image."""
    per_group = 0xF000
    elements = b"".join(
        struct.pack("<HH", 0x0011 + 2 * (index // per_group), 0x1000 + index % per_group) + b"LO\x00\x00"
        for index in range(count)
    )
    return _insert_before_patient_name(make_dicom(), elements)


def rle_dicom(rows: int, columns: int, frames: int = 1) -> bytes:
    """RLE Lossless, 16-bit, declaring ``rows`` x ``columns`` (x ``frames``), one tiny frame."""
    return _dicom(RLELossless, Rows=rows, Columns=columns, NumberOfFrames=frames,
                  PixelData=encapsulate([_rle_frame(2)]))


def jpeg_dicom(rows: int, columns: int, jpeg: bytes | None = None) -> bytes:
    """JPEG baseline, 8-bit, declaring ``rows`` x ``columns``, holding a small JPEG."""
    return _dicom(JPEGBaseline8Bit, Rows=rows, Columns=columns, BitsAllocated=8, BitsStored=8, HighBit=7,
                  PixelRepresentation=0, PixelData=encapsulate([jpeg or _jpeg()]))


def native_dicom(**attributes: object) -> bytes:
    """Uncompressed (explicit VR little endian) with 8x8x16-bit pixel data and lying attributes."""
    return _dicom(None, **attributes)


# --- NIfTI ---------------------------------------------------------------------------------------

def nifti_header(shape: tuple[int, ...], dtype: type = np.int16) -> bytes:
    """A single-file NIfTI-1 header (352 bytes, data offset 352) declaring ``shape``, no voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4


def nifti_nan_affine(shape: tuple[int, int, int]) -> bytes:
    """A NIfTI-1 of int16 zeros whose sform (the affine used) is NaN in its first row."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    header["sform_code"] = 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]
    return header.binaryblock + b"\0" * 4 + bytes(int(np.prod(shape)) * 2)


def nifti_gz_zeros(shape: tuple[int, int, int]) -> bytes:
    """A valid ``.nii.gz`` of int16 zeros, compressed slice by slice (never held whole)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as stream:
        stream.write(nifti_header(shape))
        zero_slice = bytes(shape[0] * shape[1] * 2)
        for _ in range(shape[2]):
            stream.write(zero_slice)
    return out.getvalue()


def _random_bytes(count: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(count)


# --- PNG / JPEG ----------------------------------------------------------------------------------

def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, depth: int = 8, rows: int | None = None) -> bytes:
    """A grayscale PNG declaring ``width`` x ``height``; only ``rows`` rows of zeros are stored."""
    compressor = zlib.compressobj(9)
    line = b"\0" * (1 + width * depth // 8)
    idat = b"".join(compressor.compress(line) for _ in range(height if rows is None else rows)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _noise_image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    array = np.frombuffer(_random_bytes(256 * 256, 7), dtype=np.uint8).reshape(256, 256)
    Image.fromarray(array, mode="L").save(buffer, format=fmt)
    return buffer.getvalue()


# --- ZIP -----------------------------------------------------------------------------------------

def zip_of(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding ``members``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data, compress_type=compression)
    return buffer.getvalue()


def zip_many_members(count: int, size: int) -> bytes:
    """``count`` members of ``size`` zero bytes each (each member under the per-member ratio floor)."""
    zero = bytes(size)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(count):
            info = zipfile.ZipInfo(f"m{index:05d}.dcm", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, zero, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def zip_understating_member(actual: int, declared: int) -> bytes:
    """One member of ``actual`` zero bytes whose central directory declares ``declared`` bytes."""
    data = bytearray(zip_of({"small.dcm": bytes(actual)}))
    directory = data.rindex(b"PK\x01\x02")
    data[directory + 24 : directory + 28] = struct.pack("<I", declared)  # uncompressed size
    return bytes(data)


# --- The corpus ----------------------------------------------------------------------------------

CASES: tuple[Case, ...] = (
    Case("dicom_rle_16384", "rle-16384.dcm", "RLE, Rows=Columns=16384, 16 bit (0.5 GiB decoded) in 1.6 KB",
         413, "image_too_large", lambda: rle_dicom(16384, 16384)),
    Case("dicom_rle_65535", "rle-65535.dcm", "RLE, Rows=Columns=65535, 16 bit (8 GiB decoded) in 1.6 KB",
         413, "image_too_large", lambda: rle_dicom(65535, 65535)),
    Case("dicom_jpeg_16384", "jpeg-16384.dcm", "JPEG baseline, Rows=Columns=16384 (256 MiB), a 64x64 JPEG inside",
         413, "image_too_large", lambda: jpeg_dicom(16384, 16384)),
    Case("dicom_jpeg_65535", "jpeg-65535.dcm", "JPEG baseline, Rows=Columns=65535 (4 GiB), a 64x64 JPEG inside",
         413, "image_too_large", lambda: jpeg_dicom(65535, 65535)),
    Case("dicom_rle_short_frame", "rle-9000.dcm", "RLE, 9000x9000 (under the pixel cap) from one 258-byte frame",
         400, "inconsistent_pixel_data", lambda: rle_dicom(9000, 9000)),
    Case("dicom_rle_frames", "rle-frames.dcm", "RLE, NumberOfFrames=4000 of 512x512, one fragment",
         400, "inconsistent_pixel_data", lambda: rle_dicom(512, 512, frames=4000)),
    Case("dicom_jpeg_sof_mismatch", "jpeg-mismatch.dcm", "JPEG baseline, Rows/Columns 9000x9000, SOF 64x64",
         400, "inconsistent_pixel_data", lambda: jpeg_dicom(9000, 9000)),
    Case("dicom_jpeg_forged_sof", "jpeg-forged.dcm", "JPEG baseline, Rows/Columns and SOF 9000x9000, 0.6 KB of JPEG",
         400, "inconsistent_pixel_data", lambda: jpeg_dicom(9000, 9000, _with_sof_size(_jpeg(), 9000, 9000))),
    Case("dicom_native_short", "native-9000.dcm", "uncompressed, Rows=Columns=9000 x 16 bit (162 MB), 128 bytes held",
         400, "truncated_dicom", lambda: native_dicom(Rows=9000, Columns=9000)),
    Case("dicom_native_frames", "native-frames.dcm", "uncompressed, NumberOfFrames=100000 of 8x8, one frame held",
         400, "truncated_dicom", lambda: native_dicom(NumberOfFrames=100000)),
    Case("dicom_bits_allocated_32", "bits32.dcm", "BitsAllocated=32 over 16-bit pixel data",
         400, "truncated_dicom", lambda: native_dicom(BitsAllocated=32)),
    Case("dicom_bits_allocated_8", "bits8.dcm", "BitsAllocated=8 (BitsStored 8) over 16-bit pixel data (twice too long)",
         400, "inconsistent_pixel_data", lambda: native_dicom(BitsAllocated=8, BitsStored=8, HighBit=7)),
    Case("dicom_bits_allocated_12", "bits12.dcm", "BitsAllocated=12 (no decoder accepts it)",
         400, "inconsistent_pixel_data", lambda: native_dicom(BitsAllocated=12)),
    Case("dicom_empty_pixel_data", "empty-pixels.dcm", "8x8 16-bit image with a zero-length Pixel Data element",
         400, "truncated_dicom", lambda: native_dicom(PixelData=b"")),
    Case("dicom_no_bits_allocated", "no-bits.dcm", "pixel data without BitsAllocated (pixel size unknown)",
         400, "inconsistent_pixel_data", lambda: native_dicom(BitsAllocated=None)),
    Case("dicom_many_items", "items.dcm", "a valid 8x8 image with a private sequence of 200000 empty items (1.6 MB)",
         413, "dicom_too_complex", lambda: dicom_many_items(200_000)),
    Case("dicom_many_elements", "elements.dcm", "a valid 8x8 image with 200000 empty private elements (1.6 MB)",
         413, "dicom_too_complex", lambda: dicom_many_elements(200_000)),
    Case("dicom_truncated_pixels", "cut-pixels.dcm", "a 64x64 file cut 500 bytes into its pixel data",
         400, "truncated_dicom", lambda: make_dicom(rows=64, columns=64)[:-500]),
    Case("dicom_truncated_header", "cut-header.dcm", "a file cut inside its data set (300 bytes kept)",
         400, "truncated_dicom", lambda: make_dicom()[:300]),
    Case("nifti_header_only", "huge.nii", "NIfTI-1 int16 4096x4096x4096 (128 GiB), header only (352 bytes)",
         400, "inconsistent_pixel_data", lambda: nifti_header((4096, 4096, 4096))),
    Case("nifti_gz_header_only", "huge.nii.gz", "the same header gzipped: the size is only known after inflating",
         413, "upload_budget_exceeded", lambda: gzip.compress(nifti_header((4096, 4096, 4096)), mtime=0)),
    Case("nifti_gz_truncated", "short.nii.gz", "NIfTI-1 512x512x100 int16 (50 MiB) declared, gzip of the header only",
         400, "inconsistent_pixel_data", lambda: gzip.compress(nifti_header((512, 512, 100)), mtime=0)),
    Case("nifti_slice_too_large", "wide.nii", "NIfTI-1 32767x32767x1 slice (1.07 G pixels)",
         413, "image_too_large", lambda: nifti_header((32767, 32767, 1))),
    Case("nifti_gz_bomb", "bomb.nii.gz", "valid NIfTI-1 512x512x300 int16 zeros: 150 MiB from ~150 KB (1000:1)",
         413, "archive_too_large", lambda: nifti_gz_zeros((512, 512, 300))),
    Case("nifti_random", "random.nii", "4 KB of random bytes named .nii",
         400, "invalid_image", lambda: _random_bytes(4096, 1)),
    Case("nifti_gz_random", "random.nii.gz", "gzip of 4 KB random bytes named .nii.gz",
         400, "invalid_image", lambda: gzip.compress(_random_bytes(4096, 2), mtime=0)),
    Case("nifti_gz_corrupt", "corrupt.nii.gz", "gzip magic followed by random bytes",
         400, "invalid_image", lambda: b"\x1f\x8b\x08\x00" + _random_bytes(4096, 3)),
    Case("nifti_4d", "series.nii", "NIfTI-1 64x64x8x5 (a 4-D series, not a volume)",
         400, "invalid_image", lambda: nifti_header((64, 64, 8, 5)) + bytes(64 * 64 * 8 * 5 * 2)),
    Case("nifti_nan_affine", "nan.nii", "NIfTI-1 4x4x2 whose affine holds NaN (positions and spacing not finite)",
         400, "invalid_image", lambda: nifti_nan_affine((4, 4, 2))),
    Case("nifti_complex", "complex.nii", "NIfTI-1 8x8x8 complex64 voxels",
         400, "invalid_image", lambda: nifti_header((8, 8, 8), np.complex64) + bytes(8 * 8 * 8 * 8)),
    Case("png_16bit_12000", "big16.png", "16-bit PNG 12000x12000 (144 M pixels, 288 MB raw) in 280 KB",
         413, "image_too_large", lambda: png(12000, 12000, depth=16)),
    Case("png_header_65535", "huge.png", "8-bit PNG header 65535x65535 (4.3 G pixels), one row stored",
         413, "image_too_large", lambda: png(65535, 65535, rows=1)),
    Case("png_forged_9000", "forged.png", "8-bit PNG 9000x9000 (under the cap), 10 rows stored (~200 bytes)",
         400, "inconsistent_pixel_data", lambda: png(9000, 9000, rows=10)),
    Case("png_truncated", "cut.png", "a 256x256 noise PNG cut in half",
         400, "invalid_image", lambda: _noise_image("PNG")[:33000]),
    Case("jpeg_65500", "huge.jpg", "baseline JPEG with SOF 65500x65500 (4.3 G pixels), 665 bytes",
         413, "image_too_large", lambda: _with_sof_size(_jpeg(), 65500, 65500)),
    Case("jpeg_forged_9000", "forged.jpg", "baseline JPEG with SOF 9000x9000 (under the cap), 665 bytes",
         400, "inconsistent_pixel_data", lambda: _with_sof_size(_jpeg(), 9000, 9000)),
    Case("jpeg_truncated", "cut.jpg", "a 256x256 noise JPEG cut in half",
         400, "invalid_image", lambda: _noise_image("JPEG")[:20000]),
    Case("zip_1000_members", "many.zip", "1000 members of 1 MiB - 1 zero bytes (1000 MiB from ~1 MB)",
         413, "archive_too_large", lambda: zip_many_members(1000, MIB - 1)),
    Case("zip_ratio_member", "bomb.zip", "one member of 8 MiB zeros (ratio ~1000:1)",
         413, "archive_too_large", lambda: zip_of({"bomb.dcm": bytes(8 * MIB)}), member="bomb.dcm"),
    Case("zip_nested", "outer.zip", "a zip holding inner.zip holding 8 MiB of zeros",
         415, "not_dicom", lambda: zip_of({"inner.zip": zip_of({"bomb.dcm": bytes(8 * MIB)})}, zipfile.ZIP_STORED),
         member="inner.zip"),
    Case("zip_understated_member", "liar.zip", "a member of 4 MiB whose directory entry declares 100 bytes",
         415, "not_dicom", lambda: zip_understating_member(4 * MIB, 100), member="small.dcm"),
    Case("zip_too_many_members", "crowd.zip", "20001 empty members (over PLEURA_ZIP_MAX_MEMBERS)",
         413, "archive_too_large", lambda: zip_many_members(20001, 0)),
    Case("zip_truncated", "cut.zip", "a zip of two DICOM files cut in half",
         415, "not_dicom", lambda: zip_of({"a.dcm": make_dicom(), "b.dcm": make_dicom(z=1.0)})[:1500]),
)


def by_name() -> dict[str, Case]:
    """The corpus keyed by case name."""
    return {case.name: case for case in CASES}


def main(argv: list[str]) -> int:
    """Write every case's file under ``argv[0]`` (default ``malformed-corpus``) and list them."""
    out = Path(argv[0] if argv else "malformed-corpus")
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        data = case.build()
        (out / f"{case.name}__{case.filename}").write_bytes(data)
        print(f"{case.name:28s} {len(data):>9d} B  -> {case.status} {case.code}: {case.declares}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
