"""Lejek settings: one file, read from the environment.

Defaults give a working local app (SQLite, an embedded filesystem broker). Production
differs only by environment variables: DATABASE_URL, REDIS_URL, SECRET_KEY,
ALLOWED_HOSTS, DEBUG. Every helper below fails loudly on a value it cannot parse.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("LEJEK_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)

# A missing SECRET_KEY is only tolerated while DEBUG is on (local development and tests).
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-local-development-key-never-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
if not ALLOWED_HOSTS and not DEBUG:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")
# Origins (scheme://host) allowed to POST forms, needed when the public address differs
# from what the proxy passes on, e.g. "https://crm.example.com".
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "axes",
    "csp",
    "accounts",
    "funnel",
    "kpis",
    "reports",
    "imports",
    "api",
]

MIDDLEWARE = [
    # First: it times and logs every request, redirects and refusals included.
    "config.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # django-csp's, with the admin's one inline <style> allowed by its hash.
    "config.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A view's database error is a 503 (its process_exception runs before Django's 500).
    "config.middleware.DatabaseUnavailableMiddleware",
    # Last, as django-axes asks: it turns a locked-out attempt into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default; DATABASE_URL=postgres://... switches to PostgreSQL.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'lejek.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes; the timeout rides out
    # the short write locks the two take.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # A database that does not answer fails the request within seconds, not minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Login brute-force protection (django-axes): after AXES_FAILURE_LIMIT failed sign-ins
# for one username from one address, that pair is locked for AXES_COOLOFF_MINUTES. By
# the pair, so nobody can lock a colleague out from elsewhere and one office behind
# one NAT address is not locked as a whole. The failures are kept in the database:
# every web process sees them.
AUTHENTICATION_BACKENDS = [
    "config.security.AxesBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"
# The client's address: REMOTE_ADDR, or behind a reverse proxy the header it sets
# (config/security.py). Without it every client would share the proxy's address.
AXES_CLIENT_IP_CALLABLE = "config.security.client_ip"
#: e.g. "X-Forwarded-For" or "X-Real-IP"; empty: no proxy, REMOTE_ADDR is the client.
LEJEK_CLIENT_IP_HEADER = env.str("CLIENT_IP_HEADER", default="")
#: How many proxies of ours append to X-Forwarded-For: the client is that many from the right.
LEJEK_TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Internationalisation: English and Polish; the organisation's time zone drives every
# period boundary (see domain.md, "Periods").
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="en")
LANGUAGES = [("en", _("English")), ("pl", _("Polish"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("LEJEK_TIME_ZONE", default="Europe/Warsaw")
USE_I18N = True
USE_TZ = True

# The organisation's base currency: every amount is also stored converted into it.
LEJEK_BASE_CURRENCY = env.str("LEJEK_BASE_CURRENCY", default="PLN")

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Celery: Redis when REDIS_URL is set, otherwise kombu's filesystem transport, an
# embedded broker that needs no server. It can lose an in-flight message on a kill;
# the periodic dirty sweep covers that (see kpis/tasks.py).
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest task (see CELERY_TASK_TIME_LIMIT), so a slow task is
        # not redelivered to a second worker while the first still runs it.
        "visibility_timeout": 3600,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }
else:
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# A worker's lease on the dirty days it recomputes (kpis/dirty.py).
LEJEK_DIRTY_LEASE_SECONDS = env.int("LEJEK_DIRTY_LEASE_SECONDS", default=600)
# PostgreSQL's work_mem for a KPI recompute's connection while it runs (its grouping
# sets and medians sort millions of rows: at 1M deals a full recompute takes 15 % less
# than with the default 4MB, docs/benchmarks.md); empty leaves the server's setting.
LEJEK_KPI_WORK_MEM = env.str("LEJEK_KPI_WORK_MEM", default="256MB")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SOFT_TIME_LIMIT = 50 * 60
CELERY_TASK_TIME_LIMIT = 55 * 60
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    # The guarantee of freshness: whatever is still dirty (a lost message, a broker
    # outage) is recomputed within a minute.
    "sweep-dirty-kpis": {"task": "kpis.recompute_dirty", "schedule": 60.0},
    # Open and stalled deals move with time alone.
    "refresh-now-kpis": {"task": "kpis.mark_today", "schedule": 3600.0},
    # The weighted pipeline of each new period, frozen at its start (forecast accuracy).
    "freeze-forecasts": {"task": "kpis.freeze_forecasts", "schedule": crontab(hour=0, minute=1)},
    "nightly-full-recompute": {
        "task": "kpis.recompute_all",
        "schedule": crontab(hour=2, minute=30),
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "api.schema.LejekAutoSchema",
    # Token first: an unauthenticated request answers 401 with WWW-Authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.UserThrottle", "api.throttling.AnonThrottle"],
    # Counted in the default cache: per process with the local-memory cache, shared
    # between workers once CACHES points at Redis.
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_USER_RATE", default="600/min"),
        "anon": env.str("API_ANON_RATE", default="30/min"),
    },
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Lejek API",
    "DESCRIPTION": (
        "The six-stage B2B funnel: deals and their transitions, offers, negotiation, "
        "closing, activities, reference data, targets, stored KPIs and imports. "
        "Sign in (session) or send `Authorization: Token <key>` (POST /api/v1/auth/token/)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "StageEnum": "funnel.stages.Stage",
        "StatusEnum": "funnel.stages.Status",
        "GrainEnum": "kpis.periods.Grain",
    },
}

# One line per event on stderr, each carrying the id of the request it belongs to ("-"
# outside a request); the request log itself is the "lejek.request" logger
# (config/middleware.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.middleware.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # The request log says it once; Django's own line for a 4xx/5xx would repeat it.
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        # Failures and lockouts are warnings; its per-sign-in bookkeeping is not news.
        "axes": {"level": "WARNING"},
    },
}

# Security -----------------------------------------------------------------------------
# HTTPS only, outside development. Behind a reverse proxy that terminates TLS, set
# SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https (the header the proxy sets, and
# the value meaning https): without it every request looks like plain HTTP.
SECURE_PROXY_SSL_HEADER = (
    tuple(env.list("SECURE_PROXY_SSL_HEADER")) if env.str("SECURE_PROXY_SSL_HEADER", "") else None
)
if SECURE_PROXY_SSL_HEADER is not None and len(SECURE_PROXY_SSL_HEADER) != 2:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER is the header and its https value, e.g. "
        "HTTP_X_FORWARDED_PROTO,https"
    )
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# The load balancer's probe may speak plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=14 * 24 * 3600)

# Content-Security-Policy (django-csp): everything from our own origin, nothing inline.
# Bootstrap and Chart.js are vendored under static/, so 'self' covers them; templates
# pass data to scripts with json_script or data- attributes (tests/production).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Cache: shared by every web process (DRF throttles count in it). Redis when REDIS_URL
# is set; otherwise the database (run `manage.py createcachetable`, as `make serve`
# does); in development, local memory (one process).
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.str("CACHE_REDIS_URL", default=REDIS_URL),
            "KEY_PREFIX": "lejek",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
elif DEBUG:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "lejek_cache",
        }
    }
# Sessions live in the database (Django's default): any web process serves any user.
SESSION_ENGINE = "django.contrib.sessions.backends.db"
