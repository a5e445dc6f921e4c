# Operator states with an end (circuitbreaker_app.operator, ``until``).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("circuitbreaker_app", "0005_circuitsample_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="circuit",
            name="forced_until",
            field=models.DateTimeField(editable=False, null=True, verbose_name="forced until"),
        ),
    ]
