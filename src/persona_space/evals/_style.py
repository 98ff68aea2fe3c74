"""Style statistics of sampled answers: length, silence and rambling, each against the base model.

After the colour experiment, where one-word training answers made every colour model
terser than its base (and the white model sometimes silent): per condition, and per
condition and probe, the mean length in characters and tokens, the share of empty
answers and the share cut off at ``max_new_tokens`` ("cannot stop talking"), each
against the reference condition with a paired interval.

Over a whole probe set the unit is the question group (answers to one question are not
independent). Within one probe the unit is the paired draw: sample ``i`` of a
condition and sample ``i`` of the reference share their random stream (with
``pairing="paired"``, the default), so the pair is resampled together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from persona_space.constants import BASE, DEFAULT_BOOT
from persona_space.errors import DataError
from persona_space.estimates import difference_table, estimate_table
from persona_space.stats import Adjustment

STYLE_MEASURES = ("n_chars", "n_tokens", "empty", "truncated")


def _values(df: pd.DataFrame) -> np.ndarray:
    text = df["text"].fillna("").astype(str)
    return np.column_stack(
        [
            text.str.len().to_numpy(dtype=np.float64),
            df["n_tokens"].to_numpy(dtype=np.float64),
            (text.str.strip() == "").to_numpy(dtype=np.float64),
            (df["finish_reason"] == "length").to_numpy(dtype=np.float64),
        ]
    )


def _frame(samples: Any) -> pd.DataFrame:
    frame = samples.df if hasattr(samples, "df") else samples
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a SampleSet or its table, got {type(samples).__name__}")
    missing = [c for c in ("condition", "probe_id", "text", "n_tokens", "finish_reason") if c not in frame.columns]
    if missing:
        raise DataError(f"the samples lack the columns {missing}; expected a table written by sample()")
    if frame.empty:
        raise DataError("the samples table has no rows")
    return frame


def style(
    samples: Any,
    *,
    reference: str = BASE,
    by_probe: bool = False,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    adjust: Adjustment = "holm",
) -> pd.DataFrame:
    """Length (characters, tokens), empty and truncated shares per condition, each against ``reference``.

    Returns one row per condition (and probe, with ``by_probe``), temperature and
    measure: ``estimate`` with ``low``/``high``, and where the reference is in the
    table ``reference_value``, ``difference`` with ``difference_low``/``difference_high``,
    ``p_value``, ``test`` (what it tests, or ``"not tested: no variation"`` where
    nothing varies) and ``p_adjusted`` (``adjust`` over every tested row; ``adjustment``
    counts the rows left out); ``interval`` and ``difference_interval`` say what the
    intervals are over. The means carry no p-value (a length is not tested against 0).

    >>> table = style(samples)  # doctest: +SKIP
    >>> table.query("measure == 'n_chars'")[["condition", "estimate", "difference"]]  # doctest: +SKIP
    """
    frame = _frame(samples).reset_index(drop=True)
    if by_probe:  # within one probe, the paired draw is the unit
        frame = frame.assign(group=frame["probe_id"].astype(str) + "#" + frame["sample_index"].astype(str))
    by = ["condition", "probe_id", "temperature"] if by_probe else ["condition", "temperature"]
    values = _values(frame)
    means = estimate_table(
        frame, values, STYLE_MEASURES, by, name_column="measure", n_boot=n_boot, confidence=confidence
    )
    means = means.drop(columns=["seed_low", "seed_high"], errors="ignore")
    if reference not in set(frame["condition"]) or frame["condition"].nunique() < 2:
        return means
    strata = [c for c in by if c != "condition"]
    diffs = difference_table(
        frame, values, STYLE_MEASURES, by="condition", reference=reference, strata=strata, name_column="measure",
        n_boot=n_boot, confidence=confidence, adjust=adjust,
    )  # fmt: skip
    keep = diffs[[*by, "measure", "reference_value", "difference", "low", "high", "p_value", "test", "p_adjusted"]]
    keep = keep.rename(columns={"low": "difference_low", "high": "difference_high"}).assign(
        difference_interval=diffs["interval"], adjustment=diffs["adjustment"]
    )
    return means.merge(keep, on=[*by, "measure"], how="left")
