"""Pleura settings: one module, configured from the environment.

Embedded default (``DEBUG=1``, as ``make demo`` and ``make serve`` set it): SQLite file, Celery
tasks executed in-process, files on local disk, everything under ``PLEURA_DATA_DIR`` (default
``<repo>/var``). Without ``DEBUG=1`` the settings fail closed: production mode needs a strong
``SECRET_KEY`` and sets ``DATABASE_URL`` (PostgreSQL), ``REDIS_URL`` (Celery broker) and
``ALLOWED_HOSTS``; see docs/backend.md for every variable and docs/deploy.md for a deployment.
"""

from __future__ import annotations

import json
import mimetypes
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE, WASM_UNSAFE_EVAL
from django.core.exceptions import ImproperlyConfigured

from .security import DEVELOPMENT_SECRET_KEY, require_strong_secret_key


def _env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable (1/0, true/false, yes/no, on/off)."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def _env_int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


BACKEND_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BACKEND_DIR.parent
PLEURA_DATA_DIR = Path(os.environ.get("PLEURA_DATA_DIR") or REPO_ROOT / "var").resolve()

# --- Security: fail closed. DEBUG only when asked for (make demo / make serve / tests) -------
DEBUG = _env_bool("DEBUG", False)
if DEBUG:
    SECRET_KEY = os.environ.get("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
else:  # a missing, published or weak key stops every process with a message saying what to do
    SECRET_KEY = require_strong_secret_key(os.environ.get("SECRET_KEY", ""))
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our static files: no CDN needed
    "axes",  # login throttling (django-axes)
    "csp",  # Content-Security-Policy header (django-csp)
    "django_celery_beat",  # periodic tasks (job sweep, later retraining) kept in the database
    "accounts",
    "imaging",
    "modeling",
    "annotation",
    "quality",
    "exports",
    "administration",
    "retraining",
    "workbench",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lock-out into a 429 answer
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/queue/"
LOGOUT_REDIRECT_URL = "/login/"
#: Bytes of decoded revision label maps each web process keeps (least recently used first out).
PLEURA_REVISION_CACHE_BYTES = _env_int("PLEURA_REVISION_CACHE_BYTES", 128 * 1024 * 1024)
#: Seconds an annotator's claim on a task lasts without activity (renewed by autosaves).
PLEURA_TASK_LEASE_S = _env_int("PLEURA_TASK_LEASE_S", 1800)

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: DATABASE_URL, or an SQLite file under the data folder -------------------------
if not os.environ.get("DATABASE_URL"):
    PLEURA_DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{PLEURA_DATA_DIR / 'pleura.sqlite3'}",
        conn_max_age=_env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Authentication: Django's four password validators, login throttling (django-axes) -------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": _env_int("PLEURA_PASSWORD_MIN_LENGTH", 12)}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes counts failed logins of /login/, /admin/login/ and /api/auth/token/ (anything that
# calls authenticate()) per username and client address and answers 429 while locked out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = _env_bool("PLEURA_LOGIN_THROTTLE", True)
AXES_FAILURE_LIMIT = _env_int("PLEURA_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=_env_int("PLEURA_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (built frontend is served by WhiteNoise) ------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BACKEND_DIR / "static_build"
try:  # WhiteNoise warns on every request while the folder is missing (before collectstatic)
    STATIC_ROOT.mkdir(exist_ok=True)
except OSError:
    pass
_FRONTEND_DIST = REPO_ROOT / "frontend" / "dist"
# The viewer bundle is built with Vite base /static/viewer/ (docs/viewer-api.md).
STATICFILES_DIRS = [("viewer", _FRONTEND_DIST)] if _FRONTEND_DIST.is_dir() else []
mimetypes.add_type("application/wasm", ".wasm")

# --- Stored files: Django storage API ------------------------------------------------------
# PLEURA_STORAGE=local (default): FileSystemStorage under <data dir>/media.
# PLEURA_STORAGE=s3: django-storages' S3Storage (pip install django-storages[s3]; configure
# with AWS_STORAGE_BUCKET_NAME, AWS_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... see docs/backend.md).
# Any other value is taken as the dotted path of a storage backend class.
PLEURA_STORAGE = os.environ.get("PLEURA_STORAGE", "local")
MEDIA_ROOT = PLEURA_DATA_DIR / "media"
MEDIA_URL = "/media/"
if PLEURA_STORAGE == "local":
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    }
elif PLEURA_STORAGE == "s3":
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", "pleura"),
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _default_storage = {"BACKEND": PLEURA_STORAGE}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Uploads: kept in memory (never spooled raw to disk before de-identification) -----------
PLEURA_MAX_UPLOAD_BYTES = _env_int("PLEURA_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024)
PLEURA_ZIP_MAX_TOTAL_BYTES = _env_int("PLEURA_ZIP_MAX_TOTAL_BYTES", 4 * 1024 * 1024 * 1024)
PLEURA_ZIP_MAX_RATIO = _env_int("PLEURA_ZIP_MAX_RATIO", 200)
PLEURA_ZIP_MAX_MEMBERS = _env_int("PLEURA_ZIP_MAX_MEMBERS", 20000)
PLEURA_MAX_IMAGE_PIXELS = _env_int("PLEURA_MAX_IMAGE_PIXELS", 100_000_000)
FILE_UPLOAD_HANDLERS = ["imaging.uploads.LimitedMemoryUploadHandler"]
FILE_UPLOAD_MAX_MEMORY_SIZE = PLEURA_MAX_UPLOAD_BYTES
DATA_UPLOAD_MAX_NUMBER_FILES = _env_int("PLEURA_MAX_UPLOAD_FILES", 5000)

# --- Upload limits: what one upload may make a web worker inflate and decode ------------------
# Declared sizes (DICOM Rows/Columns/NumberOfFrames/BitsAllocated, NIfTI dims, PNG/JPEG headers,
# zip directories) are checked against these before anything is allocated for them
# (imaging.limits; docs/backend.md "Bounded memory for any input"); the request body itself is
# refused from its Content-Length. PLEURA_MAX_IMAGE_PIXELS above
# caps one 2-D image (DICOM frame, PNG/JPEG, NIfTI slice); PLEURA_ZIP_MAX_RATIO also applies to
# .nii.gz streams.
PLEURA_UPLOAD_MAX_REQUEST_BYTES = _env_int("PLEURA_UPLOAD_MAX_REQUEST_BYTES", 2 * 1024 * 1024 * 1024)
PLEURA_UPLOAD_MAX_INFLATED_BYTES = _env_int("PLEURA_UPLOAD_MAX_INFLATED_BYTES", 2 * 1024 * 1024 * 1024)
PLEURA_UPLOAD_MAX_DECODED_BYTES = _env_int("PLEURA_UPLOAD_MAX_DECODED_BYTES", 2 * 1024 * 1024 * 1024)

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: anonymous API calls get 401 with "WWW-Authenticate: Token".
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Pleura API",
    "DESCRIPTION": "Lung segmentation platform: projects, imaging data, uploads and WADO-URI.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # bundled assets: the docs work on sites without internet
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ModalityEnum": "imaging.models.Modality",
        "XrayModalityEnum": "imaging.models.XRAY_MODALITIES",
        "ModelModalityEnum": "modeling.models.ModelModality",
    },
}

# --- Celery -----------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"  # a host named: kombu warns without one
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_ALWAYS_EAGER = _env_bool("PLEURA_CELERY_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("PLEURA_DEFAULT_QUEUE", "cpu")
# Routing: JSON mapping of task-name patterns to queues, e.g. '{"modeling.tasks.*": {"queue": "gpu"}}'.
CELERY_TASK_ROUTES = json.loads(os.environ.get("PLEURA_TASK_ROUTES") or "{}")
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
# A request that queues work must not hang on an unreachable broker: connecting gives up after
# PLEURA_BROKER_TIMEOUT_S seconds, a command without answer after PLEURA_BROKER_SOCKET_TIMEOUT_S,
# and a send is tried PLEURA_BROKER_PUBLISH_RETRIES + 1 times (config.celery.publish then stops
# trying for 30 s). The job row stays "pending" and the sweep sends it later.
PLEURA_BROKER_TIMEOUT_S = float(_env_int("PLEURA_BROKER_TIMEOUT_S", 2))
PLEURA_BROKER_SOCKET_TIMEOUT_S = float(_env_int("PLEURA_BROKER_SOCKET_TIMEOUT_S", 5))
CELERY_BROKER_CONNECTION_TIMEOUT = PLEURA_BROKER_TIMEOUT_S
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": _env_int("PLEURA_BROKER_PUBLISH_RETRIES", 0),
    "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5,
}
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = PLEURA_BROKER_TIMEOUT_S  # result backend (same Redis)
CELERY_REDIS_SOCKET_TIMEOUT = PLEURA_BROKER_SOCKET_TIMEOUT_S
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": CELERY_TASK_PUBLISH_RETRY_POLICY}

# Retraining (docs/retraining.md): dataset splits, schedules, training runs, promotion gate.
PLEURA_RETRAIN_TEST_FRACTION = float(os.environ.get("PLEURA_RETRAIN_TEST_FRACTION", "0.2"))
PLEURA_RETRAIN_VAL_FRACTION = float(os.environ.get("PLEURA_RETRAIN_VAL_FRACTION", "0.1"))
PLEURA_RETRAIN_SPLIT_SEED = _env_int("PLEURA_RETRAIN_SPLIT_SEED", 21)
PLEURA_RETRAIN_MIN_NEW_LABELS = _env_int("PLEURA_RETRAIN_MIN_NEW_LABELS", 50)
PLEURA_RETRAIN_NIGHTLY_HOUR = _env_int("PLEURA_RETRAIN_NIGHTLY_HOUR", 2)
PLEURA_DATASETS_DIR = os.environ.get("PLEURA_DATASETS_DIR") or None  # default <PLEURA_DATA_DIR>/datasets
PLEURA_TRAIN_OVERRIDES = json.loads(os.environ.get("PLEURA_TRAIN_OVERRIDES") or "{}")
PLEURA_TRAIN_POLL_S = float(os.environ.get("PLEURA_TRAIN_POLL_S", "2"))
PLEURA_TRAIN_HEARTBEAT_TIMEOUT_S = float(os.environ.get("PLEURA_TRAIN_HEARTBEAT_TIMEOUT_S", "600"))
PLEURA_TRAIN_MAX_ATTEMPTS = _env_int("PLEURA_TRAIN_MAX_ATTEMPTS", 2)
PLEURA_GATE_REFERENCE_MARGIN = float(os.environ.get("PLEURA_GATE_REFERENCE_MARGIN", "0.002"))
_REFERENCE_SETS = os.environ.get("PLEURA_REFERENCE_SETS")
PLEURA_REFERENCE_SETS = json.loads(_REFERENCE_SETS) if _REFERENCE_SETS else None  # None: the shipped data's test split
# Redis redelivers an unacknowledged message (worker killed mid-task) after this many seconds;
# the job sweep below requeues such a job within minutes, so this is only a last resort.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _env_int("PLEURA_BROKER_VISIBILITY_TIMEOUT", 3600),
    "socket_connect_timeout": PLEURA_BROKER_TIMEOUT_S,
    "socket_timeout": PLEURA_BROKER_SOCKET_TIMEOUT_S,
    "max_retries": CELERY_TASK_PUBLISH_RETRY_POLICY["max_retries"],  # kombu: connection attempts on first use
}
# Periodic tasks (django-celery-beat): `celery -A config beat -S django_celery_beat.schedulers:DatabaseScheduler`.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Proposal jobs (modeling): device ("" = CUDA when present, else CPU), retries and first backoff (s).
PLEURA_DEVICE = os.environ.get("PLEURA_DEVICE", "")
PLEURA_PROPOSAL_MAX_RETRIES = _env_int("PLEURA_PROPOSAL_MAX_RETRIES", 3)
PLEURA_PROPOSAL_RETRY_BACKOFF = _env_int("PLEURA_PROPOSAL_RETRY_BACKOFF", 5)
# Time limits per proposal (s): the soft limit fails the job with a clear error, the hard one kills
# the worker child (prefork pool; the sweep fails a job running past its hard limit in any pool).
PLEURA_CXR_SOFT_TIME_LIMIT_S = _env_int("PLEURA_CXR_SOFT_TIME_LIMIT_S", 120)
PLEURA_CXR_TIME_LIMIT_S = _env_int("PLEURA_CXR_TIME_LIMIT_S", 180)
PLEURA_CT_SOFT_TIME_LIMIT_S = _env_int("PLEURA_CT_SOFT_TIME_LIMIT_S", 900)
PLEURA_CT_TIME_LIMIT_S = _env_int("PLEURA_CT_TIME_LIMIT_S", 1200)
# A CT series with more slices than this is refused (job failed with the reason), never run.
PLEURA_CT_MAX_SLICES = _env_int("PLEURA_CT_MAX_SLICES", 1500)
# Job sweep (beat): every PLEURA_JOB_SWEEP_INTERVAL_S it sends jobs still waiting for the broker,
# and requeues running jobs whose worker has given no heartbeat for PLEURA_JOB_STALE_S (a killed
# worker); workers beat every PLEURA_JOB_HEARTBEAT_S. A job lost this many times is failed.
PLEURA_JOB_SWEEP_INTERVAL_S = _env_int("PLEURA_JOB_SWEEP_INTERVAL_S", 60)
PLEURA_JOB_HEARTBEAT_S = _env_int("PLEURA_JOB_HEARTBEAT_S", 30)
PLEURA_JOB_STALE_S = _env_int("PLEURA_JOB_STALE_S", 180)
PLEURA_JOB_MAX_ATTEMPTS = _env_int("PLEURA_JOB_MAX_ATTEMPTS", 3)
if PLEURA_JOB_STALE_S < 2 * PLEURA_JOB_HEARTBEAT_S:
    raise ImproperlyConfigured("PLEURA_JOB_STALE_S must be at least twice PLEURA_JOB_HEARTBEAT_S, or live jobs "
                               "would be requeued")
if PLEURA_CXR_SOFT_TIME_LIMIT_S > PLEURA_CXR_TIME_LIMIT_S or PLEURA_CT_SOFT_TIME_LIMIT_S > PLEURA_CT_TIME_LIMIT_S:
    raise ImproperlyConfigured("a soft time limit (PLEURA_*_SOFT_TIME_LIMIT_S) must not exceed its hard one "
                               "(PLEURA_*_TIME_LIMIT_S)")

# --- Worker processes: recycled so memory is returned ---------------------------------------
# (the web side is in gunicorn.conf.py: max_requests). Applies to the prefork pool (the default).
CELERY_WORKER_MAX_TASKS_PER_CHILD = _env_int("PLEURA_WORKER_MAX_TASKS_PER_CHILD", 100)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = _env_int("PLEURA_WORKER_MAX_MEMORY_KB", 4 * 1024 * 1024)  # KiB resident

# Dataset exports: threads that read and encode cases in parallel (docs/exports.md).
PLEURA_EXPORT_THREADS = _env_int("PLEURA_EXPORT_THREADS", 2)

# --- Logging ----------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PLEURA_LOG_LEVEL", "INFO")},
}

# --- Browser security headers ------------------------------------------------------------------
# Content-Security-Policy (django-csp): scripts only from this site or with the page's nonce;
# the viewer compiles WebAssembly codecs ('wasm-unsafe-eval') and runs web workers (self, blob:).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE, WASM_UNSAFE_EVAL],
        "worker-src": [SELF, "blob:"],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF, "blob:", "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

if not DEBUG:
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (docs/deploy.md).
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = _env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 31_536_000)  # sent on HTTPS answers only
    SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
    SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", False)
