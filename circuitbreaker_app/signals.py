"""Signals sent by circuit breakers.

``state_changed(sender=Circuit, name, old_state, new_state, reason)`` is sent once per
real transition, after the transaction that recorded it commits.
"""

from django.dispatch import Signal

state_changed = Signal()
