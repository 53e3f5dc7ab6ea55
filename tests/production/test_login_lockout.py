"""Login brute-force protection (django-axes): after AXES_FAILURE_LIMIT wrong passwords
for one username from one address, even the right password is refused for the cool-off
time, with a page saying so. Behind the proxy the address comes from its header."""

import datetime

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import SESSION_KEY

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
LIMIT = settings.AXES_FAILURE_LIMIT


def sign_in(client, username, password, address="192.0.2.10", **headers):
    return client.post(
        LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address, headers=headers
    )


def signed_in_as(client):
    return client.session.get(SESSION_KEY)


def fail(client, username, times, **kwargs):
    return [sign_in(client, username, "wrong password", **kwargs).status_code for _ in range(times)]


def test_the_limit_is_five_failures_for_fifteen_minutes():
    assert (5, datetime.timedelta(minutes=15)) == (LIMIT, settings.AXES_COOLOFF_TIME)


def test_after_the_limit_the_right_password_is_refused_and_the_user_told(client, rep):
    statuses = fail(client, "rep", LIMIT - 1)
    last = sign_in(client, "rep", "wrong password")
    response = sign_in(client, "rep", PASSWORD)

    # The failures before the limit show the login form again with its error.
    assert statuses == [200] * (LIMIT - 1)
    # The failure that reaches the limit locks at once.
    assert last.status_code == 429
    assert response.status_code == 429
    assert signed_in_as(client) is None
    body = response.content.decode()
    assert "Sign-in locked" in body
    assert (
        "Too many failed sign-ins: after 5 wrong passwords, signing in to this account "
        "from your address is locked."
    ) in body
    assert "Try again in 15 minutes." in body
    # The refused attempt counts too (and restarts the cool-off).
    assert [
        (a.username, a.ip_address, a.failures_since_start) for a in AccessAttempt.objects.all()
    ] == [("rep", "192.0.2.10", LIMIT + 1)]


def test_a_success_before_the_limit_forgets_the_failures(client, rep):
    fail(client, "rep", LIMIT - 1)
    assert sign_in(client, "rep", PASSWORD).status_code == 302
    client.logout()

    fail(client, "rep", LIMIT - 1)
    response = sign_in(client, "rep", PASSWORD)

    assert response.status_code == 302
    assert signed_in_as(client) == str(rep.pk)


def test_the_lock_is_per_username_and_address(client, rep, teammate):
    fail(client, "rep", LIMIT)

    # The same person from another address, and another user from the same address.
    from_elsewhere = sign_in(client, "rep", PASSWORD, address="198.51.100.20")
    client.logout()
    colleague = sign_in(client, "teammate", PASSWORD)

    assert from_elsewhere.status_code == 302
    assert colleague.status_code == 302
    assert signed_in_as(client) == str(teammate.pk)


def test_the_lock_ends_after_the_cool_off(client, rep):
    fail(client, "rep", LIMIT)
    assert sign_in(client, "rep", PASSWORD).status_code == 429

    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time
        - settings.AXES_COOLOFF_TIME
        - datetime.timedelta(seconds=1)
    )
    response = sign_in(client, "rep", PASSWORD)

    assert response.status_code == 302
    assert signed_in_as(client) == str(rep.pk)


def test_the_lockout_page_is_translated(client, rep):
    fail(client, "rep", LIMIT)
    client.cookies["django_language"] = "pl"

    response = sign_in(client, "rep", PASSWORD)

    assert response.status_code == 429
    assert response["Content-Language"] == "pl"


# Behind a reverse proxy ------------------------------------------------------------------

PROXY = "10.0.0.2"


@pytest.fixture
def behind_proxy(settings):
    settings.LEJEK_CLIENT_IP_HEADER = "X-Forwarded-For"
    settings.LEJEK_TRUSTED_PROXY_COUNT = 1


def test_behind_the_proxy_the_address_comes_from_its_header(client, rep, behind_proxy):
    fail(client, "rep", LIMIT, address=PROXY, x_forwarded_for="203.0.113.7")

    locked = sign_in(client, "rep", PASSWORD, address=PROXY, x_forwarded_for="203.0.113.7")
    other_client = sign_in(client, "rep", PASSWORD, address=PROXY, x_forwarded_for="203.0.113.8")

    assert [a.ip_address for a in AccessAttempt.objects.all()] == ["203.0.113.7"]
    assert locked.status_code == 429
    # Everyone else behind the same proxy is not locked out with them.
    assert other_client.status_code == 302


def test_a_client_cannot_dodge_the_lock_by_pre_filling_the_header(client, rep, behind_proxy):
    """The proxy appends the address it saw; what the client wrote before it is ignored."""
    for forged in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"):
        sign_in(client, "rep", "wrong", address=PROXY, x_forwarded_for=f"{forged}, 203.0.113.7")

    response = sign_in(
        client, "rep", PASSWORD, address=PROXY, x_forwarded_for="6.6.6.6, 203.0.113.7"
    )

    assert response.status_code == 429
    assert [a.ip_address for a in AccessAttempt.objects.all()] == ["203.0.113.7"]


def test_two_proxies_of_ours_count_two_from_the_right(client, rep, settings, behind_proxy):
    settings.LEJEK_TRUSTED_PROXY_COUNT = 2

    fail(client, "rep", 1, address=PROXY, x_forwarded_for="forged, 203.0.113.7, 10.0.0.1")

    assert [a.ip_address for a in AccessAttempt.objects.all()] == ["203.0.113.7"]


def test_without_the_header_setting_the_header_is_not_trusted(client, rep):
    fail(client, "rep", 1, address="192.0.2.99", x_forwarded_for="203.0.113.7")

    assert [a.ip_address for a in AccessAttempt.objects.all()] == ["192.0.2.99"]


# The test client's login keeps working -----------------------------------------------------


def test_the_test_clients_login_still_works(client, rep):
    assert client.login(username="rep", password=PASSWORD) is True
    assert signed_in_as(client) == str(rep.pk)
    assert client.login(username="rep", password="wrong") is False
