from django.db import migrations

DEFAULT_LOST_REASONS = [
    ("price", "Price", "Cena"),
    ("competitor", "Chose a competitor", "Wybór konkurencji"),
    ("no_budget", "No budget", "Brak budżetu"),
    ("no_decision", "No decision", "Brak decyzji"),
    ("timing", "Timing", "Nieodpowiedni moment"),
    ("not_qualified", "Not qualified", "Niezakwalifikowany"),
    ("no_response", "No response", "Brak odpowiedzi"),
    ("other", "Other", "Inny"),
]


def add_reasons(apps, schema_editor):
    LostReason = apps.get_model("funnel", "LostReason")
    for position, (code, name_en, name_pl) in enumerate(DEFAULT_LOST_REASONS, start=1):
        LostReason.objects.get_or_create(
            code=code, defaults={"name_en": name_en, "name_pl": name_pl, "position": position}
        )


class Migration(migrations.Migration):
    dependencies = [("funnel", "0001_initial")]

    operations = [migrations.RunPython(add_reasons, migrations.RunPython.noop)]
