"""The incremental recompute (the dirty days of each change, the family KPIs of the
slices whose ledger rows changed, the larger periods' stale medians after them) ends
where a full recompute from the deals does, on random datasets: every deal is created
and plays part of its script, everything is recomputed, then every deal plays the rest
(back-dated moves, offers and their answers, rounds, wins, losses, reopenings), and
the sweep recomputes what those changes marked."""

from django.db import transaction
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from kpis import company, dirty, recompute
from tests.kpis.builders import snapshot_rows
from tests.kpis.reference import (
    build_dataset,
    deal_scripts,
    make_cast,
    property_examples,
    property_settings,
)

SCRIPTS = 6


@property_settings(property_examples() // 3)
@given(
    scripts=deal_scripts(max_size=SCRIPTS),
    cuts=st.lists(st.integers(0, 12), min_size=SCRIPTS, max_size=SCRIPTS),
)
def test_the_sweep_after_changes_ends_where_a_full_recompute_does(db, scripts, cuts):
    held = [cut % (len(script.steps) + 1) for cut, script in zip(cuts, scripts, strict=False)]
    with transaction.atomic():
        build_dataset(
            scripts, make_cast(), now=timezone.now(), pause=recompute.recompute_all, held=held
        )
        # The sweep of the next hour: it takes the trailing statistics again, as the
        # full recompute below does.
        company.forget_inputs()
        recompute.recompute_all_dirty()
        pending = dirty.pending()
        incremental = snapshot_rows()
        recompute.recompute_all()
        full = snapshot_rows()
        transaction.set_rollback(True)
    assert not pending
    missing = [row for row in full if row not in incremental]
    extra = [row for row in incremental if row not in full]
    assert (missing, extra) == ([], [])
