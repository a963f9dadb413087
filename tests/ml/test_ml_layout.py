"""The package's import graph flows one way: core ← cxr / ct ← cli / experiments; the backend
uses only the public names of :mod:`ml`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ml

REPO = Path(__file__).resolve().parents[2]
ML = REPO / "ml"
MODALITIES = ("cxr", "ct")
TOP = ("cli", "__main__", "experiments")
"""Sub-packages/modules above the modality packages; ``ml/__init__.py`` (the front door) imports
modality packages only inside its functions."""

MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``ml...`` module a file imports, at any depth (``from ml import x`` counts as ``ml.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "ml")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ml":
            if node.module == "ml":
                found.update(f"ml.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return found


def _layer(module: str) -> str:
    """``core``, a modality name, ``front`` (ml/__init__) or ``top`` for a module ``ml.*``."""
    parts = module.split(".")
    if module == "ml":
        return "front"
    if parts[1] in MODALITIES:
        return parts[1]
    if parts[1] in TOP:
        return "top"
    return "core"


def _ml_files() -> list[Path]:
    return sorted(p for p in ML.rglob("*.py") if "weights" not in p.parts)


@pytest.mark.parametrize("path", _ml_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_flow_one_way(path: Path) -> None:
    """Core imports no modality package nor anything above it; a modality package imports
    neither the other modality nor the CLI or experiments."""
    source = _layer(_module_name(path))
    public = set(ml.__all__)
    for target in _imports(path):
        layer = _layer(target)
        if target.split(".")[1] in public or target == "ml":  # `from ml import LABELS` etc.
            continue
        if source == "core":
            assert layer == "core", f"{path.name}: core module imports {target}"
        elif source in MODALITIES:
            assert layer in ("core", source), f"{path.name}: {source} module imports {target}"


def test_product_does_not_import_experiments() -> None:
    """Nothing outside ``ml/experiments`` (CLI, modality packages, backend) imports it."""
    product = [p for p in _ml_files() if "experiments" not in p.parts] + sorted((REPO / "backend").rglob("*.py"))
    offenders = [str(p.relative_to(REPO)) for p in product
                 if any(t.startswith("ml.experiments") for t in _imports(p))]
    assert offenders == []


def test_backend_imports_only_public_names() -> None:
    """``backend/`` imports nothing from ml but the names in ``ml.__all__``."""
    bad: list[str] = []
    for path in sorted((REPO / "backend").rglob("*.py")):
        for target in _imports(path) - {"ml"}:
            if target.split(".", 1)[1] not in ml.__all__:
                bad.append(f"{path.relative_to(REPO)}: {target}")
    assert bad == []


def test_public_names_resolve() -> None:
    """Every name in ``ml.__all__`` exists (the lazy ones import on access)."""
    missing = [name for name in ml.__all__ if not hasattr(ml, name)]
    assert missing == []


def test_long_modules_say_why() -> None:
    """A module over ~500 lines states why in its docstring (the word "lines")."""
    unexplained = []
    for path in _ml_files():
        if len(path.read_text().splitlines()) > MAX_LINES:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            if "lines" not in doc:
                unexplained.append(str(path.relative_to(REPO)))
    assert unexplained == []


def test_modalities_share_verbs() -> None:
    """``ml/cxr`` and ``ml/ct`` offer the same verbs as modules."""
    verbs = {"api", "data", "preprocessing", "inference", "postprocess", "evaluation", "train", "classical",
             "packaging"}
    for modality in MODALITIES:
        present = {p.stem for p in (ML / modality).glob("*.py")}
        assert verbs <= present, f"ml/{modality} lacks {sorted(verbs - present)}"
