"""portico_hist_merge(a, b): adds two sparse latency histograms ({"bucket": count} jsonb), so
rollup upserts merge histograms in the same statement that adds the counters
(analytics.rollups). Postgres only; on SQLite the merge happens in Python."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION portico_hist_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(bucket, total), '{}'::jsonb)
    FROM (
        SELECT bucket, sum(count::bigint) AS total
        FROM (
            SELECT * FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
            UNION ALL
            SELECT * FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
        ) AS pairs(bucket, count)
        GROUP BY bucket
    ) AS sums
$$
"""


def create_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS portico_hist_merge(jsonb, jsonb)")


class Migration(migrations.Migration):
    dependencies = [("analytics", "0004_dimensionrollup_feedback_metadatakey_metadatarollup")]
    operations = [migrations.RunPython(create_function, drop_function)]
