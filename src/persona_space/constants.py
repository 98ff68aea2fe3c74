"""Names and defaults shared across the library's packages, defined once.

Nothing here imports anything: every package may import this module.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BASE", "DEFAULT_BOOT", "DEFAULT_PERM", "MIN_BOOT", "NOISE", "NOISE_NAME"]

BASE: Final = "base"
"""The base model's condition name: the default reference of every comparison."""

NOISE: Final = -1
"""The basin id of samples that fall in no basin."""

NOISE_NAME: Final = "noise"
"""How tables and charts name :data:`NOISE`."""

DEFAULT_BOOT: Final = 2000
"""Bootstrap resamples by default."""

MIN_BOOT: Final = 1000
"""The fewest bootstrap resamples accepted: fewer make the 2.5 % tails rest on a handful of draws."""

DEFAULT_PERM: Final = 1000
"""Permutations of a permutation test by default."""
