"""Old public names kept working for one release, with a :class:`DeprecationWarning` that names the new one."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def renamed(module: str, names: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves ``names`` (old name -> (new name, value)) with a warning.

    >>> getattr_ = renamed("pkg", {"OLD": ("NEW", 1)})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("OLD"), str(caught[0].message)
    (1, 'pkg.OLD is deprecated: use pkg.NEW')
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            new, value = names[name]
            warnings.warn(f"{module}.{name} is deprecated: use {module}.{new}", DeprecationWarning, stacklevel=2)
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def moved(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves ``names`` (name -> the module it moved to) with a warning.

    The new home is imported on first use, not when ``module`` is: a name moves
    where its new module imports ``module`` itself, and importing it back at load
    time would make a cycle.

    >>> getattr_ = moved("pkg", {"dumps": "json"})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("dumps")([1]), str(caught[0].message)
    ('[1]', 'pkg.dumps is deprecated: use json.dumps')
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            home = names[name]
            warnings.warn(f"{module}.{name} is deprecated: use {home}.{name}", DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(home), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
