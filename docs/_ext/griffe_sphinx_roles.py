"""A griffe extension for the API reference: the package's reST docstrings as Markdown.

The docstrings follow Django's style (reST roles such as :class:`~pkg.Name` and ``::``
literal blocks); mkdocstrings renders Markdown. This rewrites the roles to code spans
(``~`` keeps only the last dotted part, as Sphinx does) and a paragraph's closing ``::``
to ``:``, so the indented block after it renders as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
LITERAL_INTRO = re.compile(r"(\S)::$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def to_markdown(text: str) -> str:
    """``text`` with reST roles as code spans and ``::`` literal intros as ``:``."""
    return LITERAL_INTRO.sub(r"\1:", ROLE.sub(_role, text))


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring once it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
