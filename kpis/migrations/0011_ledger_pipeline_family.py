"""The ledger keeps a new family ("pipeline": the open opportunities by expected close
date, read by the weighted pipeline and coverage of a recompute): rows built before it
lack it, so the ledger is marked unbuilt and the next recompute builds it again from
the deals (as 0008 did for "settled")."""

from django.db import migrations


def unbuild(apps, schema_editor):
    apps.get_model("kpis", "LedgerState").objects.update(built_at=None)


class Migration(migrations.Migration):
    dependencies = [("kpis", "0010_pending_change")]

    operations = [migrations.RunPython(unbuild, migrations.RunPython.noop)]
