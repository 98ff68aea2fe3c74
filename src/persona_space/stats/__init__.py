"""Intervals, tests and multiplicity adjustment for every figure persona_space reports.

The design behind the numbers: samples fall into cells of (training seed, question
group). Paraphrases of one question are one unit (its ``group``), and training seeds
are the unit for a claim about a training recipe. Questions are *crossed* with seeds
(every adapter answers every question), so a bootstrap replicate draws seeds and
question groups independently and one group draw serves every seed and every
condition compared: this keeps the pairing of conditions that answered the same
questions, and counts the question-to-question spread once, as it enters the
estimate. (Resampling groups anew inside each seed would treat the same questions
as different ones and understate their variance.)

Each level draws ``n - 1`` of its ``n`` units with replacement: the plain bootstrap
shrinks the variance by ``(n - 1) / n`` per level. The interval is then widened by
the Student-t quantile at the Satterthwaite degrees of freedom (see :func:`compare`).
In 500 simulated experiments per design (seed, question, seed x question and sample
noise) a nominal 95 % interval covers the planted mean 94-97 % of the time from
3 seeds x 3 questions to 10 x 8, where the plain percentile bootstrap covers 80-90 %
(``tests/test_stats.py`` simulates it).

Degenerate cases are named rather than passed on as numbers: a value that is NaN
(or infinite) in some rows raises a :class:`~persona_space.errors.DataError` naming
the column and how many rows, instead of turning the whole column's estimate NaN; a
bootstrap standard error within rounding of zero (``se <= NO_VARIATION_TOL *
max(1, |estimate|)``, so a constant column of 0.3 is not "significant" at p = 1e-41
on floating-point noise) marks the comparison ``no_variation``, with a point interval
and no p-value: there is nothing to test, and such comparisons stay out of a family
of adjusted p-values. Differences of two shares that the bootstrap cannot move (0
against 0) get Newcombe's hybrid score interval instead (:func:`newcombe_interval`).

>>> low, high = wilson_interval(5, 100)
>>> round(low, 3), round(high, 3)
(0.022, 0.112)
>>> adjust_p_values([0.01, 0.04, 0.03], "holm").round(3).tolist()
[0.03, 0.06, 0.06]
>>> low, high = newcombe_interval(0, 20, 0, 20)
>>> round(low, 3), round(high, 3)
(-0.161, 0.161)
"""

from __future__ import annotations

from persona_space.constants import DEFAULT_BOOT as DEFAULT_BOOT  # re-exported: stats.DEFAULT_BOOT
from persona_space.constants import MIN_BOOT as MIN_BOOT

# Every name of the modules below, importable from persona_space.stats.
from persona_space.stats._adjust import adjust_p_values as adjust_p_values
from persona_space.stats._adjust import describe_adjustment as describe_adjustment
from persona_space.stats._bootstrap import NO_VARIATION_TOL as NO_VARIATION_TOL
from persona_space.stats._bootstrap import Cells as Cells
from persona_space.stats._bootstrap import Comparison as Comparison
from persona_space.stats._bootstrap import cells as cells
from persona_space.stats._bootstrap import check_finite as check_finite
from persona_space.stats._bootstrap import compare as compare
from persona_space.stats._bootstrap import describe_interval as describe_interval
from persona_space.stats._bootstrap import design_effect as design_effect
from persona_space.stats._bootstrap import frame_cells as frame_cells
from persona_space.stats._bootstrap import group_column as group_column
from persona_space.stats._bootstrap import no_variation as no_variation
from persona_space.stats._bootstrap import percentile_interval as percentile_interval
from persona_space.stats._bootstrap import replicate_means as replicate_means
from persona_space.stats._bootstrap import resample_weights as resample_weights
from persona_space.stats._intervals import ADJUSTMENTS as ADJUSTMENTS
from persona_space.stats._intervals import Adjustment as Adjustment
from persona_space.stats._intervals import check_adjustment as check_adjustment
from persona_space.stats._intervals import check_confidence as check_confidence
from persona_space.stats._intervals import check_n_boot as check_n_boot
from persona_space.stats._intervals import mean_interval as mean_interval
from persona_space.stats._intervals import newcombe_interval as newcombe_interval
from persona_space.stats._intervals import t_interval_rows as t_interval_rows
from persona_space.stats._intervals import wilson_interval as wilson_interval
from persona_space.stats._intervals import z_quantile as z_quantile
