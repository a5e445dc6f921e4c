"""Django admin for circuits: see every circuit at a glance, and steer them.

State columns are never edited in a form: every state change is an admin action generated
from :data:`circuitbreaker_app.operator.MOVES` (one compare-and-set, one event naming the
acting user, the ``state_changed`` signal, and an entry in the admin history). An action
first shows a confirmation page offering a duration (until reset, 15 min, 1 h, 4 h,
custom). Actions need the ``circuitbreaker_app.force_circuit`` permission; staff without
it do not see them, and a forged POST gets 403.

Importing this package (Django's admin autodiscovery does) registers
:class:`CircuitAdmin` (:mod:`.circuits`) and :class:`CircuitEventAdmin` (:mod:`.events`).
The other modules: :mod:`.changelist` (live columns), :mod:`.dashboard_views`,
:mod:`.actions` and :mod:`.moves` (the operator moves), :mod:`.forms`, :mod:`.display`
(badges and other HTML bits).
"""

from circuitbreaker_app.admin.actions import PERMISSION_ACTIONS, probe_now
from circuitbreaker_app.admin.changelist import LiveChangeList
from circuitbreaker_app.admin.circuits import CircuitAdmin
from circuitbreaker_app.admin.display import js_labels, state_badge, state_label
from circuitbreaker_app.admin.events import CircuitEventAdmin, CircuitEventInline
from circuitbreaker_app.admin.forms import CircuitForm
from circuitbreaker_app.admin.moves import MOVE_ACTIONS

__all__ = [
    "MOVE_ACTIONS",
    "PERMISSION_ACTIONS",
    "CircuitAdmin",
    "CircuitEventAdmin",
    "CircuitEventInline",
    "CircuitForm",
    "LiveChangeList",
    "js_labels",
    "probe_now",
    "state_badge",
    "state_label",
]
