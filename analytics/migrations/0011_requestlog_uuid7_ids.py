"""New log ids default to time-ordered UUIDv7 (analytics.ids); no schema change."""

import analytics.ids
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0010_requestlog_without_db_foreign_keys'),
    ]

    operations = [
        migrations.AlterField(
            model_name='requestlog',
            name='id',
            field=models.UUIDField(default=analytics.ids.uuid7, editable=False, primary_key=True, serialize=False),
        ),
    ]
