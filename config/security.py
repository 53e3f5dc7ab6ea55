"""Who is knocking: the client's address behind a reverse proxy, and django-axes's
lockout check for every sign-in made through a request."""

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.shortcuts import render


def client_ip(request):
    """The client's address: ``REMOTE_ADDR``, or the one our reverse proxy put in
    ``CLIENT_IP_HEADER``. X-Forwarded-For is a list that every proxy appends to and the
    client may pre-fill with anything, so the client is the entry
    ``TRUSTED_PROXY_COUNT`` places from the right: the one our outermost proxy saw."""
    header = settings.LEJEK_CLIENT_IP_HEADER
    if header:
        key = "HTTP_" + header.upper().replace("-", "_")
        entries = [e.strip() for e in request.META.get(key, "").split(",") if e.strip()]
        if entries:
            count = max(settings.LEJEK_TRUSTED_PROXY_COUNT, 1)
            return entries[-count] if len(entries) >= count else entries[0]
    return request.META.get("REMOTE_ADDR")


class AxesBackend(AxesStandaloneBackend):
    """django-axes's lockout check (it must come first in AUTHENTICATION_BACKENDS).

    Every sign-in over the network carries its request: the login form, DRF's basic
    and token-obtaining authentication. An ``authenticate()`` without one comes from
    code on the server itself (the test client's ``login()``, a shell), where there is
    no address to lock; axes would raise there, so it is left to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked-out sign-in gets (django-axes's AXES_LOCKOUT_CALLABLE): what
    happened and for how long, with 429 Too Many Requests."""
    minutes = max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))
    return render(
        request,
        "registration/lockout.html",
        {"failure_limit": settings.AXES_FAILURE_LIMIT, "cooloff_minutes": minutes},
        status=429,
    )
