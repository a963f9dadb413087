#!/usr/bin/env python
"""Django's command-line utility for Pleura (the Django project lives in backend/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    """Put backend/ on sys.path and run the requested management command."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "backend"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
