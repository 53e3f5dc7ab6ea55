"""A recompute raises PostgreSQL's work_mem on its own connection while it runs
(``kpis.recompute.sort_memory``) and leaves the connection as it found it."""

import pytest
from django.db import connection

from kpis import recompute


def work_mem():
    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        return cursor.fetchone()[0]


@pytest.mark.postgres
def test_a_recompute_sorts_in_memory_and_resets_the_setting(on_postgres, settings):
    settings.LEJEK_KPI_WORK_MEM = "96MB"
    before = work_mem()
    seen = []

    @recompute.sort_memory
    def inner():
        seen.append(("inner", work_mem()))

    @recompute.sort_memory
    def outer():
        inner()
        # The inner call does not reset what the outer one set.
        seen.append(("outer", work_mem()))

    outer()

    assert before != "96MB"
    assert seen == [("inner", "96MB"), ("outer", "96MB")]
    assert work_mem() == before


@pytest.mark.postgres
def test_the_real_entry_points_run_with_it(on_postgres, settings, monkeypatch):
    settings.LEJEK_KPI_WORK_MEM = "96MB"
    seen = []
    monkeypatch.setattr(recompute.dirty, "claim", lambda limit: seen.append(work_mem()) or [])

    assert recompute.recompute_all_dirty() == 0
    assert recompute.recompute_dirty() == 0

    assert seen[0] == seen[-1] == "96MB"
    assert work_mem() != "96MB"


def test_without_a_size_or_on_sqlite_nothing_is_sent(db, settings, django_assert_num_queries):
    settings.LEJEK_KPI_WORK_MEM = "" if connection.vendor == "postgresql" else "96MB"

    @recompute.sort_memory
    def nothing():
        return 7

    with django_assert_num_queries(0):
        assert nothing() == 7
