"""Prices now come from the genai-prices catalogue (analytics.pricing); ModelPrice rows are
overrides that beat it. The rows 0003 seeded from the old analytics/pricing.json would override
the catalogue with input/output rates only (cached tokens charged at the full input rate), so
the ones nobody changed since are removed; rows an admin edited stay as overrides."""

from decimal import Decimal

from django.db import migrations

SEEDED = [
    ("gpt-4o", "2.50", "10.00"),
    ("gpt-4o-mini", "0.15", "0.60"),
    ("gpt-4.1", "2.00", "8.00"),
    ("gpt-4.1-mini", "0.40", "1.60"),
    ("gpt-4.1-nano", "0.10", "0.40"),
    ("gpt-4-turbo", "10.00", "30.00"),
    ("gpt-4", "30.00", "60.00"),
    ("gpt-3.5-turbo", "0.50", "1.50"),
    ("o1", "15.00", "60.00"),
    ("o3-mini", "1.10", "4.40"),
    ("o4-mini", "1.10", "4.40"),
    ("text-embedding-3-small", "0.02", "0"),
    ("text-embedding-3-large", "0.13", "0"),
    ("text-embedding-ada-002", "0.10", "0"),
    ("gpt-3.5-turbo-instruct", "1.50", "2.00"),
]


def drop_seeded(apps, schema_editor):
    ModelPrice = apps.get_model("analytics", "ModelPrice")
    for model, input_rate, output_rate in SEEDED:
        ModelPrice.objects.filter(
            workspace__isnull=True,
            model=model,
            input_per_million=Decimal(input_rate),
            output_per_million=Decimal(output_rate),
            currency="USD",
        ).delete()


class Migration(migrations.Migration):
    dependencies = [("analytics", "0014_usage_parts_price_version_overrides")]
    operations = [migrations.RunPython(drop_seeded, migrations.RunPython.noop)]
