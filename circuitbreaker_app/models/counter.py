"""Shared counters kept in the database, for caches that cannot count atomically."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class CircuitCounter(models.Model):
    """Atomic shared counters for caches whose ``incr``/``add`` are not atomic.

    Django's database and file caches implement ``incr`` as get + set (DESIGN §6), so on
    those the store counts with ``INSERT … ON CONFLICT … RETURNING`` on this table instead,
    and keeps count windows here as JSON written by compare-and-set.
    """

    key = models.CharField(max_length=250, primary_key=True)
    #: The count, or for a count window (``data`` set) the version its writes compare.
    value = models.BigIntegerField(default=0)
    #: A count window as JSON (see ``buckets.apply_count``); empty for plain counters.
    data = models.TextField(blank=True, default="")
    expires_at = models.FloatField(db_index=True)

    class Meta:
        verbose_name = _("shared counter")
        verbose_name_plural = _("shared counters")

    def __str__(self) -> str:
        return f"{self.key}={self.value}"
