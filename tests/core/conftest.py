"""The core is pure Python: its tests need no Django settings, database or cache.

``tests/conftest.py`` has autouse fixtures that read Django settings and clear caches; the
fixtures of the same names below replace them for ``tests/core``, so these tests also run
with ``-p no:django`` (no ``DJANGO_SETTINGS_MODULE``). Keep the names in step with
``tests/conftest.py`` if autouse fixtures are added there.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cb_cache_table() -> None:
    """No cache table: nothing under tests/core touches Django."""


@pytest.fixture(autouse=True)
def _fresh_breaker_state() -> None:
    """No caches or store to clear: the core keeps its state in the objects a test makes."""
