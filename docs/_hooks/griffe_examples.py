"""Griffe extension: read the code's ``Example:`` docstring sections as ``Examples:``.

Griffe's Google parser only knows the plural; with the singular, doctest
lines such as ``[(2, 10), (2, 10)]`` would be read as Markdown links. With
this, they render as highlighted console examples.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` to ``Examples:`` in every docstring before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
