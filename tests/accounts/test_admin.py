import pytest
from django.urls import reverse

from accounts.models import Role, User

USERS = reverse("admin:accounts_user_changelist")
TEAMS = reverse("admin:accounts_team_changelist")


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def usernames(client, query=""):
    response = client.get(f"{USERS}?{query}")
    assert response.status_code == 200, response.get("Location")
    return sorted(user.username for user in response.context["cl"].result_list)


def test_user_changelist_shows_role_and_team(admin_client, rep):
    response = admin_client.get(f"{USERS}?q=rep")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [rep]
    assert '<td class="field-role">Sales rep</td>' in response.text
    assert '<td class="field-team nowrap">Team A</td>' in response.text


def test_user_changelist_filters_by_role_and_team(admin_client, rep, teammate, outsider, team_a):
    assert usernames(admin_client, "role__exact=manager") == ["manager", "other_manager"]
    assert usernames(admin_client, "role__exact=rep") == ["outsider", "rep", "teammate"]
    assert usernames(admin_client, f"team__id__exact={team_a.pk}") == ["rep", "teammate"]
    assert usernames(admin_client, "team__isnull=True") == ["admin", "manager", "other_manager"]


def test_adding_a_user_sets_role_and_team(admin_client, team_b):
    response = admin_client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "nowy.rep",
            "usable_password": "true",
            "password1": "a-long-enough-passphrase",
            "password2": "a-long-enough-passphrase",
            "role": Role.REP,
            "team": team_b.pk,
        },
    )

    assert response.status_code == 302
    user = User.objects.get(username="nowy.rep")
    assert (user.role, user.team, user.check_password("a-long-enough-passphrase")) == (
        "rep",
        team_b,
        True,
    )


def test_changing_a_users_role_and_team(admin_client, rep, team_b):
    response = admin_client.post(
        reverse("admin:accounts_user_change", args=[rep.pk]),
        {
            "username": "rep",
            "first_name": rep.first_name,
            "last_name": rep.last_name,
            "email": rep.email,
            "is_active": "on",
            "role": Role.MANAGER,
            "team": team_b.pk,
            "date_joined_0": "2025-01-06",
            "date_joined_1": "09:00:00",
        },
    )

    assert response.status_code == 302
    rep.refresh_from_db()
    assert (rep.role, rep.team, rep.is_active, rep.is_staff) == ("manager", team_b, True, False)


def test_team_changelist_counts_members(admin_client, rep, teammate, outsider, manager):
    response = admin_client.get(TEAMS)

    assert response.status_code == 200
    rows = response.context["cl"].result_list
    assert [(team.name, team.manager.username, team.member_count) for team in rows] == [
        ("Team A", "manager", 2),
        ("Team B", "other_manager", 1),
    ]


def test_team_page_lists_its_members_read_only(admin_client, rep, teammate, team_a):
    response = admin_client.get(reverse("admin:accounts_team_change", args=[team_a.pk]))

    assert response.status_code == 200
    (members,) = response.context["inline_admin_formsets"]
    assert sorted(form.instance.username for form in members.formset.forms) == ["rep", "teammate"]
    assert (
        members.has_add_permission,
        members.has_change_permission,
        members.has_delete_permission,
    ) == (
        False,
        False,
        False,
    )


def test_a_team_manager_is_chosen_among_managers_and_admins(admin_client, team_a, rep, manager):
    url = reverse("admin:accounts_team_change", args=[team_a.pk])
    no_member_rows = {"members-TOTAL_FORMS": "0", "members-INITIAL_FORMS": "0"}

    refused = admin_client.post(url, {"name": "Team A", "manager": rep.pk, **no_member_rows})
    accepted = admin_client.post(url, {"name": "Sales A", "manager": manager.pk, **no_member_rows})

    assert refused.status_code == 200
    assert list(refused.context["adminform"].form.errors) == ["manager"]
    assert accepted.status_code == 302
    team_a.refresh_from_db()
    assert (team_a.name, team_a.manager) == ("Sales A", manager)
    assert sorted(team_a.members.values_list("username", flat=True)) == ["rep"]
