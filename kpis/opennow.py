"""The open deals now (open deals and their value per stage, stalled deals), kept by
difference like the ledger (docs/kpis.md, "The open deals now, kept by difference").

Counting them from the deals reads every open deal (at 1M deals, 160,000), and the
company slice needs them at every change. So ``OpenNow`` keeps them per slice:

- a recompute of every slice of today counts them from the deals (``counted``), with
  the stall limits of its inputs, as of its moment (``LedgerState.open_as_of``);
- a deal's change keeps what the table holds for the deal (``state``) in its pending
  row (``PendingChange.before_open``), and the worker adds the deal's state now minus
  that one (``difference``, ``add``) with its pending ledger difference.

A deal counts as stalled as of the moment the table was counted, with that count's
limits: its state keeps the moments stalling reads (its latest stage change and
activity), and the worker tests both states at that moment. A deal that only ages
past its stage's limit is counted by the next count from the deals: the hour's
refresh marks today for every slice (``recompute.refresh_hour``), so the stalled
deals are at most an hour old. Open deals and values are exact at every change.

What holds, as for the ledger (kpis.changes): the table is the sum, over the open
deals, of the ``before_open`` of a deal whose change is pending and of the state of
any other deal. A count from the deals reads them and the pending rows in one
snapshot and sets the ``before_open`` of every pending row it saw to what it read,
under the lock that keeps the worker out (``changes.exclusively``).
"""

import datetime
from decimal import Decimal

from funnel.bulk import update_rows
from funnel.models import Deal
from kpis.models import LedgerState, OpenNow, PendingChange

# --- one deal -----------------------------------------------------------------------


def stall_cutoffs(as_of, limits):
    """{stage: moment}: a deal in the stage is stalled at ``as_of`` when its latest stage
    change and latest activity are both before the moment (``limits``: days per stage,
    None for no limit). The one rule of ``company.open_now`` and ``is_stalled``."""
    return {
        stage: as_of - datetime.timedelta(days=days)
        for stage, days in limits.items()
        if days is not None
    }


def is_stalled(stage, changed, activity, cutoffs):
    """Whether a deal in ``stage`` whose latest stage change and activity are
    ``changed`` and ``activity`` is stalled (``stall_cutoffs``)."""
    cutoff = cutoffs.get(stage)
    if cutoff is None or changed is None:
        return False
    return changed < cutoff and (activity is None or activity < cutoff)


def states(deal_ids):
    """{deal id: its state} of the open deals among ``deal_ids``: [stage, value,
    latest stage change, latest activity, slices] (JSON: the value a decimal string,
    the moments ISO strings). A deal that is not open has none."""
    from kpis.compute import slice_keys  # kpis.compute imports this module's users

    if not deal_ids:
        return {}
    rows = (
        Deal.objects.open()
        .filter(pk__in=sorted(deal_ids))
        .values_list(
            "pk",
            "stage",
            "current_value_base",
            "stage_changed_at",
            "last_activity_at",
            "owner_id",
            "owner__team_id",
            "channel_id",
            "segment",
            "industry",
        )
    )
    return {
        pk: [
            stage,
            str(value or 0),
            changed.isoformat() if changed else None,
            activity.isoformat() if activity else None,
            slice_keys(
                {"_owner": owner, "_channel": channel, "_segment": segment, "_industry": industry},
                {owner: team},
            ),
        ]
        for pk, stage, value, changed, activity, owner, team, channel, segment, industry in rows
    }


def state(deal_pk):
    """The deal's state ([] when it is not open): what the table holds for it."""
    return states([deal_pk]).get(deal_pk, [])


def _entries(state_, cutoffs, sign):
    if not state_:
        return
    stage, value, changed, activity, slices = state_
    stalled = is_stalled(
        stage,
        datetime.datetime.fromisoformat(changed) if changed else None,
        datetime.datetime.fromisoformat(activity) if activity else None,
        cutoffs,
    )
    for slice_ in slices:
        yield slice_, stage, (sign, sign * Decimal(value), sign * int(stalled))


def _plus(target, slice_, stage, values):
    """Add [open deals, value, stalled] into ``target``'s entry of the slice and stage."""
    entry = target.setdefault(slice_, {}).setdefault(stage, [0, Decimal(0), 0])
    for i, v in enumerate(values):
        entry[i] += v


def difference(before, after, cutoffs):
    """{slice: {stage: [Δ open deals, Δ value, Δ stalled]}} of a deal's state moving from
    ``before`` to ``after``, stalled tested with ``cutoffs``; no zero entry."""
    delta = {}
    for state_, sign in ((before, -1), (after, 1)):
        for slice_, stage, values in _entries(state_, cutoffs, sign):
            _plus(delta, slice_, stage, values)
    kept = {
        slice_: {stage: e for stage, e in by_stage.items() if any(e)}
        for slice_, by_stage in delta.items()
    }
    return {slice_: by_stage for slice_, by_stage in kept.items() if by_stage}


def add_into(target, delta):
    """Add one ``difference`` into another (or into a slice's stored entries)."""
    for slice_, by_stage in delta.items():
        for stage, values in by_stage.items():
            _plus(target, slice_, stage, values)


# --- the table ----------------------------------------------------------------------


def as_counted():
    """(moment, stall limits) of the table's count from the deals; None when it has
    none that holds (never counted, or a pending row kept no state)."""
    row = LedgerState.objects.filter(pk=1).values_list("open_as_of", "open_limits").first()
    if row is None or row[0] is None:
        return None
    return row


def forget():
    """The table no longer holds: the next recompute of every slice counts it again."""
    LedgerState.objects.filter(pk=1).update(open_as_of=None)


def _decoded(stages):
    return {stage: (n, Decimal(value), stalled) for stage, (n, value, stalled) in stages.items()}


def _encoded(by_stage):
    return {
        stage: [n, str(value), stalled]
        for stage, (n, value, stalled) in sorted(by_stage.items())
        if n or value or stalled
    }


def _write(per_slice, stored):
    """Store {slice: {stage: (open deals, value, stalled)}}: the rows of ``stored``
    ({slice: pk}) updated, any other slice's created."""
    changed, new = [], []
    for slice_, by_stage in sorted(per_slice.items()):
        pk = stored.get(slice_)
        if pk is None:
            new.append(OpenNow(slice=slice_, stages=_encoded(by_stage)))
        else:
            changed.append((pk, _encoded(by_stage)))
    update_rows(OpenNow, ["stages"], changed)
    OpenNow.objects.bulk_create(new)


def add(delta):
    """Inside the worker's transaction (the ledger taken): add ``delta`` (``difference``s
    added up) to the table."""
    if not delta:
        return
    stored, current = {}, {}
    for pk, slice_, stages in OpenNow.objects.filter(slice__in=sorted(delta)).values_list(
        "pk", "slice", "stages"
    ):
        stored[slice_] = pk
        current[slice_] = {stage: list(v) for stage, v in _decoded(stages).items()}
    add_into(current, delta)
    _write(current, stored)


def read(slices):
    """{slice: {stage: (open deals, value, stalled)}} of ``slices`` as the table holds
    them: the company always, any other slice while it has an open deal (as
    ``company.open_now``)."""
    out = {"company": {}}
    for slice_, stages in OpenNow.objects.filter(slice__in=sorted(slices)).values_list(
        "slice", "stages"
    ):
        if stages or slice_ == "company":
            out[slice_] = _decoded(stages)
    return out


def replace(per_slice, as_of, limits, seen):
    """Inside a transaction (the ledger taken, no worker applying): the table counted
    from the deals (``per_slice``, as ``company.open_now``) at ``as_of`` with ``limits``;
    ``seen``: {pending row pk: the state read of its deal}, their ``before_open``."""
    stored = dict(OpenNow.objects.values_list("slice", "pk"))
    _write(per_slice, stored)
    OpenNow.objects.filter(
        pk__in=sorted(pk for slice_, pk in stored.items() if slice_ not in per_slice)
    ).delete()
    update_rows(PendingChange, ["before_open"], sorted(seen.items()))
    LedgerState.objects.filter(pk=1).update(open_as_of=as_of, open_limits=limits)


def pending_states():
    """{pending row pk: the state of its deal now}."""
    rows = dict(PendingChange.objects.values_list("deal_id", "pk"))
    read_ = states(list(rows))
    return {pk: read_.get(deal_id, []) for deal_id, pk in rows.items()}
