"""Counters in the ``CircuitCounter`` table, for caches without an atomic ``incr``
(database, file, memcached caches): exact across processes (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connections

from circuitbreaker_app.store.backends.base import Counters, decode, encode
from circuitbreaker_app.store.windows import CountAdd, apply_count, parse_count

#: Compare-and-set rounds before a count-window write gives up (and the process counts
#: that outcome on its own, as in an outage); each lost round means another write landed.
COUNT_CAS_ATTEMPTS = 20


class CountContention(RuntimeError):
    """A count-window write lost every compare-and-set round to other writers."""


class DatabaseCounters(Counters):
    """Counters in the ``CircuitCounter`` table, for caches without atomic ``incr``.

    One ``INSERT … ON CONFLICT … RETURNING`` statement per operation (SQLite ≥ 3.35 and
    PostgreSQL), exact across processes (DESIGN §6).
    """

    needs_purge = True

    def __init__(self, alias: str, wall: Callable[[], float]) -> None:
        from circuitbreaker_app.models import CircuitCounter

        self.alias = alias
        self.wall = wall
        connection = connections[alias]
        self.table = connection.ops.quote_name(CircuitCounter._meta.db_table)

    def _fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
        now = self.wall()
        t = self.table
        rows = self._fetch(
            f"INSERT INTO {t} (key, value, data, expires_at) VALUES (%s, %s, '', %s) "
            f"ON CONFLICT (key) DO UPDATE SET "
            f"value = CASE WHEN {t}.expires_at <= %s THEN excluded.value "
            f"ELSE {t}.value + excluded.value END, "
            f"expires_at = CASE WHEN {t}.expires_at <= %s THEN excluded.expires_at "
            f"ELSE {t}.expires_at END RETURNING value",
            [key, delta, now + ttl, now, now],
        )
        return int(rows[0][0])

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        now = self.wall()
        t = self.table
        rows = self._fetch(
            f"INSERT INTO {t} (key, value, data, expires_at) VALUES (%s, %s, '', %s) "
            f"ON CONFLICT (key) DO UPDATE SET value = excluded.value, data = '', "
            f"expires_at = excluded.expires_at "
            # A row holding data is not a permit (a malformed value): taken over.
            f"WHERE {t}.expires_at <= %s OR {t}.data <> '' RETURNING key",
            [key, value, now + ttl, now],
        )
        return bool(rows)

    def release(self, key: str, value: int) -> None:
        self._fetch(
            f"DELETE FROM {self.table} WHERE key = %s AND value = %s RETURNING key", [key, value]
        )

    def add_count(self, change: CountAdd) -> list[int]:
        # Compare-and-set on the stored JSON (its ``seq`` grows with every write, so equal
        # text means nobody wrote in between). The first round trusts the window this
        # process last saw: one statement when nobody else wrote since, else read and retry.
        t = self.table
        now = self.wall()
        current: list[int] | None = change.known if len(change.known) > 1 else None
        known = encode(current) if current else None
        fresh = True  # the window we know may have expired meanwhile: only if unexpired
        for _ in range(COUNT_CAS_ATTEMPTS):
            if current is None:
                now = self.wall()
                rows = self._fetch(f"SELECT data, expires_at FROM {t} WHERE key = %s", [change.key])
                known, fresh = (rows[0][0] if rows else None), False
                live = rows and rows[0][1] > now and rows[0][0]
                current = parse_count(decode(rows[0][0])) if live else [0]
            window = apply_count(
                current, change.successes, change.outcome, change.seen, change.size
            )
            data = encode(window)
            if known is None:
                written = self._fetch(
                    f"INSERT INTO {t} (key, value, data, expires_at) VALUES (%s, 0, %s, %s) "
                    f"ON CONFLICT (key) DO NOTHING RETURNING key",
                    [change.key, data, now + change.ttl],
                )
            else:
                written = self._fetch(
                    f"UPDATE {t} SET data = %s, expires_at = %s WHERE key = %s AND data = %s "
                    f"AND expires_at > %s RETURNING key",
                    [data, now + change.ttl, change.key, known, now if fresh else -1.0],
                )
            if written:
                return window
            current = None
        raise CountContention(f"{change.key}: {COUNT_CAS_ATTEMPTS} writers in a row won")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        marks = ", ".join(["%s"] * len(keys))
        rows = self._fetch(
            f"SELECT key, value, data FROM {self.table} WHERE key IN ({marks}) AND expires_at > %s",
            [*keys, self.wall()],
        )
        return {key: decode(data) if data else int(value) for key, value, data in rows}

    def delete(self, key: str) -> None:
        self._fetch(f"DELETE FROM {self.table} WHERE key = %s RETURNING key", [key])

    def purge_expired(self) -> None:
        """Drop expired counters (called on transitions, never on the hot path)."""
        self._fetch(
            f"DELETE FROM {self.table} WHERE expires_at < %s RETURNING key", [self.wall() - 60]
        )


def handles(cache_alias: str) -> bool:
    """True for every cache: the fallback when no other backend applies (checks.py reports
    databases that cannot hold the counters)."""
    return True


def connect(cache_alias: str, db_alias: str, *, now: Callable[[], float], **clocks: Any) -> Any:
    """State entries in the Django cache ``cache_alias``, counters in ``db_alias``."""
    from django.core.cache import caches

    from circuitbreaker_app.store.backends import Backend

    return Backend("database", caches[cache_alias], DatabaseCounters(db_alias, now))
