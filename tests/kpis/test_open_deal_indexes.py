"""The open deals now and the open pipeline are read off their partial indexes alone
on PostgreSQL (funnel.Deal's ``deal_open_now``, ``deal_open_pipeline``): the queries
name only columns those indexes hold, so the plan needs no row of the deal table."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from funnel.models import Deal
from funnel.stages import Stage
from kpis.company import _open_pipeline, open_now
from tests.factories import deal_in_stage


def _plan(sql, index):
    """The plan of ``sql`` with ``index`` the only index of the deals besides their key
    (dropped inside the test's transaction, which rolls back): on a table this small
    the planner's choice between indexes is a coin toss, not what 1M deals give."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending checks: DDL may run
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'funnel_deal' "
            "AND indexname <> %s AND indexname NOT LIKE '%%pkey'",
            [index],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'ALTER TABLE funnel_deal DROP CONSTRAINT IF EXISTS "{name}"')
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
        cursor.execute("ANALYZE funnel_deal")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def _last_query(run):
    with CaptureQueriesContext(connection) as queries:
        result = run()
    return result, queries.captured_queries[-1]["sql"]


@pytest.mark.postgres
def test_the_open_deals_now_are_read_off_their_index_alone(on_postgres, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    limits = dict.fromkeys(Stage.values, 10)
    result, sql = _last_query(lambda: open_now(timezone.now(), limits, {rep.pk: rep.team_id}))
    assert result[f"rep:{rep.pk}"]["offer"][0] == 1
    assert result[f"team:{rep.team_id}"]["offer"][0] == 1
    assert result["company"]["offer"][1] == deal.current_value_base
    plan = _plan(sql, "deal_open_now")
    assert "Index Only Scan using deal_open_now" in plan, plan


@pytest.mark.postgres
def test_the_open_pipeline_is_read_off_its_index_alone(on_postgres, rep):
    deal = deal_in_stage(rep, Stage.OFFER)
    close = timezone.localdate() + datetime.timedelta(days=10)
    Deal.objects.filter(pk=deal.pk).update(expected_close_date=close)
    rows, sql = _last_query(lambda: _open_pipeline(close, close + datetime.timedelta(days=1)))
    assert [(owner, stage, value) for _, owner, stage, value in rows] == [
        (rep.pk, Stage.OFFER, deal.current_value_base)
    ]
    plan = _plan(sql, "deal_open_pipeline")
    assert "Index Only Scan using deal_open_pipeline" in plan, plan
