"""``/healthz``: whether this process can serve, for load balancers and monitors.

200 when the database and the Celery broker both answer; 503 naming the one that does
not. Each check is bounded by a short timeout, so a probe never hangs on a dead
dependency. No sign-in is needed and nothing about the data is said.
"""

import logging
import os

import redis
from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger("lejek.health")

#: Seconds the broker may take to answer a ping.
BROKER_TIMEOUT = 2


def check_database():
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_broker():
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(
            url, socket_connect_timeout=BROKER_TIMEOUT, socket_timeout=BROKER_TIMEOUT
        )
        try:
            client.ping()
        finally:
            client.close()
        return
    # The embedded filesystem broker (development): its folders must be writable.
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    for folder in (options["data_folder_in"], options["control_folder"]):
        if not os.access(folder, os.W_OK):
            raise OSError(f"{folder} is not writable")


CHECKS = {"database": check_database, "broker": check_broker}


@never_cache
@require_safe
def healthz(request):
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # any failure of a dependency is "unavailable"
            logger.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = "unavailable"
        else:
            results[name] = "ok"
    failing = [name for name, result in results.items() if result != "ok"]
    return JsonResponse(
        {"status": "unavailable" if failing else "ok", "failing": failing, **results},
        status=503 if failing else 200,
    )
