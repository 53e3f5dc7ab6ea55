"""OpenAPI schema details drf-spectacular cannot infer: the error answers every
operation can give (see api/exceptions.py), so the schema documents them accurately."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorSerializer(serializers.Serializer):
    """An error. DRF's field errors are ``{field: [messages]}``; other refusals carry
    ``detail`` and ``code``; a domain refusal about fields adds ``errors``; a stale
    version (409/412) adds ``current_version``."""

    detail = serializers.CharField(required=False)
    code = serializers.JSONField(required=False)
    errors = serializers.DictField(child=serializers.ListField(), required=False)
    current_version = serializers.IntegerField(required=False, allow_null=True)


IF_MATCH = OpenApiParameter(
    "If-Match",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description='Optional: the ETag ("<version>") of the deal the client read; 412 when it '
    "has changed since.",
)

_DESCRIPTIONS = {
    "400": "Invalid input: field errors, or a change the funnel's rules refuse.",
    "401": "Not signed in (session) and no valid token.",
    "403": "Your role may not do this.",
    "404": "No such row among those you may see.",
    "409": "A stale version: someone changed the deal meanwhile; nothing was written.",
    "412": "If-Match names a version that is no longer current; nothing was written.",
    "429": "Too many requests: try again later.",
}


class LejekAutoSchema(AutoSchema):
    def _error_codes(self):
        codes = ["400", "404", "429"]
        if not any(p is AllowAny for p in getattr(self.view, "permission_classes", ())):
            codes += ["401", "403"]
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            codes.append("409")
        if any(getattr(p, "name", None) == "If-Match" for p in self._get_parameters_overrides()):
            codes.append("412")
        return codes

    def _get_parameters_overrides(self):
        return [p for p in self.get_override_parameters() if isinstance(p, OpenApiParameter)]

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    ErrorSerializer, code, direction=direction
                )
                responses[code]["description"] = _DESCRIPTIONS[code]
        return dict(sorted(responses.items()))
