"""The request log, the answer when the database is unavailable, and the
Content-Security-Policy's one exception for Django's admin.

The request log: one line per request with its id, the user, the method, the path,
the status and the duration. The id comes from the ``X-Request-ID`` header a proxy or
client sent (when it looks like an id) or is generated; it is echoed in the response's
``X-Request-ID`` and attached to every log line written while the request is served, so
one grep finds everything a request did.
"""

import contextvars
import logging
import re
import time
import uuid

from csp.middleware import CSPMiddleware
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.utils.encoding import escape_uri_path
from django.utils.functional import empty
from django.utils.translation import gettext as _

logger = logging.getLogger("lejek.request")
database_logger = logging.getLogger("lejek.database")

#: The current request's id; "-" outside a request (Celery, management commands).
request_id_var = contextvars.ContextVar("request_id", default="-")

#: An incoming id is kept only if it cannot forge or break a log line.
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdFilter(logging.Filter):
    """Gives every log record the ``request_id`` the formatter prints."""

    def filter(self, record):
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def _incoming_id(request):
    value = request.headers.get("X-Request-ID", "")
    return value if _VALID_ID.match(value) else uuid.uuid4().hex


def _user_id(request):
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return str(user.pk)
    return "-"


class RequestLogMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = _incoming_id(request)
        request.request_id = request_id
        token = request_id_var.set(request_id)
        started = time.monotonic()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            response["X-Request-ID"] = request_id
            return response
        finally:
            duration_ms = (time.monotonic() - started) * 1000
            # Percent-encoded: a path cannot forge a second log line.
            path = escape_uri_path(request.path)
            logger.info(
                "request_id=%s user=%s method=%s path=%s status=%s duration_ms=%.1f",
                request_id,
                _user_id(request),
                request.method,
                path,
                status,
                duration_ms,
                extra={
                    "request_id": request_id,
                    "user_id": _user_id(request),
                    "method": request.method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(duration_ms, 1),
                },
            )
            request_id_var.reset(token)


#: Seconds a client is asked to wait before retrying while the database is unavailable.
DATABASE_RETRY_AFTER = 10


class DatabaseUnavailableMiddleware:
    """A view that cannot reach the database answers 503 with a short message, not a
    500: the failure is the database's, and retrying shortly is the right response.

    Nothing needs restarting afterwards: Django drops a connection that failed at the
    end of the request (CONN_HEALTH_CHECKS), so the next request connects afresh. The
    answer is plain text, or JSON under the API; it renders no template and reads
    nothing, and the error, with its traceback, goes to the log only."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        database_logger.error("database unavailable: %s", exception, exc_info=exception)
        user = getattr(request, "user", None)
        if getattr(user, "_wrapped", None) is empty:
            # Imported here: settings.LOGGING loads this module before the apps.
            from django.contrib.auth.models import AnonymousUser

            # The user was never looked up (that is the query that failed): the request
            # log must not wait for the database a second time to name them.
            request.user = AnonymousUser()
        message = _("The database is unavailable; try again shortly.")
        match = getattr(request, "resolver_match", None)
        if match is not None and "api" in match.namespaces:
            response = JsonResponse({"detail": message, "code": "database_unavailable"}, status=503)
        else:
            response = HttpResponse(message, content_type="text/plain; charset=utf-8", status=503)
        response["Retry-After"] = str(DATABASE_RETRY_AFTER)
        return response


#: Django's admin change list carries one inline <style> (admin/change_list.html, block
#: extrastyle, shown when a ModelAdmin has neither action bar). Admin pages allow that
#: block by its hash: any other inline style stays blocked, in the admin too.
#: tests/production/test_security_headers.py checks the hash against Django's template.
ADMIN_INLINE_STYLE_HASHES = ["'sha256-blvLUW3UscWqsXGByNOqdBboM+ShWAuugp2mC/wbafU='"]


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware (settings.CONTENT_SECURITY_POLICY) with the admin's
    exception above. Our own pages, /api/docs/ (Swagger UI) included, get the policy
    as configured: nothing inline."""

    def get_policy_parts(self, request, response, report_only=False):
        parts = super().get_policy_parts(request, response, report_only)
        match = getattr(request, "resolver_match", None)
        if match is not None and "admin" in match.app_names:
            update = dict(parts.update or {})
            update["style-src"] = [*update.get("style-src", []), *ADMIN_INLINE_STYLE_HASHES]
            parts.update = update
        return parts
