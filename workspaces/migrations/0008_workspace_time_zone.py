from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("workspaces", "0007_routing_config")]

    operations = [
        migrations.AddField(
            model_name="workspace",
            name="time_zone",
            field=models.CharField(
                default="UTC",
                help_text="IANA time zone (e.g. Europe/Paris) of calendar windows: a policy's day and month.",
                max_length=64,
            ),
        ),
    ]
