# Samples every 10 seconds instead of every minute: the minute column becomes "at".

from django.db import migrations, models


def drop_samples(apps, schema_editor):
    """Per-minute samples would read as 10-second ones: the sparklines start afresh."""
    apps.get_model("circuitbreaker_app", "CircuitSample").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("circuitbreaker_app", "0004_event_audit"),
    ]

    operations = [
        migrations.RunPython(drop_samples, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="circuitsample", name="circuitsample_per_minute"),
        migrations.RenameField(model_name="circuitsample", old_name="minute", new_name="at"),
        migrations.AlterField(
            model_name="circuitsample",
            name="at",
            field=models.DateTimeField(db_index=True, verbose_name="period start"),
        ),
        migrations.AlterModelOptions(
            name="circuitsample",
            options={
                "ordering": ["circuit", "at"],
                "verbose_name": "circuit sample",
                "verbose_name_plural": "circuit samples",
            },
        ),
        migrations.AddConstraint(
            model_name="circuitsample",
            constraint=models.UniqueConstraint(
                fields=("circuit", "at"), name="circuitsample_per_period"
            ),
        ),
    ]
