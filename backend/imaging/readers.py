"""Turn uploaded bytes into validated DICOM datasets (in memory, nothing written).

* DICOM Part-10 files: validated (header, pixel data, transfer syntax, size, modality).
* PNG/JPEG chest X-rays: wrapped as DICOM Secondary Capture (8-bit MONOCHROME2) with highdicom.
* NIfTI CT volumes: converted to a CT Image Storage series with the volume's geometry.

Generated UIDs are keyed hashes (2.25 root) of the file's content hash, so re-importing the same
file yields the same UIDs and is recognised as a duplicate.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import struct
import zlib
from dataclasses import dataclass

import highdicom
import nibabel as nib
import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
)

from .deid import pseudonym_for, remap_uid
from .errors import (
    ArchiveBombError,
    EmptyFileError,
    InvalidImageError,
    NoPixelDataError,
    NotDicomError,
    TruncatedDicomError,
    UnsupportedModalityError,
    UnsupportedTransferSyntaxError,
    ZeroSizeImageError,
)

logger = logging.getLogger(__name__)

SUPPORTED_MODALITIES = frozenset({"CR", "DX", "CT"})
SUPPORTED_TRANSFER_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit})
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_READ_ERRORS = (OSError, EOFError, ValueError, struct.error, KeyError, TypeError, IndexError, zlib.error)


@dataclass(frozen=True)
class ImageOptions:
    """Options for generated (non-DICOM) series."""

    secret: str
    patient_key: str | None = None
    modality: str = "DX"
    max_image_pixels: int = 100_000_000
    max_decompressed_bytes: int = 4 * 1024**3


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_dicom(name: str, data: bytes) -> Dataset:
    """Read and validate one DICOM Part-10 file.

    Raises:
        EmptyFileError, NotDicomError, TruncatedDicomError, NoPixelDataError,
        UnsupportedTransferSyntaxError, ZeroSizeImageError, UnsupportedModalityError.
    """
    if not data:
        raise EmptyFileError(name, "the file is empty (0 bytes)")
    if _declares_deflate(data):  # pydicom would inflate the whole dataset before any check
        raise UnsupportedTransferSyntaxError(
            name, f"transfer syntax {DeflatedExplicitVRLittleEndian} (deflated) is not supported"
        )
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise NotDicomError(
            name, "not a DICOM file: no 'DICM' marker and file meta header (expected a DICOM Part-10 file, "
            "a .zip of them, PNG/JPEG or NIfTI)"
        ) from exc
    except _READ_ERRORS as exc:
        raise TruncatedDicomError(name, f"the DICOM file is truncated or corrupted ({type(exc).__name__})") from exc
    transfer_syntax = getattr(ds.file_meta, "TransferSyntaxUID", None)
    if transfer_syntax is None or "SOPClassUID" not in ds:
        raise TruncatedDicomError(name, "the DICOM file is truncated: header incomplete")
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise UnsupportedTransferSyntaxError(
            name, f"transfer syntax {transfer_syntax} ({transfer_syntax.name}) is not supported; "
            "send uncompressed (explicit/implicit VR little endian), RLE or JPEG baseline"
        )
    if not any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS):
        raise NoPixelDataError(name, "the DICOM object has no pixel data (not an image)")
    if int(ds.get("Rows", 0) or 0) == 0 or int(ds.get("Columns", 0) or 0) == 0:
        raise ZeroSizeImageError(name, "the image has zero rows or columns")
    modality = str(ds.get("Modality", "") or "")
    if modality not in SUPPORTED_MODALITIES:
        raise UnsupportedModalityError(
            name, f"modality '{modality or 'missing'}' is not supported (expected CR, DX or CT)"
        )
    try:
        ds.pixel_array  # decode once: catches short pixel data and undecodable frames
    except _READ_ERRORS + (AttributeError, NotImplementedError, RuntimeError) as exc:
        raise TruncatedDicomError(
            name, f"the pixel data cannot be decoded: truncated or corrupted ({type(exc).__name__})"
        ) from exc
    return ds


def _declares_deflate(data: bytes) -> bool:
    """Whether the Part-10 file meta group names the deflated transfer syntax (header only)."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        return False
    meta_length = struct.unpack("<I", data[140:144])[0] if len(data) >= 144 else 0
    return str(DeflatedExplicitVRLittleEndian).encode() in data[144 : 144 + min(meta_length, 4096)]


def image_to_dataset(name: str, data: bytes, options: ImageOptions) -> Dataset:
    """Wrap a PNG/JPEG chest X-ray as a DICOM Secondary Capture image (8-bit MONOCHROME2).

    The image is converted to grayscale ``(H, W)`` uint8. Patient orientation is recorded as
    ``L\\F`` (standard PA/AP view: patient's left towards the image's right, feet downwards).
    """
    if not data:
        raise EmptyFileError(name, "the file is empty (0 bytes)")
    Image.MAX_IMAGE_PIXELS = options.max_image_pixels
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            pixels = _to_uint8_gray(image)
    except Image.DecompressionBombError as exc:
        raise ArchiveBombError(name, f"the image has more than {options.max_image_pixels} pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(name, f"the image cannot be decoded ({type(exc).__name__})") from exc
    if pixels.size == 0:
        raise ZeroSizeImageError(name, "the image has zero rows or columns")
    digest = sha256_hex(data)
    patient_key = f"key:{options.patient_key}" if options.patient_key else f"file:{digest}"
    pseudonym = pseudonym_for(options.secret, patient_key)
    ds = highdicom.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=remap_uid(options.secret, f"generated-study:{digest}"),
        series_instance_uid=remap_uid(options.secret, f"generated-series:{digest}"),
        series_number=1,
        sop_instance_uid=remap_uid(options.secret, f"generated-instance:{digest}"),
        instance_number=1,
        manufacturer="Pleura",
        patient_id=pseudonym,
        patient_orientation=("L", "F"),
    )
    ds.PatientName = pseudonym
    ds.Modality = options.modality
    ds.PatientIdentityRemoved = "YES"
    return ds


def _to_uint8_gray(image: Image.Image) -> np.ndarray:
    """Grayscale ``(H, W)`` uint8; 16-bit inputs are rescaled from their own min-max."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min(initial=0.0)), float(array.max(initial=0.0))
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return np.ascontiguousarray(np.round(scaled).astype(np.uint8))
    return np.ascontiguousarray(np.asarray(image.convert("L"), dtype=np.uint8))


def nifti_to_datasets(name: str, data: bytes, options: ImageOptions) -> list[Dataset]:
    """Convert a NIfTI CT volume to a CT Image Storage series (one dataset per slice).

    The NIfTI affine (RAS) is converted to DICOM patient coordinates (LPS). Voxel ``(i, j, k)``
    becomes column ``i``, row ``j`` of slice ``k``; ImagePositionPatient is the affine applied to
    ``(0, 0, k)``; ImageOrientationPatient holds the unit i and j axes; PixelSpacing is
    ``[spacing_j, spacing_i]`` mm. Values are stored as int16 with RescaleSlope/Intercept (HU).
    """
    if not data:
        raise EmptyFileError(name, "the file is empty (0 bytes)")
    raw = _gunzip_limited(name, data, options.max_decompressed_bytes) if data[:2] == b"\x1f\x8b" else data
    image = _nifti_from_bytes(name, raw)
    volume = np.asanyarray(image.dataobj)
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise InvalidImageError(name, f"expected a 3-D volume, found {volume.ndim} dimensions")
    if 0 in volume.shape:
        raise ZeroSizeImageError(name, "the volume has an empty dimension")
    stored, slope, intercept = _to_int16(volume)
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(image.affine, dtype=np.float64)[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    if np.any(spacing <= 0):
        raise InvalidImageError(name, "the NIfTI affine has a zero voxel size")
    row_cosine, column_cosine = lps[:, 0] / spacing[0], lps[:, 1] / spacing[1]
    digest = sha256_hex(data)
    patient_key = f"key:{options.patient_key}" if options.patient_key else f"file:{digest}"
    pseudonym = pseudonym_for(options.secret, patient_key)
    common = {
        "study": remap_uid(options.secret, f"generated-study:{digest}"),
        "series": remap_uid(options.secret, f"generated-series:{digest}"),
        "frame": remap_uid(options.secret, f"generated-frame:{digest}"),
    }
    datasets = []
    for k in range(volume.shape[2]):
        position = lps @ np.array([0.0, 0.0, float(k), 1.0])
        ds = _ct_slice(stored[:, :, k].T, pseudonym, common, k, slope, intercept)
        ds.SOPInstanceUID = remap_uid(options.secret, f"generated-instance:{digest}:{k}")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.ImageOrientationPatient = [_ds_number(v) for v in (*row_cosine, *column_cosine)]
        ds.PixelSpacing = [_ds_number(spacing[1]), _ds_number(spacing[0])]
        ds.SliceThickness = _ds_number(spacing[2])
        ds.SpacingBetweenSlices = _ds_number(spacing[2])
        ds.SliceLocation = _ds_number(float(np.dot(np.cross(row_cosine, column_cosine), position)))
        datasets.append(ds)
    return datasets


def _ds_number(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{float(value):.6g}"
    return "0" if text in ("-0", "0") else text


def _gunzip_limited(name: str, data: bytes, limit: int) -> bytes:
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(1024 * 1024):
                out.write(chunk)
                if out.tell() > limit:
                    raise ArchiveBombError(name, f"decompresses to more than {limit} bytes")
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidImageError(name, f"the gzip stream is truncated or corrupted ({type(exc).__name__})") from exc
    return out.getvalue()


def _nifti_from_bytes(name: str, raw: bytes) -> nib.Nifti1Image | nib.Nifti2Image:
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return cls.from_bytes(raw)
        except (nib.filebasedimages.ImageFileError, ValueError, OSError, EOFError, TypeError):
            continue
    raise InvalidImageError(name, "not a readable NIfTI-1/NIfTI-2 volume")


def _to_int16(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Map a volume to int16 with (slope, intercept); integral HU volumes are stored as is."""
    values = np.asarray(volume)
    low, high = float(values.min()), float(values.max())
    if np.all(np.isfinite([low, high])) and low >= -32768 and high <= 32767 and (
        np.issubdtype(values.dtype, np.integer) or np.array_equal(values, np.round(values))
    ):
        return values.astype(np.int16), 1.0, 0.0
    values = np.nan_to_num(values.astype(np.float64))
    low, high = float(values.min()), float(values.max())
    slope = (high - low) / 65535.0 if high > low else 1.0
    stored = np.round((values - low) / slope - 32768.0).clip(-32768, 32767).astype(np.int16)
    return stored, slope, low + 32768.0 * slope


def _ct_slice(
    pixels: np.ndarray, pseudonym: str, uids: dict[str, str], index: int, slope: float, intercept: float
) -> Dataset:
    """One CT Image Storage dataset for a ``(rows, columns)`` int16 slice."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "CT"
    ds.Manufacturer = "Pleura"
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.PositionReferenceIndicator = ""
    ds.KVP = ""
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = _ds_number(slope)
    ds.RescaleIntercept = _ds_number(intercept)
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds
