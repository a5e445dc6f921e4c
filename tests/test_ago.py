"""circuitbreaker_app.ago: one relative time format, with seconds, and the exact time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import translation

from circuitbreaker_app.ago import duration, relative, time_tag


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.4, "0 s"),
        (12, "12 s"),
        (59.6, "1 min 0 s"),
        (252, "4 min 12 s"),
        (3600, "1 h 0 min"),
        (7512, "2 h 5 min"),
        (90061, "1 d 1 h"),
        (-5, "0 s"),
    ],
)
def test_duration_shows_the_two_largest_units(seconds, text):
    assert duration(seconds) == text


def test_relative_says_ago_or_in():
    assert relative(1000.0, now=1012.0) == "12 s ago"
    assert relative(1030.0, now=1012.0) == "in 18 s"
    assert relative(1012.3, now=1012.0) == "0 s ago"  # clock jitter is not the future


def test_time_tag_carries_the_exact_time_and_escapes_nothing_it_should_not():
    moment = datetime(2026, 11, 30, 10, 0, 5, 123456, tzinfo=UTC)
    html = time_tag(moment, now=moment.timestamp() + 252)
    assert html == (
        '<time class="cb-ago" datetime="2026-11-30T10:00:05+00:00" '
        'title="2026-11-30T10:00:05+00:00">4 min 12 s ago</time>'
    )
    assert time_tag(None, now=0.0) == "–"


def test_words_are_translatable():
    with translation.override("de"):
        assert relative(1000.0, now=1012.0) == "vor 12 s"
        assert relative(1000.0, now=1252.0) == "vor 4 min 12 s"
