"""How the API answers a refusal: always JSON, never a 500 for bad input.

- A serializer's field errors: 400 ``{field: [messages]}`` (DRF's own format).
- ``DomainError`` (funnel/domain.py) and any other Django ``ValidationError``: 400
  ``{"detail": message, "code": code, "errors": {field: [messages]}}``.
- ``StaleDealError``: 409 ``{"detail", "code": "stale", "current_version"}``; when the
  client sent ``If-Match``, 412 instead (api/views.py raises ``PreconditionFailed``).
- ``IntegrityError`` (a uniqueness race the validation could not see): 409.
"""

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.utils.translation import gettext as _
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from funnel.domain import StaleDealError


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = _("The deal changed since the version named in If-Match.")
    default_code = "precondition_failed"


def _field_messages(exc):
    """({field: [messages]}, first message, first code) of a Django ValidationError."""
    errors, first_message, first_code = {}, None, None
    if hasattr(exc, "error_dict"):
        items = exc.error_dict.items()
    else:
        items = [(NON_FIELD_ERRORS, exc.error_list)]
    for name, error_list in items:
        key = "non_field_errors" if name == NON_FIELD_ERRORS else name
        for error in error_list:
            for message in error:
                errors.setdefault(key, []).append(str(message))
                if first_message is None:
                    first_message, first_code = str(message), error.code
    return errors, first_message, first_code


def domain_error_response(exc):
    errors, message, code = _field_messages(exc)
    body = {"detail": message or _("Invalid input."), "code": code or "invalid"}
    fields = {k: v for k, v in errors.items() if k != "non_field_errors"}
    if fields:
        body["errors"] = fields
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def stale_response(exc, *, precondition=False):
    deal = exc.deal
    body = {
        "detail": str(exc),
        "code": "precondition_failed" if precondition else "stale",
        "current_version": deal.version if deal is not None else None,
    }
    code = status.HTTP_412_PRECONDITION_FAILED if precondition else status.HTTP_409_CONFLICT
    return Response(body, status=code)


def exception_handler(exc, context):
    if isinstance(exc, StaleDealError):
        return stale_response(exc)
    if isinstance(exc, DjangoValidationError):
        return domain_error_response(exc)
    if isinstance(exc, IntegrityError):
        return Response(
            {
                "detail": _("The change conflicts with data saved meanwhile; reload and retry."),
                "code": "conflict",
            },
            status=status.HTTP_409_CONFLICT,
        )
    response = drf_exception_handler(exc, context)
    # A stable machine-readable code beside DRF's "detail" (not for field errors).
    if (
        response is not None
        and isinstance(exc, APIException)
        and isinstance(response.data, dict)
        and set(response.data) == {"detail"}
    ):
        codes = exc.get_codes()
        if isinstance(codes, str):
            response.data["code"] = codes
    return response
