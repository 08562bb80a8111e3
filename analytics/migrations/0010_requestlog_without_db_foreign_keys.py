"""RequestLog.workspace and .api_key keep their Django relations but lose the database foreign
keys: their deferred checks ran once per inserted row at commit. The log writer locks the
referenced rows once per batch instead (analytics.ingest._existing_ids)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0009_dimension_rollup_window_sums"),
        ("workspaces", "0003_auditevent"),
    ]

    operations = [
        migrations.AlterField(
            model_name="requestlog",
            name="api_key",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="workspaces.apikey",
            ),
        ),
        migrations.AlterField(
            model_name="requestlog",
            name="workspace",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="workspaces.workspace",
            ),
        ),
    ]
