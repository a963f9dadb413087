"""Selections: which cases an export contains.

A selection is a JSON object with a ``kind``. The ``filter`` kind is implemented here; other
kinds (the dataset versions of the retraining work) plug in with :func:`register_kind`: a parser
from the JSON object to an object with ``project_id``, ``kind``, ``to_dict()`` and
``resolve() -> list[Case]``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from annotation.models import MaskRevision, RevisionStatus
from imaging.models import Modality
from quality.models import QCFlag

from .errors import SelectionError

REVISION_MODES = ("curated", "latest")
QC_MODES = ("any", "unflagged", "flagged")
SPLITS = ("train", "test")
#: ``modality`` values of a selection: one DICOM modality, or ``xray`` for DX and CR together.
MODALITY_GROUPS: dict[str, tuple[str, ...]] = {
    "CT": (Modality.CT,), "DX": (Modality.DX,), "CR": (Modality.CR,), "xray": (Modality.DX, Modality.CR)}


@dataclass(frozen=True)
class Case:
    """One exported target: the chosen revision with its patient-level split and fold."""

    case_id: str
    revision: MaskRevision
    split: str
    fold: int

    @property
    def is_3d(self) -> bool:
        return self.revision.instance_id is None


class Selection(Protocol):
    kind: str
    project_id: int

    def to_dict(self) -> dict[str, Any]: ...

    def resolve(self) -> list[Case]: ...


def case_id(revision: MaskRevision) -> str:
    """Stable case identifier (letters, digits, underscores: valid for nnU-Net): ``xr_000123`` / ``ct_000045``."""
    if revision.instance_id is not None:
        return f"xr_{revision.instance_id:06d}"
    return f"ct_{revision.series_id:06d}"


def split_of(pseudonym: str, test_fraction: float, folds: int) -> tuple[str, int]:
    """Patient-level ``(split, fold)`` from the SHA-256 of the patient pseudonym (stable, no state).

    A patient is in ``test`` when the first 32 bits of ``sha256("split:" + pseudonym)`` fall below
    ``test_fraction``; training patients get fold ``sha256("fold:" + pseudonym) mod folds``
    (``-1`` for test patients).
    """
    draw = int(hashlib.sha256(f"split:{pseudonym}".encode()).hexdigest()[:8], 16) / 2 ** 32
    if draw < test_fraction:
        return "test", -1
    return "train", int(hashlib.sha256(f"fold:{pseudonym}".encode()).hexdigest(), 16) % folds


@dataclass(frozen=True)
class FilterSelection:
    """Cases of one project chosen by filters.

    Attributes:
        project_id: the project (exports never cross projects).
        modality: ``CT``, ``DX``, ``CR``, ``xray`` (DX + CR) or ``None`` for all.
        revisions: ``curated`` (the latest curated revision per target) or ``latest`` (the latest
            revision per target); targets whose latest revision rejects the image are left out.
        date_from, date_to: inclusive range on the chosen revision's creation date (UTC).
        split: ``train``, ``test`` or ``None`` for both.
        qc: ``any``, ``unflagged`` (no raised QC flag) or ``flagged``.
        exclude_flags: names of QC checks whose raised flag excludes a case.
        test_fraction: share of patients in the test split.
        folds: number of patient-level cross-validation folds of the training split.
    """

    project_id: int
    modality: str | None = None
    revisions: str = "curated"
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    split: str | None = None
    qc: str = "any"
    exclude_flags: tuple[str, ...] = field(default_factory=tuple)
    test_fraction: float = 0.2
    folds: int = 5
    kind: str = "filter"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exclude_flags"] = list(self.exclude_flags)
        for key in ("date_from", "date_to"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    def _candidates(self) -> list[int]:
        from .services import _curated_revisions  # the one place that defines "curated" (see there)

        base = MaskRevision.objects.filter(project_id=self.project_id)
        if self.modality:
            base = base.filter(series__modality__in=MODALITY_GROUPS[self.modality])
        latest: dict[str, tuple[int, str]] = {}
        for target, number, status in base.values_list("target_key", "number", "status").order_by("target_key", "number"):
            latest[target] = (number, status)
        pool = _curated_revisions(base) if self.revisions == "curated" else base
        chosen: dict[str, tuple[int, int]] = {}
        for pk, target, number in pool.values_list("pk", "target_key", "number"):
            if latest[target][1] == RevisionStatus.REJECTED:
                continue
            if target not in chosen or number > chosen[target][0]:
                chosen[target] = (number, pk)
        return [pk for _, pk in chosen.values()]

    def resolve(self) -> list[Case]:
        """The selected cases, ordered by case id."""
        qs = MaskRevision.objects.filter(pk__in=self._candidates()).select_related(
            "series__study__patient", "instance", "model_version", "author")
        if self.date_from:
            qs = qs.filter(created_at__date__gte=self.date_from)
        if self.date_to:
            qs = qs.filter(created_at__date__lte=self.date_to)
        if self.qc == "unflagged":
            qs = qs.exclude(qc_flags__flagged=True)
        elif self.qc == "flagged":
            qs = qs.filter(pk__in=QCFlag.objects.filter(flagged=True).values("revision_id"))
        if self.exclude_flags:
            qs = qs.exclude(pk__in=QCFlag.objects.filter(flagged=True, name__in=self.exclude_flags).values("revision_id"))
        cases = []
        for revision in qs:
            split, fold = split_of(revision.series.study.patient.pseudonym, self.test_fraction, self.folds)
            if self.split is None or split == self.split:
                cases.append(Case(case_id(revision), revision, split, fold))
        return sorted(cases, key=lambda c: c.case_id)


def _date(data: dict[str, Any], key: str) -> dt.date | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise SelectionError(f"selection.{key} must be a date YYYY-MM-DD, got {value!r}") from exc


def _choice(data: dict[str, Any], key: str, choices: tuple[str, ...], default: str | None) -> Any:
    value = data.get(key, default)
    if value in (None, "") and default is None:
        return None
    if value not in choices:
        raise SelectionError(f"selection.{key} must be one of {', '.join(choices)}; got {value!r}")
    return value


def parse_filter(data: dict[str, Any]) -> FilterSelection:
    """Validate a ``{"kind": "filter", ...}`` object (see :class:`FilterSelection` for the keys).

    Raises:
        SelectionError: a missing project or a value out of range, named in the message.
    """
    known = set(FilterSelection.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise SelectionError(f"unknown selection key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        project_id = int(data["project_id"])
        test_fraction = float(data.get("test_fraction", 0.2))
        folds = int(data.get("folds", 5))
    except KeyError as exc:
        raise SelectionError("selection.project_id is required") from exc
    except (TypeError, ValueError) as exc:
        raise SelectionError(f"selection.project_id, test_fraction and folds must be numbers ({exc})") from exc
    if not 0.0 <= test_fraction < 1.0:
        raise SelectionError(f"selection.test_fraction must be in [0, 1), got {test_fraction}")
    if not 2 <= folds <= 20:
        raise SelectionError(f"selection.folds must be between 2 and 20, got {folds}")
    flags = data.get("exclude_flags") or []
    if not isinstance(flags, (list, tuple)) or not all(isinstance(f, str) for f in flags):
        raise SelectionError("selection.exclude_flags must be a list of QC check names")
    selection = FilterSelection(
        project_id=project_id, modality=_choice(data, "modality", tuple(MODALITY_GROUPS), None),
        revisions=_choice(data, "revisions", REVISION_MODES, "curated"),
        date_from=_date(data, "date_from"), date_to=_date(data, "date_to"),
        split=_choice(data, "split", SPLITS, None), qc=_choice(data, "qc", QC_MODES, "any"),
        exclude_flags=tuple(sorted(flags)), test_fraction=test_fraction, folds=folds)
    if selection.date_from and selection.date_to and selection.date_from > selection.date_to:
        raise SelectionError(f"selection.date_from {selection.date_from} is after date_to {selection.date_to}")
    return selection


_KINDS: dict[str, Callable[[dict[str, Any]], Selection]] = {"filter": parse_filter}


def register_kind(kind: str, parser: Callable[[dict[str, Any]], Selection]) -> None:
    """Make a selection kind available (e.g. ``dataset_version`` from the retraining work)."""
    _KINDS[kind] = parser


def parse_selection(data: Any) -> Selection:
    """Validate a selection object of any registered kind.

    Raises:
        SelectionError: not an object, or an unknown kind (the message lists the known ones).
    """
    if not isinstance(data, dict):
        raise SelectionError("selection must be a JSON object with a 'kind'")
    body = dict(data)
    kind = body.pop("kind", "filter")
    if kind not in _KINDS:
        raise SelectionError(f"unknown selection kind {kind!r}; available: {', '.join(sorted(_KINDS))}")
    return _KINDS[kind](body)
