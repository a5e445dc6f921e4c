"""circuitbreaker_app.text.shorten: cut on a word boundary, never mid-word, with "…"."""

from __future__ import annotations

import pytest

from circuitbreaker_app.text import shorten

DETAIL = (
    "ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
    "with url: /health (Caused by NewConnectionError: Failed to establish a new connection: "
    "[Errno 111] Connection refused)"
)


def test_a_text_that_fits_is_kept_whole():
    assert shorten("HTTP 500", 200) == "HTTP 500"
    assert shorten("x" * 200, 200) == "x" * 200


@pytest.mark.parametrize("width", [60, 100, 150, 200])
def test_a_long_text_ends_with_whole_words_and_an_ellipsis(width):
    text = shorten(DETAIL, width)
    assert len(text) <= width
    assert text.endswith("…")
    kept = text[:-1]
    assert DETAIL.startswith(kept)
    assert DETAIL[len(kept)] in " ,;:-"  # the cut falls between words


def test_one_long_token_is_cut_inside_rather_than_dropped():
    url = "https://example.com/" + "a" * 300
    text = shorten(url, 50)
    assert len(text) == 50 and text.endswith("…") and url.startswith(text[:-1])


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        shorten("abc", 0)
