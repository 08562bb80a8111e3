"""Model prices: the data file analytics/pricing.json seeds ModelPrice, which admins edit.
Every write goes through ``price_create``/``price_update``/``price_delete`` so it lands in the
audit trail (prices belong to the whole installation: their events have no workspace)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import orjson
from django.db import transaction

from analytics.models import ModelPrice
from workspaces.models import AuditEvent
from workspaces.services import Actor, delete_audited, register_audited, save_audited, stored_snapshot

PRICING_FILE = Path(__file__).with_name("pricing.json")

register_audited(
    ModelPrice, object_type="model_price", fields=["model", "input_per_million", "output_per_million", "currency"]
)


def price_create(
    *,
    model: str,
    input_per_million: Decimal,
    output_per_million: Decimal,
    currency: str = "USD",
    actor: Actor = None,
    via: str = AuditEvent.Via.SYSTEM,
) -> ModelPrice:
    price = ModelPrice(
        model=model, input_per_million=input_per_million, output_per_million=output_per_million, currency=currency
    )
    price.full_clean()
    save_audited(price, action="model_price.create", before={}, actor=actor, via=via)
    return price


def price_update(
    *, price: ModelPrice, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM, **fields: object
) -> ModelPrice:
    """Change a price (or save a new one the admin built); an unchanged price records nothing."""
    before = stored_snapshot(price)
    for name, value in fields.items():
        setattr(price, name, value)
    price.full_clean()
    action = "model_price.update" if before else "model_price.create"
    save_audited(price, action=action, before=before, actor=actor, via=via, only_if_changed=True)
    return price


def price_delete(*, price: ModelPrice, actor: Actor = None, via: str = AuditEvent.Via.SYSTEM) -> None:
    delete_audited(price, action="model_price.delete", actor=actor, via=via)


def load_pricing(*, path: Path = PRICING_FILE, overwrite: bool = False, via: str = AuditEvent.Via.SYSTEM) -> int:
    """Insert prices from the data file; existing rows are kept unless ``overwrite``. Returns
    how many prices were written."""
    count = 0
    existing = {price.model: price for price in ModelPrice.objects.all()}
    with transaction.atomic():
        for row in orjson.loads(path.read_bytes())["prices"]:
            values = {"input_per_million": Decimal(row["input"]), "output_per_million": Decimal(row["output"])}
            price = existing.get(row["model"])
            if price is None:
                price_create(model=row["model"], via=via, **values)
            elif overwrite:
                price_update(price=price, via=via, **values)
            else:
                continue
            count += 1
    return count
