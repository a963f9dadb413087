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
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import highdicom
import nibabel as nib
import numpy as np
from nibabel.spatialimages import HeaderDataError
from PIL import Image, ImageMode, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.pixels import get_decoder
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
    EmptyFileError,
    ImageTooLargeError,
    InconsistentPixelDataError,
    InvalidImageError,
    MalformedDicomError,
    NoPixelDataError,
    NotDicomError,
    TruncatedDicomError,
    UnsupportedModalityError,
    UnsupportedTransferSyntaxError,
    ZeroSizeImageError,
)
from .limits import (
    VALID_BITS_ALLOCATED,
    DecodeBudget,
    ElementCounter,
    PixelGeometry,
    JPEG_BASELINE_MARKERS,
    check_jpeg_frame,
    check_dicom_items,
    check_jpeg_size,
    check_native_length,
    check_png_header,
    check_ratio,
    check_rle_frame,
    jpeg_frame_header,
)

logger = logging.getLogger(__name__)

SUPPORTED_MODALITIES = frozenset({"CR", "DX", "CT"})
SUPPORTED_TRANSFER_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit})
REQUIRED_PIXEL_ATTRIBUTES = ("SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated")
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
IMAGE_FORMATS = ("PNG", "JPEG")
INFLATE_CHUNK = 1024 * 1024
NIFTI_HEAD_BYTES = 540  # a NIfTI-2 header; NIfTI-1 needs 348
GRAY_CHUNK_PIXELS = 4 * 1024 * 1024
_READ_ERRORS = (OSError, EOFError, ValueError, struct.error, KeyError, TypeError, IndexError, zlib.error)


@dataclass(frozen=True)
class ImageOptions:
    """Options for generated (non-DICOM) series; ``budget`` bounds what the upload may decode."""

    secret: str
    patient_key: str | None = None
    modality: str = "DX"
    budget: DecodeBudget = field(default_factory=DecodeBudget)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_dicom(name: str, data: bytes, budget: DecodeBudget | None = None) -> Dataset:
    """Read and validate one DICOM Part-10 file.

    The pixel sizes the header declares are checked against the pixel data and ``budget`` before
    anything is decoded; the frames are then decoded one at a time (nothing is kept).

    Raises:
        EmptyFileError, NotDicomError, TruncatedDicomError, NoPixelDataError,
        UnsupportedTransferSyntaxError, ZeroSizeImageError, UnsupportedModalityError,
        InconsistentPixelDataError, ImageTooLargeError, UploadBudgetError.
    """
    if not data:
        raise EmptyFileError(name, "the file is empty (0 bytes)")
    if _declares_deflate(data):  # pydicom would inflate the whole dataset before any check
        raise UnsupportedTransferSyntaxError(
            name, f"transfer syntax {DeflatedExplicitVRLittleEndian} (deflated) is not supported"
        )
    check_dicom_items(name, data)
    try:
        ds = read_partial(io.BytesIO(data), stop_when=ElementCounter(name))  # dcmread, element count bounded
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
    _check_and_decode_pixels(name, ds, transfer_syntax, budget or DecodeBudget())
    return ds


def _check_and_decode_pixels(name: str, ds: Dataset, transfer_syntax: str, budget: DecodeBudget) -> None:
    """Check the declared pixel layout against the pixel data, then decode frame by frame."""
    geometry = _pixel_geometry(name, ds)
    budget.check_image(name, geometry.rows, geometry.columns, "frame")
    value = next(ds[keyword].value for keyword in PIXEL_DATA_KEYWORDS if keyword in ds) or b""
    if transfer_syntax in (RLELossless, JPEGBaseline8Bit):
        _check_encapsulated(name, geometry, transfer_syntax, value)
    else:
        check_native_length(name, geometry, len(value))
    budget.charge_decoded(name, geometry.decoded_bytes)
    try:
        for _frame, _ in get_decoder(transfer_syntax).iter_array(ds):
            pass  # decodable; each frame is dropped at once (at most one frame in memory)
    except _READ_ERRORS + (AttributeError, NotImplementedError, RuntimeError, Image.DecompressionBombError) as exc:
        raise TruncatedDicomError(
            name, f"the pixel data cannot be decoded: truncated or corrupted ({type(exc).__name__})"
        ) from exc


def _pixel_geometry(name: str, ds: Dataset) -> PixelGeometry:
    """The declared pixel layout; refuses missing or impossible values no decoder accepts."""
    missing = [keyword for keyword in REQUIRED_PIXEL_ATTRIBUTES if ds.get(keyword) in (None, "")]
    if missing:
        raise InconsistentPixelDataError(name, f"the image pixel description lacks {', '.join(missing)}")
    try:
        frames_value = ds.get("NumberOfFrames", 1)
        geometry = PixelGeometry(
            rows=int(ds.Rows), columns=int(ds.Columns), frames=int(frames_value if frames_value not in (None, "") else 1),
            samples=int(ds.SamplesPerPixel), bits_allocated=int(ds.BitsAllocated),
            subsampled_422=str(ds.get("PhotometricInterpretation", "") or "") == "YBR_FULL_422",
        )
        bits_stored = int(ds.get("BitsStored", geometry.bits_allocated) or geometry.bits_allocated)
    except (TypeError, ValueError, AttributeError) as exc:
        raise MalformedDicomError(name, f"a pixel size attribute is not a number ({type(exc).__name__})") from exc
    problems = []
    if geometry.frames < 1:
        problems.append(f"NumberOfFrames {geometry.frames}")
    if geometry.samples not in (1, 3):
        problems.append(f"SamplesPerPixel {geometry.samples} (expected 1 or 3)")
    if geometry.bits_allocated not in VALID_BITS_ALLOCATED:
        problems.append(f"BitsAllocated {geometry.bits_allocated} (expected 1, 8, 16, 32 or 64)")
    if not 0 < bits_stored <= geometry.bits_allocated:
        problems.append(f"BitsStored {bits_stored} with BitsAllocated {geometry.bits_allocated}")
    if problems:
        raise InconsistentPixelDataError(name, "invalid pixel description: " + ", ".join(problems))
    return geometry


def _check_encapsulated(name: str, geometry: PixelGeometry, transfer_syntax: str, value: bytes) -> None:
    """Frame count and each frame's header (RLE segments, JPEG SOF) against the DICOM header."""
    check_frame = check_rle_frame if transfer_syntax == RLELossless else check_jpeg_frame
    count = 0
    try:
        for count, frame in enumerate(generate_frames(value, number_of_frames=geometry.frames), start=1):
            if count > geometry.frames:
                break
            check_frame(name, geometry, count - 1, frame)
    except (ValueError, KeyError, struct.error, EOFError) as exc:
        raise InconsistentPixelDataError(
            name, f"the encapsulated pixel data cannot be split into frames ({type(exc).__name__})"
        ) from exc
    if count < geometry.frames:
        raise InconsistentPixelDataError(
            name, f"the header declares {geometry.frames} frame(s) but the pixel data holds {count}"
        )


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
    budget = options.budget
    Image.MAX_IMAGE_PIXELS = budget.max_image_pixels  # Pillow refuses twice this in open() already
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked just below
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        with image:
            _check_image_declaration(name, data, image, budget)
            image.load()
            pixels = _to_uint8_gray(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            name, f"the image declares more than {budget.max_image_pixels} pixels (PLEURA_MAX_IMAGE_PIXELS)"
        ) from exc
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


def _check_image_declaration(name: str, data: bytes, image: Image.Image, budget: DecodeBudget) -> None:
    """Pixel count, header against file size and the decode budget, before ``load()``."""
    width, height = image.size
    budget.check_image(name, height, width)
    if image.format == "PNG":
        check_png_header(name, data)
    elif image.format == "JPEG":
        header = jpeg_frame_header(data)
        if header is not None and header[0] in JPEG_BASELINE_MARKERS:  # progressive JPEG has no such bound
            check_jpeg_size(name, "the JPEG", width, height, len(data))
    mode = ImageMode.getmode(image.mode)
    sample_bytes = np.dtype(mode.typestr).itemsize
    budget.charge_decoded(name, width * height * (sample_bytes * len(mode.bands) + 1))


def _to_uint8_gray(image: Image.Image) -> np.ndarray:
    """Grayscale ``(H, W)`` uint8; 16-bit inputs are rescaled from their own min-max (and 0).

    The rescale runs on bands of rows so that no float64 copy of the whole image is made.
    """
    if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.ascontiguousarray(np.asarray(image.convert("L"), dtype=np.uint8))
    array = np.asarray(image)
    low, high = float(array.min(initial=0)), float(array.max(initial=0))
    out = np.zeros(array.shape, dtype=np.uint8)
    if high > low:
        step = max(1, GRAY_CHUNK_PIXELS // max(array.shape[1], 1))
        for start in range(0, array.shape[0], step):
            band = array[start : start + step].astype(np.float64)
            out[start : start + step] = np.round((band - low) / (high - low) * 255.0).astype(np.uint8)
    return out


def nifti_to_datasets(name: str, data: bytes, options: ImageOptions) -> list[Dataset]:
    """Convert a NIfTI CT volume to a CT Image Storage series (one dataset per slice).

    The NIfTI affine (RAS) is converted to DICOM patient coordinates (LPS). Voxel ``(i, j, k)``
    becomes column ``i``, row ``j`` of slice ``k``; ImagePositionPatient is the affine applied to
    ``(0, 0, k)``; ImageOrientationPatient holds the unit i and j axes; PixelSpacing is
    ``[spacing_j, spacing_i]`` mm. Values are stored as int16 with RescaleSlope/Intercept (HU).
    """
    if not data:
        raise EmptyFileError(name, "the file is empty (0 bytes)")
    image, shape = _nifti_image(name, data, options.budget)
    stored, slope, intercept = _to_int16(image, shape)
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(image.affine, dtype=np.float64)[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    if not np.all(np.isfinite(lps)) or np.any(spacing <= 0):
        raise InvalidImageError(name, "the NIfTI affine has a zero voxel size or values that are not finite")
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
    for k in range(shape[2]):
        position = lps @ np.array([0.0, 0.0, float(k), 1.0])
        ds = _ct_slice(stored[k], pseudonym, common, k, slope, intercept)
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


def _nifti_image(name: str, data: bytes, budget: DecodeBudget) -> tuple[nib.Nifti1Image | nib.Nifti2Image, tuple[int, int, int]]:
    """Check the header's declared volume against the data and ``budget``, then open it (lazily).

    A ``.nii.gz`` stream is inflated only up to the size its header declares, within the ratio and
    the request's inflate budget.
    """
    compressed = data[:2] == b"\x1f\x8b"
    head = _inflate(name, data, NIFTI_HEAD_BYTES, budget) if compressed else data[:NIFTI_HEAD_BYTES]
    header = _nifti_header(name, head)
    shape, dtype, offset = _nifti_layout(name, header)
    budget.check_image(name, shape[1], shape[0], "slice")
    voxels = shape[0] * shape[1] * shape[2]
    needed = offset + voxels * dtype.itemsize
    if not compressed:
        _check_nifti_length(name, shape, dtype, needed, len(data))
    budget.charge_decoded(name, voxels * np.dtype(np.int16).itemsize)
    raw = _inflate(name, data, needed, budget) if compressed else data
    _check_nifti_length(name, shape, dtype, needed, len(raw))
    image_class = nib.Nifti1Image if isinstance(header, nib.Nifti1Header) else nib.Nifti2Image
    try:
        return image_class.from_bytes(raw), shape
    except (nib.filebasedimages.ImageFileError, HeaderDataError, ValueError, OSError, EOFError, TypeError) as exc:
        raise InvalidImageError(name, f"not a readable NIfTI-1/NIfTI-2 volume ({type(exc).__name__})") from exc


def _inflate(name: str, data: bytes, size: int, budget: DecodeBudget) -> bytes:
    """The first ``size`` bytes of a gzip stream (fewer if it ends), charged to ``budget``."""
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while out.tell() < size and (chunk := stream.read(min(INFLATE_CHUNK, size - out.tell()))):
                budget.charge_inflated(name, len(chunk))
                out.write(chunk)
                check_ratio(name, out.tell(), len(data), budget.max_ratio)
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidImageError(name, f"the gzip stream is truncated or corrupted ({type(exc).__name__})") from exc
    return out.getvalue()


def _nifti_header(name: str, head: bytes) -> nib.Nifti1Header | nib.Nifti2Header:
    """The single-file NIfTI-1 (``n+1``) or NIfTI-2 (``n+2``) header at the start of ``head``."""
    for header_class, magic in ((nib.Nifti1Header, b"n+1"), (nib.Nifti2Header, b"n+2")):
        size = header_class.template_dtype.itemsize
        if len(head) < size:
            continue
        try:
            header = header_class(head[:size], check=True)
        except (HeaderDataError, ValueError, TypeError, KeyError):
            continue
        if bytes(header["magic"].item()) == magic:
            return header
    raise InvalidImageError(name, "not a readable NIfTI-1/NIfTI-2 volume (no single-file NIfTI header)")


def _nifti_layout(name: str, header: nib.Nifti1Header | nib.Nifti2Header) -> tuple[tuple[int, int, int], np.dtype, int]:
    """``(shape (I, J, K), voxel dtype, data offset)`` declared by a NIfTI header."""
    try:
        shape = tuple(int(d) for d in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        offset = int(header.get_data_offset())
    except (HeaderDataError, ValueError, TypeError, KeyError, OverflowError) as exc:
        raise InvalidImageError(name, f"the NIfTI header is invalid ({type(exc).__name__})") from exc
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InvalidImageError(name, f"expected a 3-D volume, found {len(shape)} dimensions {shape}")
    if any(d < 0 for d in shape):
        raise InvalidImageError(name, f"the NIfTI header declares negative dimensions {shape}")
    if 0 in shape:
        raise ZeroSizeImageError(name, "the volume has an empty dimension")
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise InvalidImageError(name, f"voxel type {dtype} is not supported (expected integer or float)")
    if offset < header.template_dtype.itemsize:
        raise InvalidImageError(name, f"the NIfTI data offset {offset} lies inside the header")
    return (shape[0], shape[1], shape[2]), dtype, offset


def _check_nifti_length(name: str, shape: tuple[int, int, int], dtype: np.dtype, needed: int, length: int) -> None:
    if length < needed:
        raise InconsistentPixelDataError(
            name, f"the NIfTI header declares {shape[0]}x{shape[1]}x{shape[2]} voxels of {dtype} ({needed} bytes "
            f"with the header) but the file holds {length} bytes: truncated, or the header is wrong",
        )


def _to_int16(image: nib.Nifti1Image | nib.Nifti2Image, shape: tuple[int, int, int]) -> tuple[list[np.ndarray], float, float]:
    """Slices ``(J, I)`` as int16 with (slope, intercept); integral HU volumes are stored as is.

    Reads the volume slice by slice (nibabel applies scl_slope/scl_inter): one pass for the value
    range, one to convert, so memory stays at the int16 output plus one float64 slice.
    """
    ranges = [_value_range(values) for values in _nifti_slices(image, shape)]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    finite = all(np.isfinite(r[0]) and np.isfinite(r[1]) for r in ranges)
    if finite and low >= -32768 and high <= 32767 and all(r[2] for r in ranges):
        return [values.astype(np.int16).T for values in _nifti_slices(image, shape)], 1.0, 0.0
    ranges = [_value_range(np.nan_to_num(values.astype(np.float64))) for values in _nifti_slices(image, shape)]
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    slope = (high - low) / 65535.0 if high > low else 1.0
    stored = [
        np.round((np.nan_to_num(values.astype(np.float64)) - low) / slope - 32768.0).clip(-32768, 32767).astype(np.int16).T
        for values in _nifti_slices(image, shape)
    ]
    return stored, slope, low + 32768.0 * slope


def _value_range(values: np.ndarray) -> tuple[float, float, bool]:
    """``(min, max, all values integral)`` of one slice (NaN propagates into min/max)."""
    integral = bool(np.issubdtype(values.dtype, np.integer) or np.array_equal(values, np.round(values)))
    return float(values.min()), float(values.max()), integral


def _nifti_slices(image: nib.Nifti1Image | nib.Nifti2Image, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """Slice ``k`` of the volume as ``(I, J)``, one at a time (scaled as nibabel reads it)."""
    extra = (0,) * (len(image.dataobj.shape) - 3)
    for k in range(shape[2]):
        yield np.asarray(image.dataobj[(slice(None), slice(None), k, *extra)])


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
