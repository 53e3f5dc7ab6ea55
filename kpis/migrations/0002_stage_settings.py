from decimal import Decimal

from django.db import migrations

DEFAULTS = [
    ("lead", Decimal(5)),
    ("qualification", Decimal(10)),
    ("needs", Decimal(20)),
    ("offer", Decimal(35)),
    ("negotiation", Decimal(55)),
    ("closing", Decimal(85)),
]


def add_settings(apps, schema_editor):
    StageSetting = apps.get_model("kpis", "StageSetting")
    for stage, probability in DEFAULTS:
        StageSetting.objects.get_or_create(stage=stage, defaults={"default_probability_pct": probability})


class Migration(migrations.Migration):
    dependencies = [("kpis", "0001_initial")]

    operations = [migrations.RunPython(add_settings, migrations.RunPython.noop)]
