# Rejected calls per sample period (the fleet's total when sampled).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("circuitbreaker_app", "0006_circuit_forced_until"),
    ]

    operations = [
        migrations.AddField(
            model_name="circuitsample",
            name="rejected_total",
            field=models.PositiveBigIntegerField(default=0, verbose_name="rejected calls in total"),
        ),
    ]
