"""``manage.py circuits``: list, inspect and steer circuits from a shell or a script.

Subcommands: ``list``, ``show NAME``, the operator moves of
:data:`circuitbreaker_app.operator.MOVES` (``open NAME`` FORCED_OPEN, ``close NAME``
FORCED_CLOSED, ``disable NAME`` DISABLED, each with ``--for 15m`` to end by itself, and
``reset NAME`` CLOSED with an empty window), ``probe NAME`` (enqueue the probe task) and
``sync`` (create the circuits of ``CIRCUITBREAKER["CIRCUITS"]``). Every subcommand takes
``--json``.

Exit codes: 0 done; 1 an error (unknown circuit, database or broker down, invalid
settings), printed as one line; 2 bad usage (unknown subcommand or option); 3 with
``list --check`` or ``show --check`` when a listed circuit rejects calls (open, half-open
or forced open), for cron jobs and health checks.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from circuitbreaker_app.core import State
from circuitbreaker_app.live import LiveStatus, live_statuses, with_trip
from circuitbreaker_app.operator import MOVES, MOVES_BY_COMMAND, parse_duration
from circuitbreaker_app.store.persistence import TRANSITION_RECORD

EXIT_REJECTING = 3
EVENTS_SHOWN = 10


def printable(value: Any) -> str:
    """``value`` as text safe to print on a terminal: control and format characters
    (ESC, BEL, CR, newlines, bidirectional overrides…) are shown escaped (``\\x1b``), so
    a description or reason cannot clear the screen, retitle the window or hide text."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with columns as wide as their widest cell."""
    cells = [[printable(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def _when(value: datetime | float | None) -> str:
    """A time for the text output: UTC to the second."""
    if value is None:
        return "-"
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def _rates(status: LiveStatus) -> tuple[str, str, str]:
    """Failure %, slow %, calls; while open, the window's numbers at the trip (starred)."""
    slow_on = status.circuit.slow_call_duration is not None
    if status.trip is not None:
        trip = status.trip
        return (
            f"{trip.failure_rate:.1f}*",
            f"{trip.slow_call_rate:.1f}*" if slow_on else "-",
            f"{trip.calls}*",
        )
    return (
        f"{status.failure_rate:.1f}",
        f"{status.slow_call_rate:.1f}" if slow_on else "-",
        str(status.window.calls),
    )


class OwnTransitions(logging.Filter):
    """Drops the store's "circuit 'x': a -> b" log line while the command runs: the
    command prints that change itself, so a console showed it twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, TRANSITION_RECORD, False)


#: The options every Django command takes, which each subcommand accepts too; all but
#: --force-color, which `--for` would abbreviate on the subcommands without a duration
#: (`reset NAME --for 15m` must stay an error about --for).
DJANGO_OPTIONS = frozenset(
    ("verbosity", "settings", "pythonpath", "traceback", "no_color", "skip_checks")
)


class Command(BaseCommand):
    help = (
        "List, show and steer circuit breakers: list | show NAME | open NAME | close NAME | "
        "reset NAME | disable NAME | probe NAME | sync. Exit 0 done, 1 error, 2 bad usage, "
        "3 (with --check) a circuit rejects calls."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND", title="subcommands"
        )

        # Django's own options (--settings, -v, --traceback, …) belong to the command's
        # parser, which argparse asks only before the subcommand: each subcommand takes
        # them too, as every other command does after its arguments (`circuits list
        # --settings=proj.prod`). SUPPRESS: one not given leaves the command's value alone.
        shared = [action for action in parser._actions if action.dest in DJANGO_OPTIONS]

        def add(name: str, help_text: str, needs_name: bool) -> CommandParser:
            cmd = sub.add_parser(name, help=help_text, description=help_text)
            if needs_name:
                cmd.add_argument("name", metavar="NAME", help="the circuit's name")
            cmd.add_argument("--json", action="store_true", help="print JSON instead of text")
            django_group = cmd.add_argument_group("Django's options")
            for action in shared:
                options: dict[str, Any] = {"dest": action.dest, "help": action.help}
                if action.nargs == 0:  # a flag
                    options["action"] = "store_true"
                else:
                    options.update(type=action.type, choices=action.choices)
                django_group.add_argument(
                    *action.option_strings, default=argparse.SUPPRESS, **options
                )
            return cmd

        listing = add("list", "Every circuit with its state and current window.", False)
        listing.add_argument(
            "--state",
            choices=[state.value for state in State],
            help="only circuits in this state",
        )
        listing.add_argument(
            "--check", action="store_true", help="exit 3 when a listed circuit rejects calls"
        )
        show = add("show", "One circuit: definition, live state and latest events.", True)
        show.add_argument(
            "--check", action="store_true", help="exit 3 when the circuit rejects calls"
        )
        for move in MOVES:
            cmd = add(move.command, f"{move.effect} (state {move.state.value})", True)
            cmd.add_argument("--reason", default="", help="recorded on the event")
            cmd.add_argument(
                "--user", metavar="USERNAME", help="the acting user recorded on the event"
            )
            if move.takes_duration:
                cmd.add_argument(
                    "--for",
                    dest="duration",
                    metavar="DURATION",
                    help="end the state by itself after DURATION (30s, 15m, 1h, 4h, 2d); "
                    "default: until reset",
                )
        add("probe", "Enqueue the probe task for the circuit (needs a Celery worker).", True)
        add("sync", "Create the circuits of CIRCUITBREAKER['CIRCUITS'] that are missing.", False)

    def handle(self, *args: Any, **options: Any) -> None:
        subcommand = options["subcommand"]
        handler = getattr(self, f"do_{subcommand}", None)
        if handler is None:  # pragma: no cover - argparse rejects unknown subcommands
            raise CommandError(f"unknown subcommand {subcommand!r}")
        logger = logging.getLogger("circuitbreaker_app")
        quiet = OwnTransitions()
        logger.addFilter(quiet)
        try:
            handler(**options)
        except DatabaseError as exc:
            raise CommandError(f"database error: {exc}") from exc
        finally:
            logger.removeFilter(quiet)

    # -- helpers ------------------------------------------------------------------------
    def _emit(self, options: dict[str, Any], data: Any, text: str) -> None:
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2, sort_keys=True))
        else:
            self.stdout.write(text)

    def _circuit(self, name: str) -> Any:
        from circuitbreaker_app.models import Circuit

        circuit = with_trip(Circuit.objects.filter(name=name)).first()
        if circuit is None:
            names = list(Circuit.objects.values_list("name", flat=True))
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise CommandError(
                f"no circuit named {name!r}.{hint} `manage.py circuits list` shows them all."
            )
        return circuit

    def _user(self, username: str | None) -> Any:
        if not username:
            return None
        model = get_user_model()
        try:
            return model._default_manager.get_by_natural_key(username)
        except model.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None

    def _check(self, options: dict[str, Any], statuses: list[LiveStatus]) -> None:
        rejecting = [status.name for status in statuses if status.rejects_calls]
        if options.get("check") and rejecting:
            raise CommandError(
                f"{len(rejecting)} circuit(s) reject calls: {', '.join(rejecting)}",
                returncode=EXIT_REJECTING,
            )

    # -- subcommands ----------------------------------------------------------------------
    def do_list(self, **options: Any) -> None:
        from circuitbreaker_app.models import Circuit

        rows = with_trip(Circuit.objects.order_by("name"))
        if options.get("state"):
            rows = rows.filter(state=options["state"])
        statuses = live_statuses(rows)
        text_rows = [
            (s.name, s.state.value, *_rates(s), _seconds(s.retry_after), _when(s.changed_at))
            for s in statuses
        ]
        text = "No circuits."
        if statuses:
            text = table(
                ("NAME", "STATE", "FAILURE %", "SLOW %", "CALLS", "TRIAL IN", "LAST TRANSITION"),
                text_rows,
            )
            if any(s.trip is not None for s in statuses):
                text += "\n* while open: the window as it was when the circuit opened"
        self._emit(options, [s.as_json() for s in statuses], text)
        self._check(options, statuses)

    def do_show(self, **options: Any) -> None:
        circuit = self._circuit(options["name"])
        status = live_statuses([circuit])[0]
        events = list(
            circuit.events.select_related("actor").order_by("-created_at", "-id")[:EVENTS_SHOWN]
        )
        data = status.as_json()
        data["description"] = circuit.description
        data["config"].update(
            backoff_multiplier=circuit.backoff_multiplier,
            max_wait_duration=circuit.max_wait_duration,
            trial_lease=circuit.trial_lease,
            probe_timeout=circuit.probe_timeout,
        )
        from circuitbreaker_app import samples

        periods = samples.history([circuit.pk])[circuit.pk]
        recent = sum(point.rejected for point in periods)
        data["rejected_per_period"] = [
            {"t": _iso(point.at), "rejected": point.rejected} for point in periods
        ]
        data["events"] = [
            {
                "at": event.created_at.isoformat(),
                "from": event.from_state,
                "to": event.to_state,
                "reason": event.reason,
                "actor": event.actor.get_username() if event.actor else None,
                "changes": event.changes,
            }
            for event in events
        ]
        window = status.window
        facts: list[tuple[str, Any]] = [
            ("name", circuit.name),
            ("description", circuit.description),
            ("state", status.state.value),
            ("trial in", _seconds(status.retry_after)),
            (
                "window",
                f"{window.calls} calls, {window.failures} failures "
                f"({status.failure_rate:.1f} %), {window.slow} slow "
                f"({status.slow_call_rate:.1f} %)",
            ),
        ]
        if status.trip is not None:
            facts.append(
                (
                    "at the trip",
                    f"{status.trip.calls} calls, failure rate {status.trip.failure_rate:.1f} %, "
                    f"slow-call rate {status.trip.slow_call_rate:.1f} %",
                )
            )
        facts += [
            (
                "rejected calls",
                f"{status.rejected} in total, {recent} in the last "
                f"{int(samples.HISTORY.total_seconds() // 60)} min",
            ),
            ("consecutive opens", status.open_count),
            ("generation", status.generation),
            ("last transition", _when(status.changed_at)),
        ]
        facts += [(key.replace("_", " "), value) for key, value in data["config"].items()]
        width = max(len(key) for key, _ in facts)
        lines = [
            f"{key.ljust(width)}  {'-' if value in (None, '') else printable(value)}"
            for key, value in facts
        ]
        lines += ["", f"Latest events ({len(events)}):"]
        if events:
            rows = [
                (
                    _when(event.created_at),
                    event.from_state,
                    event.to_state,
                    entry["actor"] or "-",
                    event.reason,
                )
                for event, entry in zip(events, data["events"], strict=True)
            ]
            lines.append(table(("TIME", "FROM", "TO", "BY", "REASON"), rows))
        else:
            lines.append("(none)")
        self._emit(options, data, "\n".join(lines))
        self._check(options, [status])

    def _move(self, **options: Any) -> None:
        subcommand = options["subcommand"]
        move = MOVES_BY_COMMAND[subcommand]
        until = None
        if options.get("duration") is not None:
            try:
                until = parse_duration(options["duration"])
            except ValueError as exc:
                raise CommandError(f"--for: {exc}") from None
        circuit = self._circuit(options["name"])
        user = self._user(options.get("user"))
        reason = options.get("reason") or f"manage.py circuits {subcommand}"
        old = circuit.state
        changed = move(circuit.name, until=until, reason=reason, actor=user)
        circuit.refresh_from_db(fields=["state", "forced_until"])
        data = {
            "circuit": circuit.name,
            "from": old,
            "to": circuit.state,
            "changed": changed,
            "until": circuit.forced_until.isoformat() if circuit.forced_until else None,
        }
        ends = f" until {_when(circuit.forced_until)}" if circuit.forced_until else ""
        if changed:
            text = f"{circuit.name}: {old} -> {circuit.state}{ends}"
        else:
            text = f"{circuit.name}: already {circuit.state}{ends} (unchanged)"
        self._emit(options, data, text)

    do_open = do_close = do_reset = do_disable = _move

    def do_probe(self, **options: Any) -> None:
        circuit = self._circuit(options["name"])
        try:
            from circuitbreaker_app.tasks import probe_circuit
        except ImportError as exc:
            raise CommandError(f"the probe task is not available: {exc}") from exc
        try:
            result = probe_circuit.delay(circuit.name)
        except Exception as exc:  # broker down or misconfigured: one line, no traceback
            raise CommandError(
                f"could not enqueue the probe of {circuit.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        task_id = getattr(result, "id", None)
        self._emit(
            options,
            {"circuit": circuit.name, "enqueued": True, "task_id": task_id},
            f"{circuit.name}: probe enqueued" + (f" (task {task_id})" if task_id else ""),
        )

    def do_sync(self, **options: Any) -> None:
        from circuitbreaker_app.sync import sync_circuits

        try:
            created = sync_circuits()
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        text = f"created: {', '.join(created)}" if created else "nothing to create"
        self._emit(options, {"created": created}, text)
