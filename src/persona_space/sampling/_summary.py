"""Summary figures of a sample table (length, empty and truncated answers), alone and against a reference."""

from __future__ import annotations

import numpy as np
import pandas as pd

from persona_space.constants import DEFAULT_BOOT
from persona_space.estimates import difference_table, estimate_table
from persona_space.stats import Adjustment

METRICS = ("n_tokens", "n_chars", "empty", "truncated")


def metric_values(df: pd.DataFrame) -> np.ndarray:
    """``[rows, 4]``: tokens, characters, empty (0/1) and truncated (0/1) per sample."""
    text = df["text"].fillna("")
    return np.column_stack(
        [
            df["n_tokens"].to_numpy(dtype=np.float64),
            text.str.len().to_numpy(dtype=np.float64),
            (text.str.strip() == "").to_numpy(dtype=np.float64),
            (df["finish_reason"] == "length").to_numpy(dtype=np.float64),
        ]
    )


def condition_column(df: pd.DataFrame) -> str:
    """``condition`` where the table has it (tables written before it existed name conditions ``adapter``)."""
    return "condition" if "condition" in df.columns else "adapter"


def summary_table(df: pd.DataFrame, *, n_boot: int = DEFAULT_BOOT, confidence: float = 0.95) -> pd.DataFrame:
    """Per condition and temperature: samples, mean tokens and characters, empty and truncated shares.

    Each figure has a ``*_low``/``*_high`` interval from the crossed bootstrap over
    question groups (and training seeds), and ``interval`` says what it is over.
    """
    by = [condition_column(df), "temperature"]
    long = estimate_table(df, metric_values(df), METRICS, by, n_boot=n_boot, confidence=confidence)
    names = {"n_tokens": "mean_tokens", "n_chars": "mean_chars", "empty": "empty_share", "truncated": "truncated_share"}
    rows = []
    for key, part in long.groupby(by, sort=False):
        row = dict(zip(by, key, strict=True))
        first = part.iloc[0]
        row.update(samples=int(first["samples"]), groups=int(first["groups"]), seeds=int(first["seeds"]))
        for metric, values in part.set_index("metric").iterrows():
            name = names[str(metric)]
            row.update({name: values["estimate"], f"{name}_low": values["low"], f"{name}_high": values["high"]})
        row["interval"] = first["interval"]
        rows.append(row)
    return pd.DataFrame(rows)


def compare_table(
    df: pd.DataFrame,
    reference: str,
    *,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = 0.95,
    adjust: Adjustment = "holm",
) -> pd.DataFrame:
    """Each condition minus ``reference`` in tokens, characters, empty and truncated shares, per temperature.

    Paired by question group (and, with paired sampling, the same random streams
    drive both sides); p-values adjusted over every tested row of the table. A row
    where nothing varies (both sides never empty, say) is not tested (``test``:
    ``"not tested: no variation"``) and is left out of the family.
    """
    return difference_table(
        df,
        metric_values(df),
        METRICS,
        by=condition_column(df),
        reference=reference,
        strata=["temperature"],
        n_boot=n_boot,
        confidence=confidence,
        adjust=adjust,
    )
