"""Many deals at once, for KPI tests that need hundreds of them (the worked examples).

Rows are inserted directly, consistent with every database constraint, exactly as the
domain functions would leave them in the fields the KPIs read. Tests of the domain
itself go through funnel/domain.py instead.
"""

import datetime
from decimal import Decimal

from funnel import stages
from funnel.models import ClosingDocument, Deal
from funnel.stages import Stage, Status
from kpis import ledger
from kpis.models import KpiSnapshot, PeriodMeasures
from tests.factories import CompanyFactory

ONE_HOUR = datetime.timedelta(hours=1)


def deal_row(
    owner,
    lead_at,
    *,
    reached=Stage.LEAD,
    at=None,
    status=Status.OPEN,
    value=Decimal("1000"),
    company=None,
    channel=None,
    won_at=None,
    lost_at=None,
    lost_reason=None,
    **fields,
):
    """One unsaved deal that entered ``lead`` at ``lead_at`` and each later stage up to
    ``reached`` an hour apart, or at the moments given in ``at`` ({stage: moment})."""
    at = dict(at or {})
    stamps = {}
    moment = lead_at
    for stage in stages.ORDER[: stages.index(reached) + 1]:
        moment = at.get(stage, moment if stage == Stage.LEAD else moment + ONE_HOUR)
        stamps[stages.stamp_field(stage)] = moment
    last = max([moment, *(m for m in (won_at, lost_at) if m)])
    deal = Deal(
        title="Bulk deal",
        owner=owner,
        company=company or CompanyFactory(),
        channel=channel,
        stage=reached,
        status=status,
        estimated_value=value,
        estimated_value_base=value,
        current_value_base=value,
        won_at=won_at,
        lost_at=lost_at,
        lost_reason=lost_reason,
        lost_stage=reached if status == Status.LOST else None,
        last_event_at=last,
        **stamps,
        **fields,
    )
    return deal


def save_deals(deals):
    created = Deal.objects.bulk_create(deals)
    ClosingDocument.objects.bulk_create(
        ClosingDocument(
            deal=d,
            document_type="contract",
            issue_date=d.entered_closing_at.date(),
            final_value=d.current_value_base,
            final_value_base=d.current_value_base,
            signed_at=d.won_at,
        )
        for d in created
        if d.status == Status.WON
    )
    return created


def won_row(owner, lead_at, won_at, value, **kw):
    return deal_row(
        owner,
        lead_at,
        reached=Stage.CLOSING,
        status=Status.WON,
        won_at=won_at,
        value=value,
        agreed_value=value,
        agreed_value_base=value,
        **kw,
    )


#: The snapshot columns that carry a KPI's reading (``computed_at`` and ``extra`` are
#: bookkeeping).
SNAPSHOT_FIELDS = (
    "kpi",
    "grain",
    "period_start",
    "slice",
    "breakdown",
    "value",
    "numerator",
    "denominator",
)


def snapshot_rows():
    """Every stored snapshot, its reading and extra included, in a stable order."""
    return sorted(
        (*r[:-1], sorted(r[-1].items()))
        for r in KpiSnapshot.objects.values_list(*SNAPSHOT_FIELDS, "extra")
    )


def ledger_rows():
    """{(grain, start, slice, breakdown): (sums, medians)} as the ledger stores them, exact."""
    return {
        (g, start, s, b): (ledger._decode_sums(sums), medians)
        for g, start, s, b, sums, medians in PeriodMeasures.objects.values_list(
            "grain", "period_start", "slice", "breakdown", "sums", "medians"
        )
    }
