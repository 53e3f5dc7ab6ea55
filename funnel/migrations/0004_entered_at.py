"""When each history row and change-log row was entered, beside its business moment.

``at`` stays the moment the user gave (it may be back-dated: "the client agreed on
Monday"); ``entered_at`` is the server's clock at the write. Rows written before this
migration were never stamped, so they are backfilled with ``entered_at = at``: the best
the database knows, and exact for every row whose moment was not back-dated. The column
is added nullable, filled in, then made non-null. No index: no query filters or sorts
on it (the admin lists and the deal page read a deal's rows by ``deal`` and ``at``).
"""

import django.utils.timezone
from django.db import migrations, models


def backfill(apps, schema_editor):
    for name in ("StageHistory", "DealChange"):
        # One UPDATE per table: no row is loaded into Python.
        apps.get_model("funnel", name).objects.update(entered_at=models.F("at"))


class Migration(migrations.Migration):
    dependencies = [
        ("funnel", "0003_kpi_range_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="stagehistory",
            name="entered_at",
            field=models.DateTimeField(editable=False, null=True, verbose_name="entered at"),
        ),
        migrations.AddField(
            model_name="dealchange",
            name="entered_at",
            field=models.DateTimeField(editable=False, null=True, verbose_name="entered at"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="stagehistory",
            name="entered_at",
            field=models.DateTimeField(
                default=django.utils.timezone.now,
                editable=False,
                help_text="When the row was written: the server's clock, never typed in.",
                verbose_name="entered at",
            ),
        ),
        migrations.AlterField(
            model_name="dealchange",
            name="entered_at",
            field=models.DateTimeField(
                default=django.utils.timezone.now,
                editable=False,
                help_text="When the row was written: the server's clock, never typed in.",
                verbose_name="entered at",
            ),
        ),
    ]
