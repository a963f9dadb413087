"""Training runs: fine-tune (or train from scratch) an ``ml`` model on an exported manifest.

:func:`create_run` records a :class:`TrainingRun` (config, dataset hash, code version, seed); at most
one active run per project and modality and one per dataset version (database constraints).
:func:`run_training` (the body of the ``train`` queue's task) runs ``python -m ml train`` as a child
process, so that the worker can stream its progress (``metrics.csv``, one row per epoch) into the
run, cancel it (the child is terminated) and survive its crash; a run started again resumes from
the run folder's ``last.pt``. The best checkpoint is packaged with ``python -m ml.cxr.packaging``
and registered as a *candidate* :class:`ModelVersion`; nothing here changes the champion.
"""

from __future__ import annotations

import copy
import csv
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import ModelModality, ModelVersion, RunStatus, TrainingRun

logger = logging.getLogger(__name__)

#: Base configs per modality (``PLEURA_TRAIN_BASE_CONFIGS`` overrides); the dataset, seed and start weights are filled in.
DEFAULT_BASE_CONFIGS: dict[str, str] = {"cxr": "ml/configs/cxr_stage2.yaml"}


class TrainingError(RuntimeError):
    """A training run cannot be created or did not produce a model (names the run and the reason)."""


class RunConflictError(TrainingError):
    """Another run of the project and modality is active, or this dataset version was already trained on."""


def code_version() -> str:
    """``git describe --always --dirty`` of the repository, or ``"unknown"`` outside a checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=settings.REPO_ROOT,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, nested dicts key by key (neither argument is changed)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else copy.deepcopy(value)
    return merged


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else Path(settings.REPO_ROOT) / path


def build_config(modality: str, manifest: str, name: str, init_from: ModelVersion | None, seed: int,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``ml`` training config of a run: the modality's base config, the dataset, seed and start weights.

    Fine-tuning takes the architecture and input size from the start model's card so that its weights fit.

    Raises:
        TrainingError: no base config for the modality.
    """
    base_path = (getattr(settings, "PLEURA_TRAIN_BASE_CONFIGS", None) or DEFAULT_BASE_CONFIGS).get(modality)
    if modality != ModelModality.CXR or not base_path:
        raise TrainingError(f"retraining of {modality} models is not available yet (X-ray only)")
    config = yaml.safe_load(_resolve(base_path).read_text())
    config = deep_merge(config, {"name": name, "data": {"manifest": manifest, "train_split": "train",
                                                         "val_split": "val"}, "train": {"seed": seed}})
    config["model"].pop("init_from", None)
    if init_from is not None:
        card = init_from.card or {}
        config["model"]["init_from"] = str(_resolve(init_from.weights_file))
        if card.get("architecture"):  # the start model's network as it is (its kwargs replace the base's)
            config["model"].update(architecture=card["architecture"], network_kwargs=card.get("network_kwargs") or {})
        if card.get("input_size"):
            config["data"]["size"] = int(card["input_size"][-1])
    return deep_merge(config, overrides or {})


def create_run(*, project: Any, modality: str, dataset_version_id: int, dataset_sha256: str, manifest: str,
               from_scratch: bool = False, seed: int = 42, overrides: dict[str, Any] | None = None) -> TrainingRun:
    """Record a queued run (fine-tuned from the champion unless ``from_scratch``).

    Raises:
        RunConflictError: a run of the project and modality is queued or running, or this dataset
            version already has a run that did not fail.
        TrainingError: no champion to fine-tune from, or no base config.
    """
    from .services import NoChampionError, champion

    try:
        init_from = None if from_scratch else champion(modality)
    except NoChampionError as exc:
        raise TrainingError(f"{exc}; train from scratch instead") from exc
    name = f"p{project.pk}-{modality}-{dataset_sha256[:12]}-{timezone.now():%Y%m%d%H%M%S%f}"
    output_dir = Path(settings.PLEURA_DATA_DIR) / "training" / name
    config = build_config(modality, manifest, name, init_from, seed, overrides)
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                name=name, modality=modality, config=config, output_dir=str(output_dir), project=project,
                dataset_version_id=dataset_version_id, dataset_sha256=dataset_sha256, manifest=manifest,
                init_from=init_from, seed=seed, code_version=code_version())
    except IntegrityError as exc:
        raise RunConflictError(
            f"project {project.pk} ({modality}): a training run is already active, or dataset {dataset_sha256[:12]} "
            "was already trained on") from exc
    logger.info("training run %s queued (%s, from %s)", name, modality, init_from.name if init_from else "scratch")
    return run


def request_cancel(run: TrainingRun) -> TrainingRun:
    """Ask a queued or running run to stop; the worker terminates the training process at its next poll.

    A queued run is cancelled at once.
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status == RunStatus.QUEUED:
            run.status, run.finished_at, run.error = RunStatus.CANCELLED, timezone.now(), "cancelled before it started"
        elif run.status == RunStatus.RUNNING:
            run.cancel_requested = True
        else:
            raise TrainingError(f"training run {run.name} is {run.status}: nothing to cancel")
        run.save(update_fields=["status", "finished_at", "error", "cancel_requested"])
    return run


def _claim(run_id: int) -> TrainingRun | None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            logger.info("training run %s is %s: nothing to do", run_id, getattr(run, "status", "gone"))
            return None
        timeout = float(getattr(settings, "PLEURA_TRAIN_HEARTBEAT_TIMEOUT_S", 600))
        if run.status == RunStatus.RUNNING and run.heartbeat_at and \
                run.heartbeat_at > timezone.now() - timezone.timedelta(seconds=timeout):
            logger.info("training run %s is running on %s (fresh heartbeat): not started twice", run.name, run.worker)
            return None
        run.status, run.attempts, run.worker = RunStatus.RUNNING, run.attempts + 1, f"{socket.gethostname()}:{os.getpid()}"
        run.started_at, run.heartbeat_at = run.started_at or timezone.now(), timezone.now()
        run.save(update_fields=["status", "attempts", "worker", "started_at", "heartbeat_at"])
    return run


def read_progress(output_dir: Path) -> list[dict[str, Any]]:
    """The rows of the run folder's ``metrics.csv`` (one per finished epoch), numbers as floats."""
    path = output_dir / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: _number(v) for k, v in row.items()} for row in rows]


def _number(value: str) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _finish(run: TrainingRun, status: str, error: str = "") -> TrainingRun:
    run.status, run.error, run.finished_at = status, error[-4000:], timezone.now()
    run.progress = read_progress(Path(run.output_dir))
    run.save(update_fields=["status", "error", "finished_at", "progress"])
    logger.log(logging.ERROR if status == RunStatus.FAILED else logging.INFO, "training run %s %s%s", run.name,
               status, f": {error[-500:]}" if error else "")
    return run


def _log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def _python(*args: str, log: Path) -> subprocess.Popen:
    handle = log.open("a")
    return subprocess.Popen([sys.executable, *args], cwd=settings.REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT)


def run_training(run_id: int) -> ModelVersion | None:
    """Train, package and register the run's model as a candidate; ``None`` when cancelled, failed or done before.

    Progress is copied into the run every ``PLEURA_TRAIN_POLL_S`` seconds (default 2) with a heartbeat.
    """
    run = _claim(run_id)
    if run is None:
        return None
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(run.config, sort_keys=False))
    log = out / "train.log"
    child = _python("-m", "ml", "train", "--config", str(config_path), "--output-dir", str(out), log=log)
    poll = float(getattr(settings, "PLEURA_TRAIN_POLL_S", 2.0))
    while child.poll() is None:
        time.sleep(poll)
        TrainingRun.objects.filter(pk=run.pk).update(progress=read_progress(out), heartbeat_at=timezone.now())
        if TrainingRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
            child.terminate()
            child.wait(timeout=60)
            _finish(run, RunStatus.CANCELLED, "cancelled by request")
            return None
    if child.returncode != 0:
        _finish(run, RunStatus.FAILED, f"ml train exited with {child.returncode}:\n{_log_tail(log)}")
        return None
    return _register(run, out, log)


def _register(run: TrainingRun, out: Path, log: Path) -> ModelVersion | None:
    """Package ``best.pt`` as weights + card and register it as a candidate linked to the run."""
    from ml import ModelCard

    from .services import sync_registry

    weights_dir = out / "candidate"
    packaging = _python("-m", "ml.cxr.packaging", str(out / "best.pt"), "--name", run.name,
                        "--weights-dir", str(weights_dir), log=log)
    if packaging.wait() != 0:
        _finish(run, RunStatus.FAILED, f"packaging failed:\n{_log_tail(log)}")
        return None
    with transaction.atomic():
        (version,) = sync_registry([ModelCard.from_file(weights_dir / f"{run.name}.json")])
        version.training_run = run
        version.save(update_fields=["training_run", "updated_at"])
        _finish(run, RunStatus.SUCCEEDED)
    logger.info("training run %s registered candidate %s", run.name, version.name)
    return version


def recover_stale_runs(heartbeat_timeout_s: float, max_attempts: int = 2) -> list[TrainingRun]:
    """Runs whose worker died (no heartbeat for ``heartbeat_timeout_s``): queued again to resume from
    ``last.pt`` while attempts remain, otherwise failed with the reason. Returns the runs queued again."""
    cutoff = timezone.now() - timezone.timedelta(seconds=heartbeat_timeout_s)
    resumed: list[TrainingRun] = []
    for run in TrainingRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff):
        if run.attempts >= max_attempts:
            _finish(run, RunStatus.FAILED, f"worker {run.worker} stopped sending heartbeats (last {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC) "
                                           f"after {run.attempts} attempt(s)")
            continue
        TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)
        resumed.append(run)
    return resumed
