"""Run configurations: YAML files under ``ml/configs/``.

Relative paths inside a config (``data.manifest``, ``output_dir``) resolve against the
repository root, so ``../shared/data/cxr/manifest.csv`` works from any working directory.
The environment variable ``PLEURA_SHARED_DATA`` replaces a leading ``../shared/data``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_PREFIX = "../shared/data"


class ConfigError(ValueError):
    """A run configuration is missing or invalid."""


def resolve_path(value: str | Path) -> Path:
    """Resolve a config path against the repository root (and ``PLEURA_SHARED_DATA``)."""
    text = str(value)
    shared = os.environ.get("PLEURA_SHARED_DATA")
    if shared and text.startswith(SHARED_PREFIX):
        return Path(shared) / text[len(SHARED_PREFIX) :].lstrip("/")
    path = Path(text).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


def load_config(path: Path) -> dict[str, Any]:
    """Read a YAML run configuration.

    Raises:
        ConfigError: the file is missing, not a mapping, or lacks ``modality``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config not found: {path}")
    with path.open() as fh:
        try:
            cfg = yaml.safe_load(fh)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})".replace("\n", " ")) from error
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    if cfg.get("modality") not in {"cxr", "ct"}:
        raise ConfigError(f"{path}: 'modality' must be 'cxr' or 'ct', got {cfg.get('modality')!r}")
    return cfg
