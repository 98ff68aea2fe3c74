"""Old public names kept working for one release, with a :class:`DeprecationWarning` saying what replaces them."""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar


def renamed(module: str, names: Mapping[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves ``names`` (old name -> (new name, value)) with a warning.

    >>> getattr_ = renamed("pkg", {"OLD": ("NEW", 1)})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("OLD"), str(caught[0].message)
    (1, 'pkg.OLD is deprecated: use pkg.NEW')
    """

    return deprecated(module, renames=names)


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


def deprecated(
    module: str,
    *,
    renames: Mapping[str, tuple[str, Any]] | None = None,
    internal: Mapping[str, str] | None = None,
) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving names that leave the module's public API, each with a warning.

    ``renames``: old name -> (new name, value), as :func:`renamed` serves them.
    ``internal``: name -> the private module defining it, for a name the package
    still uses inside but no longer offers (imported on first use, like :func:`moved`).

    >>> getattr_ = deprecated("pkg", internal={"dumps": "json"})
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("dumps")([1]), str(caught[0].message)
    ('[1]', 'pkg.dumps is deprecated: it is internal to pkg and leaves its public names in the next release')
    """
    old_names = dict(renames or {})
    private = dict(internal or {})

    def __getattr__(name: str) -> Any:
        if name in old_names:
            new, value = old_names[name]
            warnings.warn(f"{module}.{name} is deprecated: use {module}.{new}", DeprecationWarning, stacklevel=2)
            return value
        if name in private:
            warnings.warn(
                f"{module}.{name} is deprecated: it is internal to {module} and leaves its public names "
                "in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(private[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


P = ParamSpec("P")
R = TypeVar("R")


def renamed_keywords(**old_to_new: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Accept old keyword names of a function for one release, with a warning naming the new one.

    Giving both the old and the new name raises :class:`~persona_space.errors.ConfigError`.

    >>> @renamed_keywords(runs="n")
    ... def draw(*, n: int = 1) -> int:
    ...     return n
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     draw(runs=3), str(caught[0].message)
    (3, 'draw(runs=...) is deprecated: use draw(n=...)')
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        from persona_space.errors import ConfigError

                        raise ConfigError(
                            f"{function.__name__}() got both {old}= and {new}=; {old} is the old name of {new}"
                        )
                    warnings.warn(
                        f"{function.__name__}({old}=...) is deprecated: use {function.__name__}({new}=...)",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper

    return decorate
