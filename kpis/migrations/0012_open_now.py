"""The open deals now kept by difference (kpis.opennow): their table, when it was last
counted from the deals, and each pending change's state of its deal. Left uncounted:
the next recompute of every slice of today counts it."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0011_ledger_pipeline_family"),
    ]

    operations = [
        migrations.CreateModel(
            name="OpenNow",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("slice", models.CharField(max_length=140, unique=True, verbose_name="slice")),
                ("stages", models.JSONField(default=dict, verbose_name="per stage")),
            ],
            options={
                "verbose_name": "open deals now",
                "verbose_name_plural": "open deals now",
            },
        ),
        migrations.AddField(
            model_name="ledgerstate",
            name="open_as_of",
            field=models.DateTimeField(blank=True, null=True, verbose_name="open deals counted at"),
        ),
        migrations.AddField(
            model_name="ledgerstate",
            name="open_limits",
            field=models.JSONField(blank=True, null=True, verbose_name="stall limits used"),
        ),
        migrations.AddField(
            model_name="pendingchange",
            name="before_open",
            field=models.JSONField(
                blank=True, default=None, null=True, verbose_name="open deal before"
            ),
        ),
    ]
