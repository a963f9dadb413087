"""Provenance of exported cases and the dataset hash.

The provenance of a case says where it comes from (pseudonymous patient/study/series ids, the
image files' SHA-256), which label it carries (the revision, its label map's SHA-256) and how
that label came to be (the revision chain: model version that proposed, annotators, actions,
timestamps, time spent; QC flags). It holds no file name of the archive, so that the
**dataset hash** — the SHA-256 of the canonical JSON of the label schema and every case's
provenance, cases ordered by id — is the same for the same selection whatever the format, and
changes whenever an image, a label or its curation state changes.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from annotation.models import AnnotationTask, MaskRevision, TaskAction
from annotation.review.models import ReviewDecision
from quality.models import QCFlag

from .selection import Case

HASH_DEFINITION = ("sha256 of the canonical JSON (sorted keys, no whitespace, UTF-8) of "
                   "{'label_schema': ..., 'cases': [provenance of each case, ordered by case_id]}")


def canonical_json(value: Any) -> bytes:
    """The JSON the dataset hash is computed over: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def dataset_hash(label_schema: Any, provenance: list[dict[str, Any]]) -> str:
    """SHA-256 hex of the canonical JSON of the label schema and the ordered case provenance."""
    ordered = sorted(provenance, key=lambda p: p["case_id"])
    return hashlib.sha256(canonical_json({"label_schema": label_schema, "cases": ordered})).hexdigest()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _chains(cases: list[Case]) -> tuple[dict[str, list[dict[str, Any]]], dict[int, dict[str, Any]]]:
    keys = [c.revision.target_key for c in cases]
    rows = list(MaskRevision.objects.filter(target_key__in=keys).values(
        "pk", "target_key", "number", "parent_id", "source", "status", "method", "created_at",
        "model_version__name", "author__username"))
    actions = {a["revision_id"]: a for a in TaskAction.objects.filter(revision_id__in=[r["pk"] for r in rows]).values(
        "revision_id", "kind", "time_spent_s", "author__username", "reason")}
    by_target: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_target[row["target_key"]].append(row)
    return by_target, actions


def _chain_of(revision: MaskRevision, rows: list[dict[str, Any]], actions: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    by_pk = {r["pk"]: r for r in rows}
    chain, pk = [], revision.pk
    while pk is not None and pk in by_pk:
        row = by_pk[pk]
        action = actions.get(pk)
        chain.append({
            "revision_id": pk, "number": row["number"], "source": row["source"], "status": row["status"],
            "method": row["method"], "model_version": row["model_version__name"], "author": row["author__username"],
            "created_at": _iso(row["created_at"]),
            "action": action["kind"] if action else None,
            "time_spent_s": action["time_spent_s"] if action else None,
        })
        pk = row["parent_id"]
    return chain[::-1]


def _instance_hashes(cases: list[Case]) -> dict[int, tuple[str, int, str | None]]:
    """Per series: (SHA-256 over its instances' SHA-256 in slice order, instance count, first SOP UID)."""
    from imaging.models import Instance

    series_ids = {c.revision.series_id for c in cases if c.is_3d}
    digests: dict[int, Any] = {}
    counts: dict[int, int] = defaultdict(int)
    rows = Instance.objects.filter(series_id__in=series_ids).order_by("series_id", "slice_location", "instance_number", "id")
    for series_id, sha in rows.values_list("series_id", "sha256"):
        digests.setdefault(series_id, hashlib.sha256()).update(sha.encode())
        counts[series_id] += 1
    return {sid: (d.hexdigest(), counts[sid], None) for sid, d in digests.items()}


def _reviews(revision_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The review decision that curated each revision: ``{"by": username or "system", "decision", "at"}``."""
    decisions = (ReviewDecision.objects.filter(result_revision_id__in=revision_ids)
                 .order_by("created_at", "pk").values("result_revision_id", "kind", "reviewer__username", "created_at"))
    return {d["result_revision_id"]: {"by": d["reviewer__username"] or "system", "decision": d["kind"],
                                      "at": d["created_at"].isoformat()} for d in decisions}


def provenance(cases: list[Case]) -> list[dict[str, Any]]:
    """Per-case provenance (see module docstring), in the order of ``cases``; a few bulk queries."""
    chains, actions = _chains(cases)
    tasks = {t["target_key"]: t for t in AnnotationTask.objects.filter(
        target_key__in=[c.revision.target_key for c in cases]).values("target_key", "status", "time_spent_s")}
    flags: dict[int, dict[str, Any]] = defaultdict(dict)
    for flag in QCFlag.objects.filter(revision_id__in=[c.revision.pk for c in cases]).values(
            "revision_id", "name", "value", "unit", "flagged"):
        flags[flag["revision_id"]][flag["name"]] = {"value": flag["value"], "unit": flag["unit"], "flagged": flag["flagged"]}
    series_hashes = _instance_hashes(cases)
    reviews = _reviews([c.revision.pk for c in cases])
    out = []
    for case in cases:
        revision = case.revision
        series = revision.series
        chain = _chain_of(revision, chains[revision.target_key], actions)
        if case.is_3d:
            image_sha, count, sop = series_hashes.get(series.pk, ("", 0, None))
        else:
            image_sha, count, sop = revision.instance.sha256, 1, revision.instance.sop_instance_uid
        task = tasks.get(revision.target_key)
        out.append({
            "case_id": case.case_id, "modality": series.modality, "dimensions": 3 if case.is_3d else 2,
            "patient": series.study.patient.pseudonym, "study_uid": series.study.study_instance_uid,
            "series_uid": series.series_instance_uid, "sop_instance_uid": sop, "instances": count,
            "image_sha256": image_sha, "split": case.split, "fold": case.fold,
            "label": {"revision_id": revision.pk, "number": revision.number, "status": revision.status,
                      "source": revision.source, "sha256": revision.checksum, "shape": revision.shape,
                      "spacing_mm": revision.spacing},
            "chain": chain,
            "proposed_by": next((c["model_version"] for c in chain if c["source"] == "model"), None),
            "annotators": sorted({c["author"] for c in chain if c["author"]}),
            "reviewer": reviews.get(revision.pk),
            "time_spent_s": task["time_spent_s"] if task else None,
            "qc": {"flagged": sorted(n for n, f in flags[revision.pk].items() if f["flagged"]),
                   "flags": flags[revision.pk]},
        })
    return out
