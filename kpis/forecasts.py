"""The frozen forecast: at each period's first moment, the weighted pipeline expected
to close in it is frozen, so forecast accuracy has something to compare with when no
manager committed a forecast before the period began (domain.md, forecast_accuracy_pct).
"""

from django.utils import timezone

from kpis.company import CompanyKpis, stage_probabilities
from kpis.models import Forecast, ForecastKind
from kpis.periods import Grain, Period

FROZEN_GRAINS = (Grain.WEEK, Grain.MONTH, Grain.QUARTER, Grain.YEAR)


def freeze_forecasts(now=None):
    """Freeze the weighted pipeline of the periods that contain ``now`` (company and
    each team) unless already frozen. Runs shortly after midnight; safe to run again."""
    now = now or timezone.now()
    probabilities = stage_probabilities(now)
    today = timezone.localtime(now).date()
    created = 0
    for grain in FROZEN_GRAINS:
        period = Period.containing(grain, today)
        kpis = CompanyKpis(grain, [period], None, None, now, now)
        pipeline = kpis.open_pipeline(probabilities)
        for scope in ["company", *(f"team:{t}" for t in kpis.teams)]:
            _, weighted = pipeline.get((period.start, scope), (0, 0))
            team_id = None if scope == "company" else int(scope.split(":")[1])
            _, made = Forecast.objects.get_or_create(
                grain=grain,
                period_start=period.start,
                team_id=team_id,
                kind=ForecastKind.FROZEN,
                defaults={"amount": weighted, "entered_at": now},
            )
            created += made
    return created
