"""Find the viewer bundle's entry script and stylesheets in the Vite manifest (frontend/dist/.vite/manifest.json)."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

ENTRY = "src/main.ts"
#: Static prefix the bundle is served under (STATICFILES_DIRS ("viewer", frontend/dist)).
PREFIX = "viewer/"


class ViewerBundleMissing(RuntimeError):
    """frontend/dist has not been built (``make frontend``)."""


def manifest_path() -> Path:
    return Path(settings.REPO_ROOT) / "frontend" / "dist" / ".vite" / "manifest.json"


def viewer_assets(manifest: dict[str, Any], key: str = ENTRY) -> tuple[str, list[str]]:
    """``(entry js, css files)`` relative to the dist folder; CSS of imported chunks is collected recursively."""
    if key not in manifest:
        raise ViewerBundleMissing(f"the Vite manifest has no entry {key!r}; rebuild the frontend (make frontend)")
    css: list[str] = []
    seen: set[str] = set()
    todo = [key]
    while todo:
        chunk = manifest[todo.pop()]
        css += [c for c in chunk.get("css", []) if c not in css]
        for name in chunk.get("imports", []):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return manifest[key]["file"], css


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> tuple[str, tuple[str, ...]]:
    entry, css = viewer_assets(json.loads(Path(path).read_text()))
    return PREFIX + entry, tuple(PREFIX + c for c in css)


def entry_assets() -> tuple[str, tuple[str, ...]]:
    """Static paths (for ``{% static %}``) of the entry script and its stylesheets.

    Raises:
        ViewerBundleMissing: the bundle is not built.
    """
    path = manifest_path()
    if not path.is_file():
        raise ViewerBundleMissing(f"{path} not found: build the viewer with `make frontend`")
    return _load(str(path), path.stat().st_mtime)
