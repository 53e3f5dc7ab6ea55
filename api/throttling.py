"""Per-user and anonymous rate limits, counted in Django's cache.

DRF's stock throttles read their rates once, at import; these read them on every
request, so the rates in ``settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` can be
changed (by an operator's settings or a test) without a restart of the class.
"""

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class _LiveRates:
    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_LiveRates, UserRateThrottle):
    scope = "user"


class AnonThrottle(_LiveRates, AnonRateThrottle):
    scope = "anon"
