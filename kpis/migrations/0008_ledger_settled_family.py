"""The ledger keeps a new family ("settled", read by the owner timeline of an
incremental recompute): rows built before it lack it, so the ledger is marked unbuilt
and the next recompute builds it again from the deals."""

from django.db import migrations


def unbuild(apps, schema_editor):
    apps.get_model("kpis", "LedgerState").objects.update(built_at=None)


class Migration(migrations.Migration):
    dependencies = [("kpis", "0007_hourly_inputs")]

    operations = [migrations.RunPython(unbuild, migrations.RunPython.noop)]
