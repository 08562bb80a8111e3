"""RequestBody.log keeps its Django relation but loses the database foreign key: the next
migration partitions RequestLog on Postgres, whose primary key then becomes (id, created_at)
and `id` alone can no longer be referenced."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("analytics", "0005_rollup_hist_merge")]

    operations = [
        migrations.AlterField(
            model_name="requestbody",
            name="log",
            field=models.OneToOneField(
                db_constraint=False,
                on_delete=django.db.models.deletion.CASCADE,
                primary_key=True,
                related_name="body",
                serialize=False,
                to="analytics.requestlog",
            ),
        ),
    ]
