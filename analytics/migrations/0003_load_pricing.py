"""Once seeded ModelPrice from analytics/pricing.json. Prices now come from the genai-prices
catalogue and ModelPrice holds overrides only (0013 removes the seeded rows nobody edited), so
a new installation starts with no rows here."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("analytics", "0002_postgres_metadata_gin")]
    operations = []
