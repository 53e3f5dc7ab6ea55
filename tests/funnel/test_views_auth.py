"""Sign in, sign out and change password: Django's views in the workspace's look."""

import pytest
from django.urls import reverse

from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_wrong_password_is_refused_and_the_username_kept(client, rep):
    response = client.post("/accounts/login/", {"username": "rep", "password": "nope"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Your username and password didn't match. Please try again." in html
    assert 'value="rep"' in html
    assert "_auth_user_id" not in client.session


def test_signing_in_lands_on_the_board_and_signing_out_on_the_login_page(client, rep):
    response = client.post("/accounts/login/", {"username": "rep", "password": PASSWORD})
    assert (response.status_code, response["Location"]) == (302, "/")
    assert 'action="/accounts/logout/"' in client.get("/").content.decode()
    response = client.post("/accounts/logout/")
    assert (response.status_code, response["Location"]) == (302, "/accounts/login/")
    assert client.get("/").status_code == 302


def test_a_user_changes_their_password(client, rep):
    client.force_login(rep)
    assert client.get("/accounts/password/").status_code == 200
    response = client.post(
        "/accounts/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "a-much-better-secret-42",
            "new_password2": "a-much-better-secret-42",
        },
    )
    assert (response.status_code, response["Location"]) == (302, "/accounts/password/done/")
    rep.refresh_from_db()
    assert rep.check_password("a-much-better-secret-42")
    assert "Password changed" in client.get("/accounts/password/done/").content.decode()


def test_change_password_is_under_accounts_and_linked_from_the_header(client, rep):
    assert (reverse("password_change"), reverse("password_change_done")) == (
        "/accounts/password/",
        "/accounts/password/done/",
    )
    response = client.get("/accounts/password/")
    assert (response.status_code, response["Location"]) == (
        302,
        "/accounts/login/?next=/accounts/password/",
    )
    client.force_login(rep)
    assert 'href="/accounts/password/"' in client.get("/").content.decode()
    assert client.get("/deals/account/password/").status_code == 404


def test_a_wrong_old_password_is_shown_on_its_field(client, rep):
    client.force_login(rep)
    response = client.post(
        "/accounts/password/",
        {"old_password": "wrong", "new_password1": "x-Secret-991", "new_password2": "x-Secret-991"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {
        "old_password": ["Your old password was entered incorrectly. Please enter it again."]
    }
    assert 'id="id_old_password_errors"' in response.content.decode()
    rep.refresh_from_db()
    assert rep.check_password(PASSWORD)


def test_the_language_switcher_is_in_the_header(client, rep):
    client.force_login(rep)
    html = client.get("/").content.decode()
    assert 'action="/i18n/setlang/"' in html
    assert 'name="language" value="pl"' in html
    assert "{# nav: reports #}" not in html  # the placeholder is a template comment
