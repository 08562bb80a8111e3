"""GIN (jsonb_path_ops) index on metadata for `metadata @> {...}` filters; Postgres only, the
embedded SQLite default scans within the (workspace, created_at) window instead."""

from django.db import migrations


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS log_metadata_gin ON analytics_requestlog USING gin (metadata jsonb_path_ops)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS log_metadata_gin")


class Migration(migrations.Migration):
    dependencies = [("analytics", "0001_initial")]
    operations = [migrations.RunPython(create_index, drop_index)]
