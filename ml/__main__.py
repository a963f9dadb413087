"""``python -m ml train|evaluate|predict|export|bench``."""

from ml.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
