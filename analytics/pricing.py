"""Model prices: the data file analytics/pricing.json seeds ModelPrice, which admins edit."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson

from analytics.models import ModelPrice

PRICING_FILE = Path(__file__).with_name("pricing.json")


def load_pricing(*, path: Path = PRICING_FILE, overwrite: bool = False) -> int:
    """Insert prices from the data file; existing rows are kept unless ``overwrite``."""
    count = 0
    for row in orjson.loads(path.read_bytes())["prices"]:
        values = {"input_per_million": Decimal(row["input"]), "output_per_million": Decimal(row["output"])}
        if overwrite:
            ModelPrice.objects.update_or_create(model=row["model"], defaults=values)
            count += 1
        else:
            _, created = ModelPrice.objects.get_or_create(model=row["model"], defaults=values)
            count += created
    return count
