from decimal import Decimal
from pathlib import Path

import orjson
from django.db import migrations


def load(apps, schema_editor):
    ModelPrice = apps.get_model("analytics", "ModelPrice")
    data = orjson.loads((Path(__file__).resolve().parent.parent / "pricing.json").read_bytes())
    for row in data["prices"]:
        ModelPrice.objects.get_or_create(
            model=row["model"],
            defaults={"input_per_million": Decimal(row["input"]), "output_per_million": Decimal(row["output"])},
        )


class Migration(migrations.Migration):
    dependencies = [("analytics", "0002_postgres_metadata_gin")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
