"""Settings of the test suite (pytest-django): the development settings plus what tests need.

``DEBUG=1`` is put in the environment, so the settings take the development defaults and every
process a test starts (workers, ``manage.py``) inherits them; a test of production mode passes
its own ``DEBUG=0`` and ``SECRET_KEY``.
"""

from __future__ import annotations

import os

os.environ.setdefault("DEBUG", "1")

from .settings import *  # noqa: E402,F403

# Django's test client signs in through authenticate() without a request, which django-axes
# refuses; the throttling tests switch it back on (tests/backend/config/test_security.py).
AXES_ENABLED = False
