"""The documentation: every setting and system check of the code is in the reference, and
the README's links into docs/ lead somewhere.

The site itself is built with ``mkdocs build --strict`` by ``make docs`` (part of
``make test``), which fails on a broken link or a page missing from the nav.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from circuitbreaker_app import conf

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "circuitbreaker_app"
DOCS = ROOT / "docs"


def check_ids() -> set[str]:
    """Every check id the package can report, read from its source.

    Ids appear as ``id="circuitbreaker_app.W001"``, as ``settings_error(12, …)`` (E012) and
    as ``("STATE_TTL", 3)`` pairs looped over in the checks/ package.
    """
    ids: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        ids.update(re.findall(r"circuitbreaker_app\.([EW]\d{3})\b", source))
        ids.update(f"E{int(n):03d}" for n in re.findall(r"\bsettings_error\(\s*(\d+)\s*,", source))
        if path.parent.name == "checks":
            ids.update(f"E{int(n):03d}" for n in re.findall(r'\(\s*"[A-Z_]+",\s*(\d+)\)', source))
    return ids


def test_check_ids_are_found_in_the_source():
    ids = check_ids()
    assert {"E001", "E003", "E004", "E012", "W001", "W020"} <= ids  # the reader works


@pytest.mark.parametrize("check_id", sorted(check_ids()))
def test_every_system_check_is_in_the_reference(check_id):
    page = (DOCS / "reference" / "checks.md").read_text()
    assert f"`circuitbreaker_app.{check_id}`" in page, (
        f"add circuitbreaker_app.{check_id} to docs/reference/checks.md"
    )


@pytest.mark.parametrize("key", sorted(conf.DEFAULTS))
def test_every_setting_is_in_the_reference_with_its_default(key):
    page = (DOCS / "reference" / "settings.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith(f"| `{key}` |")]
    assert rows, f"add CIRCUITBREAKER[{key!r}] to the table in docs/reference/settings.md"
    default = rows[0].split("|")[2].strip()
    assert default.startswith("`") and default.endswith("`"), default
    assert ast.literal_eval(default.strip("`")) == conf.DEFAULTS[key], (
        f"docs/reference/settings.md gives {key}'s default as {default}, "
        f"the code as {conf.DEFAULTS[key]!r}"
    )


def test_readme_links_into_docs_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []


def test_readme_is_a_landing_page_with_the_install_section():
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, re.MULTILINE)
    assert "Install into your project" in headings
    commands = re.findall(r"^make (\w+)", readme, re.MULTILINE)
    assert commands == ["demo", "test"]  # exactly the two commands
