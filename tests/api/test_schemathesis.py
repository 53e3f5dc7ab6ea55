"""Property-based run of every operation of the live OpenAPI schema (schemathesis),
loaded from the WSGI app, as an admin with some deals to act on: no 5xx, and every
answer's status, content type, headers and body are those the schema documents."""

import datetime

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from funnel import domain
from funnel.models import MarketingSpend
from funnel.stages import Stage
from kpis.models import KpiSnapshot, Target
from tests.factories import ChannelFactory, deal_in_stage, won_deal

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def admin_token(admin, rep, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "100000/min", "anon": "100000/min"},
    }
    # Ids 1..3 exist for every kind of row, so generated ids sometimes hit one.
    for stage in (Stage.LEAD, Stage.NEGOTIATION, Stage.CLOSING):
        deal_in_stage(rep, stage)
    won_deal(rep)
    channel = ChannelFactory(name="Web")
    MarketingSpend.objects.create(
        channel=channel,
        month=datetime.date(2025, 1, 1),
        amount=1000,
        currency="PLN",
        amount_base=1000,
    )
    Target.objects.create(
        grain="month", period_start=datetime.date(2025, 1, 1), rep=rep, amount=5000
    )
    KpiSnapshot.objects.create(
        kpi="leads",
        grain="month",
        period_start=datetime.date(2025, 1, 1),
        slice="company",
        value=3,
        numerator=3,
        computed_at=timezone.now(),
    )
    domain.log_activity(
        deal_in_stage(rep, Stage.NEEDS), kind="call", held_at=timezone.now(), by=rep
    )
    # The WSGI handler closes "old" connections around each request; inside the test's
    # transaction that would close PostgreSQL's connection (Django's test client
    # disconnects the same handlers).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield Token.objects.create(user=admin).key
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
@pytest.mark.django_db
def test_api_conforms_to_its_schema(case, admin_token):
    response = case.call(headers={"Authorization": f"Token {admin_token}"})
    case.validate_response(response, checks=CHECKS)
