"""Archive layouts of every export format, written case by case into a zip stream.

Each format is a :class:`Writer`: ``check(cases)`` refuses a selection it cannot write (before
anything is written), ``write_case`` adds one case's files and returns their archive paths,
``finish`` adds the index files (dataset.json, annotations, datalist). Formats use the field's
libraries: nibabel (NIfTI), Pillow (PNG), highdicom (DICOM SEG), pycocotools (COCO RLE).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import shutil
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import highdicom as hd
import nibabel as nib
import numpy as np
from django.core.files.storage import default_storage
from PIL import Image
from pycocotools import mask as coco_mask
from pydicom.sr.coding import Code

from annotation import labelmaps
from annotation.services import read_labels
from imaging.deid import remap_uid

from . import pixels
from .errors import IncompatibleSelectionError, UnknownFormatError
from .selection import Case

logger = logging.getLogger(__name__)

#: Label values and names as stored by the platform (0 background, 1 right lung, 2 left lung).
LABELS: dict[int, str] = {0: "background", 1: "right lung", 2: "left lung"}
#: SNOMED CT codes of the segments (DICOM SEG) and COCO categories.
SEGMENT_CODES: dict[int, Code] = {1: Code("3341006", "SCT", "Right lung"), 2: Code("44029006", "SCT", "Left lung")}
SEGMENT_LABELS: dict[int, str] = {1: "Right Lung", 2: "Left Lung"}
_ZIP_DATE = (2000, 1, 1, 0, 0, 0)  # fixed entry dates: the same content gives the same entries


class Archive:
    """Thin writer over a :class:`zipfile.ZipFile` (ZIP64; stored entries for compressed payloads)."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf

    def _info(self, name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, _ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def write_bytes(self, name: str, data: bytes, compress: bool = False) -> None:
        self.zf.writestr(self._info(name, compress), data, compresslevel=6 if compress else None)

    def write_json(self, name: str, value: Any) -> None:
        self.write_bytes(name, json.dumps(value, indent=2, sort_keys=True, default=str).encode(), compress=True)

    def write_stored_file(self, name: str, storage_name: str) -> None:
        """Copy a file from the storage into the archive in 1 MiB chunks (stored: deflating CT pixels costs more than it saves)."""
        with default_storage.open(storage_name, "rb") as src, self.zf.open(self._info(name, False), "w", force_zip64=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def png_bytes(array: np.ndarray) -> bytes:
    """``(H, W)`` uint8 → 8-bit grey PNG (zlib level 1: label maps and images compress fast)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """``(D, H, W)`` → ``.nii.gz`` bytes with voxel axes (W, H, D) and the RAS ``affine``."""
    image = nib.Nifti1Image(np.transpose(array, (2, 1, 0)), affine)
    image.header.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm")
    return gzip.compress(image.to_bytes(), compresslevel=1)


@dataclass
class Volume:
    """Image and label of one case on the grid its NIfTI is written on."""

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray


def _ct_geometry(case: Case, instances: list[Any]) -> tuple[dict[str, Any], tuple[float, ...]]:
    revision = case.revision
    geometry = dict(revision.geometry or {})
    if not geometry.get("origin"):
        geometry.update(pixels.series_geometry(revision.series, instances))
    spacing = tuple(revision.spacing) if revision.spacing else tuple(reversed(geometry["spacing_xyz"]))
    return geometry, spacing


def volume_of(case: Case, instances: list[Any]) -> Volume:
    """Image + labels as NIfTI writes them: CT on the series' regular grid (HU, int16), X-ray as one slice.

    Args:
        instances: the case's instances in label-map slice order (:func:`case_instances`).
    """
    revision = case.revision
    labels = read_labels(revision)
    if not case.is_3d:
        spacing = revision.spacing
        affine = labelmaps.affine_ras({}, (1.0, *spacing) if spacing else None)
        return Volume(pixels.xray_uint8(revision.instance)[np.newaxis], labels[np.newaxis], affine)
    geometry, spacing = _ct_geometry(case, instances)
    image = pixels.to_grid(pixels.ct_volume(instances), geometry)
    return Volume(image, labelmaps.to_regular_grid(labels, geometry), labelmaps.affine_ras(geometry, spacing))


def case_instances(case: Case) -> list[Any]:
    """The case's instances in label-map slice order (one database query for CT; none for an X-ray)."""
    return pixels.ordered_instances(case.revision.series) if case.is_3d else [case.revision.instance]


@dataclass
class Entry:
    """One archive member: bytes, or a stored file copied at write time."""

    name: str
    data: bytes | None = None
    storage_name: str | None = None
    compress: bool = False


@dataclass
class Prepared:
    """What a case adds to the archive: its members, its files for the manifest, index data for ``finish``."""

    entries: list[Entry]
    files: dict[str, str]
    extra: Any = None


def stored_label_png(case: Case) -> bytes:
    """The stored label PNG of a 2D revision as it is (Pleura writes label maps as 8-bit grey PNG).

    The bytes are checked against the revision's checksum by decoding them once.
    """
    revision = case.revision
    with default_storage.open(revision.labelmap.name, "rb") as handle:
        data = handle.read()
    if revision.labelmap_format != "png" or labelmaps.checksum(labelmaps.decode_png(data)) != revision.checksum:
        return png_bytes(read_labels(revision))  # re-encoded (raises LabelMapError when truly corrupt)
    return data


def image_and_label(case: Case, instances: list[Any]) -> tuple[bytes, bytes, str]:
    """``(image, label, extension)``: PNG pair for an X-ray, NIfTI pair for a CT (nnU-Net and MONAI layouts)."""
    if case.is_3d:
        volume = volume_of(case, instances)
        return nifti_bytes(volume.image, volume.affine), nifti_bytes(volume.labels, volume.affine), ".nii.gz"
    return png_bytes(pixels.xray_uint8(case.revision.instance)), stored_label_png(case), ".png"


@dataclass
class Writer:
    """Base of the format writers.

    ``prepare`` reads and encodes one case without touching the database (it runs in worker
    threads); the archive members are written in case order by :meth:`write`; ``finish`` adds
    the index files.
    """

    archive: Archive
    options: dict[str, Any] = field(default_factory=dict)
    name: ClassVar[str] = ""
    two_d_only: ClassVar[bool] = False
    one_dimensionality: ClassVar[bool] = False
    readme: ClassVar[str] = ""

    def __post_init__(self) -> None:
        """Per-export state of a writer (none by default)."""

    @classmethod
    def check(cls, cases: list[Case]) -> None:
        """Refuse selections the format cannot hold.

        Raises:
            IncompatibleSelectionError: CT or mixed modalities for a 2D-only format; 2D and 3D mixed.
        """
        modalities = sorted({c.revision.series.modality for c in cases})
        if cls.two_d_only and any(c.is_3d for c in cases):
            raise IncompatibleSelectionError(
                f"{cls.name} is a 2D format for X-rays; the selection holds {', '.join(modalities)} "
                "(choose modality=xray, or export CT as nifti, seg, nnunet or monai)")
        if cls.one_dimensionality and len({c.is_3d for c in cases}) > 1:
            raise IncompatibleSelectionError(
                f"{cls.name} needs one kind of image; the selection mixes modalities {', '.join(modalities)} "
                "(2D X-rays and 3D CT): filter by modality")

    def prepare(self, case: Case, instances: list[Any]) -> Prepared:
        """Read and encode one case (thread-safe, no database access)."""
        raise NotImplementedError

    def write(self, case: Case, prepared: Prepared) -> None:
        """Write a prepared case's members (in the calling thread, in case order)."""
        for entry in prepared.entries:
            if entry.storage_name is not None:
                self.archive.write_stored_file(entry.name, entry.storage_name)
            else:
                self.archive.write_bytes(entry.name, entry.data or b"", compress=entry.compress)

    def finish(self, cases: list[Case], files: dict[str, dict[str, str]]) -> None:
        """Write the format's index files (none by default)."""


class NiftiWriter(Writer):
    name = "nifti"
    readme = ("images/<case>.nii.gz: the image (CT: int16 HU on the series' regular grid; X-ray: uint8, one slice);\n"
              "labels/<case>.nii.gz: uint8 labels 0 background, 1 right lung, 2 left lung, same affine (RAS).")

    def prepare(self, case: Case, instances: list[Any]) -> Prepared:
        volume = volume_of(case, instances)
        files = {"image": f"images/{case.case_id}.nii.gz", "label": f"labels/{case.case_id}.nii.gz"}
        return Prepared([Entry(files["image"], nifti_bytes(volume.image, volume.affine)),
                         Entry(files["label"], nifti_bytes(volume.labels, volume.affine))], files)


class PngWriter(Writer):
    name = "png"
    two_d_only = True
    readme = ("images/<case>.png: the X-ray, 8-bit grey as stored, full resolution;\n"
              "labels/<case>.png: 8-bit labels 0 background, 1 right lung, 2 left lung, same size.")

    def prepare(self, case: Case, instances: list[Any]) -> Prepared:
        image, label, _ = image_and_label(case, instances)
        files = {"image": f"images/{case.case_id}.png", "label": f"labels/{case.case_id}.png"}
        return Prepared([Entry(files["image"], image), Entry(files["label"], label)], files)


def _algorithm_type(case: Case) -> str:
    source = case.revision.source
    if source == "model":
        return "AUTOMATIC"
    return "SEMIAUTOMATIC" if case.revision.parent_id is not None else "MANUAL"


def _proposing_model(revision: Any) -> Any:
    """The model version that proposed the revision's lineage (itself or its nearest model ancestor), or ``None``."""
    rows = type(revision)._base_manager
    model_id, parent_id = revision.model_version_id, revision.parent_id
    for _ in range(10_000):  # a lineage is a chain; bounded in case of a corrupt loop
        if model_id is not None or parent_id is None:
            break
        model_id, parent_id = rows.filter(pk=parent_id).values_list("model_version_id", "parent_id").first() or (None, None)
    if model_id is None:
        return None
    return type(revision)._meta.get_field("model_version").related_model._base_manager.filter(pk=model_id).first()


def seg_dataset(case: Case, datasets: list[Any], labels: np.ndarray, secret: str) -> hd.seg.Segmentation:
    """A DICOM SEG (BINARY, one segment per lung) over the de-identified source images.

    Args:
        datasets: the source instances in label-map slice order (pixel data not needed).
        labels: ``(D, H, W)`` uint8 (``(1, H, W)`` for an X-ray) on the instance grid.
        secret: the project's secret: SEG UIDs are keyed on the revision, so re-exports agree.
    """
    revision = case.revision
    algorithm = _algorithm_type(case)
    identification = None
    if algorithm != "MANUAL":  # DICOM requires the algorithm for AUTOMATIC and SEMIAUTOMATIC segments
        model = _proposing_model(revision)
        name = model.name if model is not None else (revision.method or "model")
        identification = hd.AlgorithmIdentificationSequence(
            name=name, version="1", family=Code("123110", "DCM", "Artificial Intelligence"))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=value, segment_label=SEGMENT_LABELS[value],
            segmented_property_category=Code("91723000", "SCT", "Anatomical Structure"),
            segmented_property_type=SEGMENT_CODES[value], algorithm_type=algorithm,
            algorithm_identification=identification, tracking_uid=remap_uid(secret, f"seg-track:{revision.target_key}:{value}"),
            tracking_id=f"{case.case_id} {LABELS[value]}")
        for value in (1, 2)]
    with warnings.catch_warnings():  # the patient name is the one-component pseudonym, on purpose
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        return _segmentation(datasets, labels, descriptions, revision, secret)


def _segmentation(datasets: list[Any], labels: np.ndarray, descriptions: list[Any], revision: Any,
                  secret: str) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=remap_uid(secret, f"seg-series:{revision.pk}:{revision.checksum}"), series_number=900,
        sop_instance_uid=remap_uid(secret, f"seg-instance:{revision.pk}:{revision.checksum}"), instance_number=1,
        manufacturer="Pleura", manufacturer_model_name="Pleura exports", software_versions="1",
        device_serial_number="0", content_label="LUNGS", content_description=f"Lungs, revision {revision.number}",
        omit_empty_frames=False)


#: Type 2 patient/study attributes highdicom copies from the source images into the SEG.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "AccessionNumber", "StudyID")


def with_type2(ds: Any) -> Any:
    """The in-memory source dataset with empty values for missing type 2 attributes (the file is not changed)."""
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


class SegWriter(Writer):
    name = "seg"
    readme = ("dicom/<case>/<SOPInstanceUID>.dcm: the de-identified source images as stored;\n"
              "seg/<case>.dcm: DICOM SEG (BINARY) with segment 1 'Right Lung' and 2 'Left Lung' (SNOMED CT codes),\n"
              "referencing those instances and their frame of reference (opens in OHIF and 3D Slicer).")

    def prepare(self, case: Case, instances: list[Any]) -> Prepared:
        labels = read_labels(case.revision)
        if labels.ndim == 2:
            labels = labels[np.newaxis]
        if labels.shape[0] != len(instances):
            raise IncompatibleSelectionError(
                f"case {case.case_id}: its label map has {labels.shape[0]} slices but the series has "
                f"{len(instances)} instances; re-run the proposal before exporting it as SEG")
        datasets = [with_type2(pixels.read_dataset(i, pixels=False)) for i in instances]
        buffer = io.BytesIO()
        seg_dataset(case, datasets, labels, self.options["secret"]).save_as(buffer, enforce_file_format=True)
        files = {"image": f"dicom/{case.case_id}/", "label": f"seg/{case.case_id}.dcm"}
        entries = [Entry(f"dicom/{case.case_id}/{i.sop_instance_uid}.dcm", storage_name=i.file.name) for i in instances]
        return Prepared([*entries, Entry(files["label"], buffer.getvalue(), compress=True)], files)


def _folds(cases: list[Case], count: int) -> list[dict[str, list[str]]]:
    train = [c for c in cases if c.split == "train"]
    return [{"train": [c.case_id for c in train if c.fold != k], "val": [c.case_id for c in train if c.fold == k]}
            for k in range(count)]


class NnUNetWriter(Writer):
    name = "nnunet"
    one_dimensionality = True
    readme = ("Dataset<ID>_<name>/imagesTr/<case>_0000.<ext>, labelsTr/<case>.<ext>: training split;\n"
              "imagesTs/<case>_0000.<ext> (labelsTs/ beside it): test split; dataset.json (channel_names, labels,\n"
              "numTraining, file_ending); splits_final.json: patient-level folds of the training split.\n"
              "<ext> is .png for X-rays (nnU-Net's NaturalImage2DIO) and .nii.gz for CT.")

    def _folder(self) -> str:
        name = re.sub(r"[^A-Za-z0-9]", "", self.options.get("project_name", "Pleura").title()) or "Pleura"
        return f"Dataset{int(self.options.get('nnunet_id', 501)):03d}_{name}"

    def prepare(self, case: Case, instances: list[Any]) -> Prepared:
        part = "Tr" if case.split == "train" else "Ts"
        root = self._folder()
        image, label, ext = image_and_label(case, instances)
        files = {"image": f"{root}/images{part}/{case.case_id}_0000{ext}", "label": f"{root}/labels{part}/{case.case_id}{ext}"}
        return Prepared([Entry(files["image"], image), Entry(files["label"], label)], files)

    def finish(self, cases: list[Case], files: dict[str, dict[str, str]]) -> None:
        is_3d = cases[0].is_3d
        root = self._folder()
        self.archive.write_json(f"{root}/dataset.json", {
            "channel_names": {"0": "CT" if is_3d else "xray"},
            "labels": {"background": 0, "right_lung": 1, "left_lung": 2},
            "numTraining": sum(1 for c in cases if c.split == "train"),
            "file_ending": ".nii.gz" if is_3d else ".png",
            "name": root, "description": "Exported by Pleura; provenance in manifest.json at the archive root",
        })
        self.archive.write_json(f"{root}/splits_final.json", _folds(cases, int(self.options.get("folds", 5))))


def coco_annotations(case: Case, labels: np.ndarray) -> list[dict[str, Any]]:
    """One COCO annotation per lung present: compressed RLE (pycocotools), area and bbox in pixels (no ``id`` yet)."""
    out = []
    for value in (1, 2):
        mask = np.asfortranarray(labels == value, dtype=np.uint8)
        if not mask.any():
            continue
        rle = coco_mask.encode(mask)
        x, y, w, h = (float(v) for v in coco_mask.toBbox(rle))
        out.append({"image_id": int(case.revision.pk), "category_id": value,
                    "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                    "area": float(coco_mask.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0})
    return out


class CocoWriter(Writer):
    name = "coco"
    two_d_only = True
    readme = ("images/<case>.png: the X-rays (8-bit, as stored); annotations/train.json and annotations/test.json:\n"
              "COCO instances with one annotation per lung, compressed RLE masks (pycocotools), categories\n"
              "1 'right lung' and 2 'left lung'; image ids are the platform's revision ids.")

    def __post_init__(self) -> None:
        self.entries: dict[str, dict[str, list[dict[str, Any]]]] = {
            split: {"images": [], "annotations": []} for split in ("train", "test")}

    def prepare(self, case: Case, instances: list[Any]) -> Prepared:
        image = pixels.xray_uint8(case.revision.instance)
        files = {"image": f"images/{case.case_id}.png", "label": f"annotations/{case.split}.json"}
        record = {"id": int(case.revision.pk), "file_name": f"{case.case_id}.png",
                  "height": int(image.shape[0]), "width": int(image.shape[1]), "license": 1}
        return Prepared([Entry(files["image"], png_bytes(image))], files,
                        (record, coco_annotations(case, read_labels(case.revision))))

    def write(self, case: Case, prepared: Prepared) -> None:
        super().write(case, prepared)
        record, annotations = prepared.extra
        entry = self.entries[case.split]
        entry["images"].append(record)
        for annotation in annotations:  # ids in case order: the same selection gives the same file
            entry["annotations"].append({"id": sum(len(e["annotations"]) for e in self.entries.values()) + 1,
                                         **annotation})

    def finish(self, cases: list[Case], files: dict[str, dict[str, str]]) -> None:
        categories = [{"id": v, "name": LABELS[v], "supercategory": "lung"} for v in (1, 2)]
        licence = (self.options.get("licence") or "not stated").strip().splitlines()[0][:200]
        for split, entry in self.entries.items():
            self.archive.write_json(f"annotations/{split}.json", {
                "info": {"description": f"Pleura export of project {self.options.get('project_name')} ({split})",
                         "version": "1.0"},
                "licenses": [{"id": 1, "name": licence, "url": ""}],
                "categories": categories, **entry})


class MonaiWriter(Writer):
    name = "monai"
    one_dimensionality = True
    readme = ("images/<case>.<ext>, labels/<case>.<ext> (.png for X-rays, .nii.gz for CT); datalist.json in the\n"
              "MONAI decathlon layout: 'training' (with 'fold') and 'test' lists of {image, label}, paths relative\n"
              "to the archive root (monai.data.load_decathlon_datalist).")

    def prepare(self, case: Case, instances: list[Any]) -> Prepared:
        image, label, ext = image_and_label(case, instances)
        files = {"image": f"images/{case.case_id}{ext}", "label": f"labels/{case.case_id}{ext}"}
        return Prepared([Entry(files["image"], image), Entry(files["label"], label)], files)

    def finish(self, cases: list[Case], files: dict[str, dict[str, str]]) -> None:
        training = [{**files[c.case_id], "fold": c.fold, "case_id": c.case_id} for c in cases if c.split == "train"]
        test = [{**files[c.case_id], "case_id": c.case_id} for c in cases if c.split == "test"]
        self.archive.write_json("datalist.json", {
            "description": f"Pleura export of project {self.options.get('project_name')}",
            "labels": {str(k): v for k, v in LABELS.items()}, "modality": {"0": "CT" if cases[0].is_3d else "xray"},
            "numTraining": len(training), "numTest": len(test), "training": training, "test": test})


WRITERS: dict[str, type[Writer]] = {w.name: w for w in (NiftiWriter, PngWriter, SegWriter, NnUNetWriter, CocoWriter, MonaiWriter)}


def writer_class(fmt: str) -> type[Writer]:
    """The writer of a format name.

    Raises:
        UnknownFormatError: naming the formats that exist.
    """
    if fmt not in WRITERS:
        raise UnknownFormatError(f"unknown export format {fmt!r}; use one of {', '.join(WRITERS)}")
    return WRITERS[fmt]


def check_all(fmt: str, cases: Iterable[Case]) -> None:
    """Refuse an unknown format or a selection the format cannot hold, before any work."""
    writer_class(fmt).check(list(cases))
