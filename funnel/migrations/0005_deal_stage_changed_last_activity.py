"""The deal keeps its latest stage-history moment and its latest activity (for the
stalled deals now, kpis.company.open_now); existing deals are filled from their rows."""

from django.db import migrations, models
from django.db.models import Max, OuterRef, Subquery


def fill(apps, schema_editor):
    Deal = apps.get_model("funnel", "Deal")
    StageHistory = apps.get_model("funnel", "StageHistory")
    Activity = apps.get_model("funnel", "Activity")

    def latest(model, field):
        return Subquery(
            model.objects.filter(deal=OuterRef("pk"))
            .order_by()
            .values("deal")
            .annotate(latest=Max(field))
            .values("latest")
        )

    Deal.objects.update(
        stage_changed_at=latest(StageHistory, "at"),
        last_activity_at=latest(Activity, "held_at"),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("funnel", "0004_entered_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="deal",
            name="last_activity_at",
            field=models.DateTimeField(
                blank=True, editable=False, null=True, verbose_name="last activity"
            ),
        ),
        migrations.AddField(
            model_name="deal",
            name="stage_changed_at",
            field=models.DateTimeField(
                blank=True, editable=False, null=True, verbose_name="last stage change"
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop, elidable=True),
    ]
