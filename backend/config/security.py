"""Start-up checks that make a production configuration fail closed (see docs/deploy.md)."""

from __future__ import annotations

import math
from collections import Counter

from django.core.exceptions import ImproperlyConfigured

#: The key the embedded default (DEBUG on) signs with; never accepted with DEBUG off.
DEVELOPMENT_SECRET_KEY = "pleura-insecure-development-key-do-not-use-in-production"
MIN_SECRET_KEY_LENGTH = 50
#: Estimated from the key's own character frequencies (length × Shannon entropy per character).
MIN_SECRET_KEY_BITS = 128.0
GENERATE_HINT = "generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"


def estimated_entropy_bits(key: str) -> float:
    """Length × the empirical Shannon entropy of the key's characters, in bits.

    A rough upper bound (it cannot see dictionary words), good enough to refuse repeated or
    short keys: ``"a" * 64`` scores 0, a ``secrets.token_urlsafe(50)`` key about 350.
    """
    if not key:
        return 0.0
    counts = Counter(key)
    per_char = -sum((n / len(key)) * math.log2(n / len(key)) for n in counts.values())
    return len(key) * per_char


def require_strong_secret_key(key: str) -> str:
    """Return ``key`` when it may sign sessions in production, else raise ImproperlyConfigured.

    Refused: empty, the development key, Django's ``django-insecure-`` keys, shorter than
    :data:`MIN_SECRET_KEY_LENGTH` characters, or under :data:`MIN_SECRET_KEY_BITS` estimated bits.
    """
    if not key:
        raise ImproperlyConfigured(f"SECRET_KEY must be set when DEBUG is off; {GENERATE_HINT}")
    if key == DEVELOPMENT_SECRET_KEY or key.startswith("django-insecure-"):
        raise ImproperlyConfigured(f"SECRET_KEY is the published development key; {GENERATE_HINT}")
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ImproperlyConfigured(
            f"SECRET_KEY has {len(key)} characters, at least {MIN_SECRET_KEY_LENGTH} are needed; {GENERATE_HINT}"
        )
    bits = estimated_entropy_bits(key)
    if bits < MIN_SECRET_KEY_BITS:
        raise ImproperlyConfigured(
            f"SECRET_KEY is too predictable (about {bits:.0f} bits, at least {MIN_SECRET_KEY_BITS:.0f} needed: "
            f"repeated characters or a pattern); {GENERATE_HINT}"
        )
    return key
