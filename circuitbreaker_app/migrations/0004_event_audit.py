"""Events outlive their circuit and record definition edits (DESIGN §4b).

``circuit_name`` keeps the circuit's name on every event (filled in from the circuit for
existing rows), the foreign key becomes nullable with ``SET_NULL`` so deleting a circuit
keeps its history, and ``changes`` holds the fields a definition edit or deletion changed.
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def fill_circuit_names(apps, schema_editor):
    Circuit = apps.get_model("circuitbreaker_app", "Circuit")
    CircuitEvent = apps.get_model("circuitbreaker_app", "CircuitEvent")
    db = schema_editor.connection.alias
    name = Circuit.objects.using(db).filter(pk=OuterRef("circuit_id")).values("name")[:1]
    CircuitEvent.objects.using(db).update(circuit_name=Subquery(name))


class Migration(migrations.Migration):
    dependencies = [
        ("circuitbreaker_app", "0003_circuitcounter_data"),
    ]

    operations = [
        migrations.AddField(
            model_name="circuitevent",
            name="circuit_name",
            field=models.CharField(
                db_index=True, default="", max_length=100, verbose_name="circuit name"
            ),
            preserve_default=False,
        ),
        migrations.RunPython(fill_circuit_names, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="circuitevent",
            name="circuit",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=models.deletion.SET_NULL,
                related_name="events",
                to="circuitbreaker_app.circuit",
                verbose_name="circuit",
            ),
        ),
        migrations.AddField(
            model_name="circuitevent",
            name="changes",
            field=models.JSONField(
                blank=True,
                help_text="For definition edits and deletions: {field: [old, new]}.",
                null=True,
                verbose_name="changed fields",
            ),
        ),
    ]
