"""PEP 562 lazy exports, shared by the package ``__init__`` modules. Imports nothing of ours."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str], public: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> module that defines it (a name equal to the
            module's own last component resolves to the module itself).
        public: what ``dir(package)`` lists.

    Returns:
        The two module-level functions; a resolved name is cached on the package.

    Example:
        >>> getattr_, dir_ = lazy_exports("earlyexit", {"decompose": "earlyexit.surgery.decompose"}, ["decompose"])
        >>> getattr_("decompose").__name__
        'decompose'
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        mod = importlib.import_module(module)
        value = mod if module == f"{package}.{name}" else getattr(mod, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return public

    return __getattr__, __dir__
