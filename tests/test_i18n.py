"""Translations: the German catalogue is complete, compiled, and what the pages show.

The render tests set ``LANGUAGE_CODE = "de"`` with no ``LocaleMiddleware`` (the tests'
MIDDLEWARE has none), so the setting alone decides the language. They list the labels of
ours that the English page shows (every msgid of our catalogue found in its visible text)
and require each of them to be absent from the German page. The catalogue test runs
``makemessages`` on a copy of the package, so a string added later without a German
translation fails here until it is translated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import polib
import pytest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.text import capfirst

import circuitbreaker_app
from circuitbreaker_app import State
from circuitbreaker_app.core import CircuitOpenError
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store
from tests.helpers import staff_user, three_circuits

PACKAGE = Path(circuitbreaker_app.__file__).resolve().parent
LOCALE = PACKAGE / "locale"
GERMAN_PO = LOCALE / "de" / "LC_MESSAGES" / "django.po"
GERMAN_MO = LOCALE / "de" / "LC_MESSAGES" / "django.mo"


def german() -> polib.POFile:
    return polib.pofile(str(GERMAN_PO))


# -- the catalogue -----------------------------------------------------------------------


def test_makemessages_finds_no_string_without_a_german_translation(tmp_path):
    """Every translatable string in the source has a German msgstr, none fuzzy or stale."""
    if shutil.which("xgettext") is None or shutil.which("msgmerge") is None:
        pytest.fail("GNU gettext is not installed (apt-get install gettext)")
    copy = tmp_path / "circuitbreaker_app"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "de", "--no-obsolete"],
        cwd=copy,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    fresh = polib.pofile(str(copy / "locale" / "de" / "LC_MESSAGES" / "django.po"))
    untranslated = [entry.msgid for entry in fresh.untranslated_entries()]
    fuzzy = [entry.msgid for entry in fresh.fuzzy_entries()]
    assert untranslated == [], (
        "strings without a German translation; run makemessages -l de, translate them "
        f"in {GERMAN_PO.relative_to(PACKAGE.parent)} and compilemessages: {untranslated}"
    )
    assert fuzzy == [], f"fuzzy (unchecked) German translations: {fuzzy}"
    stale = {e.msgid for e in german()} - {e.msgid for e in fresh}
    assert stale == set(), f"msgids no longer in the source (run makemessages): {stale}"


def test_compiled_catalogue_matches_the_po_file():
    """The committed .mo is the .po compiled (nobody forgot compilemessages)."""
    compiled = {
        (entry.msgid, entry.msgid_plural): (entry.msgstr, dict(entry.msgstr_plural))
        for entry in polib.mofile(str(GERMAN_MO))
        if entry.msgid
    }
    source = {
        (entry.msgid, entry.msgid_plural): (
            entry.msgstr,
            {int(k): v for k, v in entry.msgstr_plural.items()},
        )
        for entry in german().translated_entries()
    }
    assert compiled == source


def test_german_translations_keep_their_placeholders():
    """A msgstr names exactly the %-placeholders of its msgid (else rendering raises)."""
    placeholder = re.compile(r"%\(\w+\)[sd]|%%")
    for entry in german():
        wanted = sorted(placeholder.findall(entry.msgid))
        strings = [entry.msgstr] if not entry.msgid_plural else entry.msgstr_plural.values()
        for msgstr in strings:
            assert sorted(placeholder.findall(msgstr)) == wanted, entry.msgid


def test_state_choices_cover_every_state():
    assert [choice.value for choice in Circuit.StateChoices] == [state.value for state in State]


# -- rendered pages ----------------------------------------------------------------------


class VisibleText(HTMLParser):
    """Text a user sees: text nodes (not scripts or styles) and title/aria-label/alt."""

    SHOWN_ATTRIBUTES = {"title", "aria-label", "alt", "placeholder"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.json_labels: list[str] = []
        self._skip = 0
        self._labels_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in {"script", "style"}:
            self._skip += 1
            self._labels_script = attributes.get("id") == "cb-labels"
        for name, value in attrs:
            if value and (name in self.SHOWN_ATTRIBUTES or name.startswith("data-label")):
                self.parts.append(value)
        if tag == "input" and attributes.get("type") in {"submit", "button"}:
            self.parts.append(attributes.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style"} and self._skip:
            self._skip -= 1
            self._labels_script = False

    def handle_data(self, data: str) -> None:
        if self._labels_script:
            self.json_labels.append(data)
        elif not self._skip:
            self.parts.append(data)

    @classmethod
    def of(cls, html: str) -> str:
        parser = cls()
        parser.feed(html)
        for labels in parser.json_labels:  # the words admin.js/dashboard.js write
            parser.parts.extend(flatten(json.loads(labels)))
        return "\n".join(parser.parts)


def flatten(value: object) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in flatten(item)]
    return [str(value)]


def our_labels() -> dict[str, str]:
    """Each plain msgid of ours whose German differs from it, with its translation."""
    return {
        entry.msgid: entry.msgstr
        for entry in german().translated_entries()
        if not entry.msgid_plural
        and "python-format" not in entry.flags
        and entry.msgstr.casefold() != entry.msgid.casefold()
    }


def shown(label: str, text: str) -> bool:
    """Whether ``label`` (as written, capitalised or upper case) is a phrase in ``text``."""
    return any(
        re.search(rf"(?<!\w){re.escape(variant)}(?!\w)", text)
        for variant in {label, capfirst(label), label.upper()}
    )


def english_labels_left(english_html: str, german_html: str) -> tuple[set[str], set[str]]:
    """(our labels on the English page, those of them still on the German page)."""
    english, german_text = VisibleText.of(english_html), VisibleText.of(german_html)
    found = {msgid for msgid in our_labels() if shown(msgid, english)}
    return found, {msgid for msgid in found if shown(msgid, german_text)}


@pytest.fixture
def operator(client, db):
    user = staff_user(
        "operator", "view_circuit", "change_circuit", "force_circuit", "view_circuitevent"
    )
    client.force_login(user)
    return user


@pytest.fixture
def circuits(db):
    """One circuit in each kind of state the pages draw: open (at trip), closed, forced."""
    three_circuits()
    get_store().move_to("mail", State.FORCED_CLOSED, "maintenance")
    return {c.name: c for c in Circuit.objects.all()}


def render_in(language: str, settings, fetch) -> str:
    """``fetch()``'s page with LANGUAGE_CODE = ``language`` and no active override."""
    settings.LANGUAGE_CODE = language
    assert not any("LocaleMiddleware" in m for m in settings.MIDDLEWARE)
    translation.deactivate()  # the setting decides, as on a site without LocaleMiddleware
    try:
        return fetch()
    finally:
        translation.deactivate()


def get(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    ("view", "minimum"),
    [("changelist", 30), ("change", 50), ("dashboard", 20), ("events", 15)],
)
def test_admin_pages_in_german_show_none_of_our_english_labels(
    client, operator, circuits, settings, view, minimum
):
    urls = {
        "changelist": reverse("admin:circuitbreaker_app_circuit_changelist"),
        "change": reverse(
            "admin:circuitbreaker_app_circuit_change", args=[circuits["payments"].pk]
        ),
        "dashboard": reverse("admin:circuitbreaker_app_circuit_dashboard"),
        "events": reverse("admin:circuitbreaker_app_circuitevent_changelist"),
    }
    english = render_in("en", settings, lambda: get(client, urls[view]))
    german_html = render_in("de", settings, lambda: get(client, urls[view]))
    found, left = english_labels_left(english, german_html)
    assert len(found) >= minimum, sorted(found)  # the comparison covers the page's labels
    assert left == set()
    assert 'lang="de"' in german_html


def test_admin_action_messages_and_form_errors_are_german(client, operator, circuits, settings):
    settings.LANGUAGE_CODE = "de"
    translation.deactivate()
    changelist = reverse("admin:circuitbreaker_app_circuit_changelist")
    response = client.post(
        changelist,
        {"action": "force_open", "_selected_action": [circuits["search"].pk], "confirmed": "1"},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert messages == ["1 Sicherung ist jetzt erzwungen offen: search."]

    payments = circuits["payments"]
    response = client.post(
        reverse("admin:circuitbreaker_app_circuit_change", args=[payments.pk]),
        {
            "description": "",
            "window_type": "count",
            "window_size": 5,
            "minimum_calls": 8,
            "failure_rate_threshold": 50,
            "slow_call_duration": "",
            "slow_call_rate_threshold": 100,
            "wait_duration": 30,
            "backoff_multiplier": 2,
            "max_wait_duration": 600,
            "trial_mode": "live",
            "half_open_max_calls": 3,
            "trial_lease": 30,
            "probe_url": "",
            "probe_timeout": 5,
            "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0",
            "events-MIN_NUM_FORMS": "0",
            "events-MAX_NUM_FORMS": "0",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["minimum_calls"]
    assert errors == [
        "minimum_calls (8) darf die window_size (5) eines Zählfensters nicht überschreiten: "
        "die Sicherung könnte nie öffnen"
    ]


def test_circuit_open_page_in_german_shows_none_of_our_english_labels(settings):
    def open_page() -> str:
        exc = CircuitOpenError("payments", State.OPEN, 3.0)
        return render_to_string(
            "circuitbreaker_app/circuit_open.html",
            {"circuit": exc.circuit, "state": exc.state.value, "retry_after": 3},
        )

    english, german_html = (
        render_in("en", settings, open_page),
        render_in("de", settings, open_page),
    )
    found, left = english_labels_left(english, german_html)
    assert len(found) >= 3, sorted(found)
    assert left == set()
    assert "Bitte versuchen Sie es in 3 Sekunden noch einmal." in german_html
