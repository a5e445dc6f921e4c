"""Bad input at every entry point a user or operator touches: clear errors, nothing written.

Hypothesis throws negative, zero, NaN, infinite, huge, wrongly typed, unicode and SQL-ish
values at ``breaker()`` names and options, the ``CIRCUITBREAKER`` setting (through the
system checks), ``Circuit.full_clean()``, the admin's add form and the ``circuits``
command. Each must answer with its documented error (TypeError/ValueError naming the
option, check messages, ValidationError, a re-rendered form, CommandError) and never
leave a row behind.
"""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.checks import CheckMessage
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from circuitbreaker_app import breaker, conf
from circuitbreaker_app.checks import check_settings
from circuitbreaker_app.core.config import NAME_RE
from circuitbreaker_app.models import DEFINITION_FIELDS, Circuit, CircuitEvent
from tests.helpers import form_data, run_cli

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SQLISH = [
    "x'; DROP TABLE circuitbreaker_app_circuit; --",
    "1 OR 1=1",
    '"; DELETE FROM auth_user; --',
    "payments\x00",
    "pay ments",
    "payments\n",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "名前",
    "💥",
    "",
    " ",
    "a" * 101,
    "%s%s%s",
    "{0.__class__}",
]
NUMBERS = st.one_of(
    st.integers(-5, 5),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.integers(max_value=-(10**18)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, -1, 1e-300, 1e308, float("nan"), float("inf"), -float("inf")]),
)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=30),
    st.sampled_from(SQLISH),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.tuples(st.integers(), st.text(max_size=3)),
)


def row_counts() -> tuple[int, int]:
    return Circuit.objects.count(), CircuitEvent.objects.count()


# -- breaker() -----------------------------------------------------------------------------


@FUZZ
@given(name=st.one_of(st.text(max_size=120), st.sampled_from(SQLISH), JUNK))
def test_breaker_names_are_valid_or_rejected_clearly_and_nothing_is_written(name):
    before = row_counts()
    if isinstance(name, str) and NAME_RE.fullmatch(name):
        assert breaker(name).name == name
    else:
        with pytest.raises((TypeError, ValueError), match="circuit name"):
            breaker(name)
    assert row_counts() == before  # a handle never writes; first use does


@settings(max_examples=60, deadline=None)
@given(name=st.from_regex(NAME_RE, fullmatch=True))
def test_any_valid_name_works_end_to_end_and_makes_exactly_its_row(name):
    assert breaker(name).call(lambda: "ok") == "ok"
    assert list(Circuit.objects.filter(name=name).values_list("name", flat=True)) == [name]


def _exception_types_ok(value) -> bool:
    items = value if isinstance(value, tuple | list) else (value,)
    return all(isinstance(i, type) and issubclass(i, BaseException) for i in items)


@FUZZ
@given(
    option=st.sampled_from(["record", "ignore"]),
    value=st.one_of(
        JUNK,
        st.sampled_from([int, str, object, (ValueError, 3), [KeyError, "x"], (), [OSError]]),
    ),
)
def test_bad_exception_options_name_the_option(option, value):
    if _exception_types_ok(value):
        breaker("payments", **{option: value})
        return
    with pytest.raises(TypeError, match=f"option '{option}'"):
        breaker("payments", **{option: value})


@FUZZ
@given(option=st.sampled_from(["is_failure", "fallback"]), value=JUNK)
def test_non_callable_hooks_name_the_option(option, value):
    if value is None:
        breaker("payments", **{option: value})
        return
    with pytest.raises(TypeError, match=f"option '{option}'"):
        breaker("payments", **{option: value})


@FUZZ
@given(option=st.text(min_size=1, max_size=20).filter(str.isidentifier), value=JUNK)
def test_unknown_options_are_named(option, value):
    if option in ("record", "ignore", "is_failure", "fallback"):
        return
    with pytest.raises(TypeError, match="unknown option"):
        breaker("payments", **{option: value})


# -- settings ------------------------------------------------------------------------------

FIELD_VALUES = st.one_of(
    JUNK, st.sampled_from(["count", "time", "live", "probe", "http://x", "ftp://x"])
)
DEFINITIONS = st.dictionaries(
    st.one_of(st.sampled_from(DEFINITION_FIELDS), st.text(max_size=8)), FIELD_VALUES, max_size=4
)
SETTING_VALUES = st.one_of(
    JUNK,
    DEFINITIONS,
    st.dictionaries(
        st.one_of(st.sampled_from(SQLISH), st.text(max_size=12), NUMBERS, st.none()),
        DEFINITIONS | JUNK,
        max_size=3,
    ),
)


@FUZZ
@given(
    value=st.one_of(
        JUNK,
        st.dictionaries(
            st.one_of(st.sampled_from(list(conf.DEFAULTS)), st.text(max_size=8)),
            SETTING_VALUES,
            max_size=5,
        ),
    )
)
# Drawn once by `make test` in a fresh clone: sorting keys of mixed types raised TypeError.
@example({"DEFAULTS": {"x'; DROP TABLE circuitbreaker_app_circuit; --": {}, 0: None}})
@example({"CIRCUITS": {0: {}, "a": {}}, 1: None, "STATE_TTL": 1})
def test_the_system_checks_never_crash_on_any_setting(value):
    with override_settings(CIRCUITBREAKER=value):
        messages = check_settings()
    assert isinstance(messages, list)
    assert all(isinstance(message, CheckMessage) for message in messages)
    assert all(message.id and message.id.startswith("circuitbreaker_app.") for message in messages)


@pytest.mark.parametrize(
    ("value", "check_id"),
    [
        ({"STATE_TTL": float("nan")}, "E003"),
        ({"STATE_TTL": 10**400}, "E003"),
        ({"MAX_CIRCUITS": 10**400 * -1}, "E005"),
        ({"CACHE": ["default"]}, "E006"),
        ({"DATABASE": {"a": 1}}, "E007"),
        ({"DEFAULTS": {"window_size": 10**400}}, "E008"),
        ({"DEFAULTS": {"wait_duration": float("inf")}}, "E008"),
        ({"CIRCUITS": {"x'; DROP TABLE": {}}}, "E009"),
        ({"CIRCUITS": {"ok": {"failure_rate_threshold": -(10**400)}}}, "E009"),
    ],
)
def test_known_bad_settings_get_their_check_id(value, check_id):
    with override_settings(CIRCUITBREAKER=value):
        ids = {message.id for message in check_settings()}
    assert f"circuitbreaker_app.{check_id}" in ids


# -- the model -----------------------------------------------------------------------------


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from(["name", *DEFINITION_FIELDS]), FIELD_VALUES, min_size=1, max_size=4
    )
)
def test_full_clean_raises_only_validation_errors(values):
    circuit = Circuit(name="fuzz")
    for field, value in values.items():
        setattr(circuit, field, value)
    try:
        circuit.full_clean(validate_unique=False)
    except ValidationError as exc:
        assert set(exc.message_dict) <= {"name", *DEFINITION_FIELDS, "__all__"}


# -- the admin's add form --------------------------------------------------------------------

FORM_TEXT = st.one_of(
    NUMBERS.map(str),
    st.sampled_from(SQLISH),
    st.text(max_size=30),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "0.0", "1,5", " 5 "]),
)


def add_form_data(**changes: str) -> dict[str, Any]:
    """The add form as posted with every field at its default, then ``changes``."""
    return form_data(Circuit(), **{"name": f"fuzz-{uuid.uuid4().hex[:8]}", **changes})


@pytest.fixture
def admin_client_(client):
    client.force_login(User.objects.create_superuser("fuzzer", password="pw"))
    return client


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from(["name", *DEFINITION_FIELDS]), FORM_TEXT, min_size=1, max_size=4
    )
)
def test_the_admin_add_form_never_errors_and_never_half_writes(admin_client_, changes):
    data = add_form_data(**changes)
    before = row_counts()
    response = admin_client_.post(reverse("admin:circuitbreaker_app_circuit_add"), data)
    assert response.status_code in (200, 302), response.status_code
    if response.status_code == 200:  # re-rendered with messages
        assert response.context["adminform"].form.errors
        assert row_counts() == before
    else:
        saved = Circuit.objects.get(name=data["name"].strip())
        saved.full_clean()  # what was written is a valid circuit
        assert row_counts() == (before[0] + 1, before[1])


# -- the circuits command ----------------------------------------------------------------------

ARGUMENT = st.one_of(
    st.sampled_from(["list", "show", "open", "close", "reset", "disable", "probe", "sync"]),
    st.sampled_from(["--json", "--check", "--reason", "-v", "3", "--nope"]),
    st.sampled_from(SQLISH).filter(lambda s: "\x00" not in s),
    st.text(max_size=15).filter(lambda s: "\x00" not in s),
    NUMBERS.map(str),
)


@FUZZ
@given(args=st.lists(ARGUMENT, min_size=1, max_size=4))
def test_the_circuits_command_answers_bad_arguments_with_a_command_error(args):
    Circuit.objects.get_or_create(name="payments")
    before = row_counts()
    try:
        call_command("circuits", *args, stdout=io.StringIO(), stderr=io.StringIO())
    except CommandError as exc:
        assert str(exc).strip()
    else:
        return  # a valid command line: whatever it did is the command's own business
    # An error changed nothing.
    assert row_counts() == before


@FUZZ
@given(args=st.lists(ARGUMENT, min_size=1, max_size=4))
def test_from_a_shell_bad_arguments_exit_with_a_message_not_a_traceback(args):
    Circuit.objects.get_or_create(name="payments")
    code, _out, err = run_cli(*args)
    assert code in (0, 1, 2, 3)
    assert "Traceback" not in err
    if code in (1, 2):
        assert re.search(r"\S", err)
