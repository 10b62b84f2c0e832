"""Is an A/B difference real? Confidence intervals and p-values for each arm against the control.

Two sources of uncertainty, in this order of preference (docs/ab-statistics.md):

1. **Repeats**: an arm with several grid points that differ only in a seed-like
   parameter (``promote.repeats``) gives one value of the metric per seed. The
   difference of the means gets a Student t interval and p-value: paired by seed
   (`scipy.stats.ttest_rel`) when both arms ran the same seeds, else Welch's
   (`scipy.stats.ttest_ind(equal_var=False)`).
2. **Per-example results** (``stage.predictions(...)``, a CSV with ``id``,
   ``label``, ``prediction`` and/or ``score``): both arms scored the same
   examples, so the difference gets a **paired bootstrap** interval
   (`scipy.stats.bootstrap(paired=True)`, BCa) and a paired test: **McNemar's
   exact test** for accuracy (`scipy.stats.binomtest` on the discordant pairs),
   a **paired permutation test** (`scipy.stats.permutation_test`,
   ``permutation_type="samples"``: swap the two arms' results of an example)
   for the other metrics.

Neither: no interval, and the table says so. The metrics are recomputed from the
predictions by the vectorized functions of `METRICS` (each checked against
scikit-learn's in tests/run/test_statistics.py); a metric they do not cover gets
no interval. Resampling uses a fixed seed, so a run's table is reproducible.
Nothing here imports Airflow.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from smaker_airflow.errors import SmakerError

RESAMPLES = 2000  # bootstrap and permutation resamples: about ±0.01 on a p-value of 0.05
SEED = 0  # the resampling is reproducible: the same files give the same table
BCA_MAX = 2000  # examples up to which the bootstrap interval is BCa (else percentile): see _bootstrap
BATCH = 200  # resamples computed at once: bounds memory (200 x n values per array)
ID, LABEL, PREDICTION, SCORE = "id", "label", "prediction", "score"


class PredictionsError(SmakerError):
    """A predictions file cannot be read or paired with the control arm's."""


@dataclass(frozen=True)
class Predictions:
    """One arm's per-example results, sorted by example id (rows: examples)."""

    ids: np.ndarray  # str
    label: np.ndarray  # float
    prediction: np.ndarray | None  # float; None when the file has no `prediction` column
    score: np.ndarray | None  # float; None when the file has no `score` column


# --------------------------------------------------------------------------- reading


def read_predictions(path: Path) -> Predictions:
    """The CSV at `path` (header ``id,label,prediction,score``; `prediction` or `score` may be absent).

    Raises PredictionsError naming the file when it is missing, lacks a column or holds a
    value that is not a number.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise PredictionsError(f"The predictions file {path} does not exist.") from None
    return _columns(path, rows)


def _columns(path: Path, rows: list[dict[str, str]]) -> Predictions:
    header = set(rows[0]) if rows else set()
    missing = [c for c in (ID, LABEL) if c not in header]
    if missing or not ({PREDICTION, SCORE} & header):
        raise PredictionsError(
            f"The predictions file {path} needs the columns id, label and prediction and/or score "
            f"(it has: {', '.join(sorted(header)) or 'no rows'}). Write one row per example, e.g. `id,label,prediction`."
        )
    rows = sorted(rows, key=lambda r: r[ID])
    try:

        def column(name: str) -> np.ndarray | None:
            return np.array([float(r[name]) for r in rows]) if name in header else None

        label = column(LABEL)
        assert label is not None
        return Predictions(np.array([r[ID] for r in rows]), label, column(PREDICTION), column(SCORE))
    except (TypeError, ValueError) as e:
        raise PredictionsError(f"The predictions file {path} holds a value that is not a number ({e}).") from None


# --------------------------------------------------------------------------- metrics from predictions

# Vectorized (last axis: examples), so that thousands of resamples cost milliseconds. Binary labels 0/1.


def _accuracy(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(y == p, axis=axis)


def _precision(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    tp, fp = np.sum((p == 1) & (y == 1), axis=axis), np.sum((p == 1) & (y == 0), axis=axis)
    return np.divide(tp, tp + fp, out=np.zeros(np.shape(tp)), where=(tp + fp) > 0)  # sklearn's zero_division=0


def _recall(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    tp, fn = np.sum((p == 1) & (y == 1), axis=axis), np.sum((p == 0) & (y == 1), axis=axis)
    return np.divide(tp, tp + fn, out=np.zeros(np.shape(tp)), where=(tp + fn) > 0)


def _f1(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    tp = np.sum((p == 1) & (y == 1), axis=axis)
    wrong = np.sum(p != y, axis=axis)
    return np.divide(2 * tp, 2 * tp + wrong, out=np.zeros(np.shape(tp)), where=(2 * tp + wrong) > 0)


def _roc_auc(y: np.ndarray, s: np.ndarray, axis: int = -1) -> np.ndarray:
    # The Mann-Whitney U statistic of the positives' scores over the negatives', / (n1 * n0):
    # the ROC AUC with ties counted one half, as sklearn's roc_auc_score.
    ranks = stats.rankdata(s, axis=axis)
    positives = np.sum(y == 1, axis=axis)
    negatives = np.shape(y)[axis] - positives
    u = np.sum(ranks * (y == 1), axis=axis) - positives * (positives + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(u / (positives * negatives))  # NaN for a resample with one class only


def _brier(y: np.ndarray, s: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean((s - y) ** 2, axis=axis)


def _mae(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(np.abs(p - y), axis=axis)


def _mse(y: np.ndarray, p: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean((p - y) ** 2, axis=axis)


@dataclass(frozen=True)
class MetricRule:
    """How a metric is recomputed from predictions, and which paired test suits it."""

    compute: Callable[..., np.ndarray]  # (labels, column, axis) -> metric
    column: str  # PREDICTION or SCORE
    test: str  # "mcnemar" or "permutation"
    sklearn: str  # the scikit-learn function it agrees with (tests check it)


METRICS: dict[str, MetricRule] = {
    "accuracy": MetricRule(_accuracy, PREDICTION, "mcnemar", "accuracy_score"),
    "precision": MetricRule(_precision, PREDICTION, "permutation", "precision_score"),
    "recall": MetricRule(_recall, PREDICTION, "permutation", "recall_score"),
    "f1": MetricRule(_f1, PREDICTION, "permutation", "f1_score"),
    "roc_auc": MetricRule(_roc_auc, SCORE, "permutation", "roc_auc_score"),
    "brier": MetricRule(_brier, SCORE, "permutation", "brier_score_loss"),
    "mae": MetricRule(_mae, PREDICTION, "permutation", "mean_absolute_error"),
    "mse": MetricRule(_mse, PREDICTION, "permutation", "mean_squared_error"),
}


def rule_for(metric: str) -> MetricRule | None:
    """The rule of a metric name; nested names match on their last part (``test.accuracy``)."""
    return METRICS.get(metric) or METRICS.get(metric.rsplit(".", 1)[-1])


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """One arm's difference to the control on one metric, with its uncertainty.

    `difference` is arm - control; `low`/`high` bound it at `confidence` (None: no
    interval, `method` says why); `p_value` is the two-sided test of "no difference".
    """

    metric: str
    difference: float
    low: float | None
    high: float | None
    p_value: float | None
    confidence: float
    method: str  # e.g. "paired bootstrap over 150 examples; McNemar exact", or why there is none
    n: int = 0  # examples or repeats

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


def no_interval(metric: str, difference: float, confidence: float, why: str) -> Interval:
    return Interval(metric, difference, None, None, None, confidence, f"no interval: {why}")


def paired_interval(
    metric: str, control: Predictions, arm: Predictions, *, confidence: float, difference: float | None = None
) -> Interval:
    """Paired bootstrap interval and paired test of `metric`(arm) - `metric`(control) over the same examples.

    `difference` is the value the table shows (from the metrics files); None: the one
    recomputed from the predictions. Returns a "no interval" Interval (saying why) when
    the metric is not computable from predictions, or the files are not on the same examples.
    """
    rule = rule_for(metric)
    shown = difference if difference is not None else math.nan
    if rule is None:
        return no_interval(metric, shown, confidence, f"{metric} cannot be recomputed from predictions")
    why = _unpaired(control, arm)
    if why:
        return no_interval(metric, shown, confidence, why)
    a, c = getattr(arm, rule.column), getattr(control, rule.column)
    if a is None or c is None:
        return no_interval(metric, shown, confidence, f"{metric} needs the predictions' `{rule.column}` column")
    y = control.label

    def delta(y: np.ndarray, a: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return rule.compute(y, a, axis=axis) - rule.compute(y, c, axis=axis)

    observed = float(delta(y, a, c))
    if not math.isfinite(observed):
        return no_interval(metric, shown, confidence, f"{metric} is undefined on these examples (one class only?)")
    low, high = _bootstrap(delta, (y, a, c), confidence)
    p_value = _mcnemar(y, a, c) if rule.test == "mcnemar" else _permutation(delta, y, a, c)
    test = "McNemar exact" if rule.test == "mcnemar" else "paired permutation"
    kind = "BCa" if len(y) <= BCA_MAX else "percentile"
    method = f"paired bootstrap ({kind}) over {len(y)} examples; {test} test"
    return Interval(
        metric, shown if difference is not None else observed, low, high, p_value, confidence, method, len(y)
    )


def _unpaired(control: Predictions, arm: Predictions) -> str:
    if len(control.ids) < 2:
        return "fewer than 2 examples in the predictions"
    if control.ids.shape != arm.ids.shape or not np.array_equal(control.ids, arm.ids):
        return "the arms' predictions are not on the same example ids"
    if not np.array_equal(control.label, arm.label):
        return "the arms' predictions give different true labels for the same ids"
    return ""


def _bootstrap(
    statistic: Callable[..., np.ndarray], data: tuple[np.ndarray, ...], confidence: float
) -> tuple[float, float]:
    """(low, high) of `statistic` by paired resampling of the examples (scipy.stats.bootstrap)."""
    found = None
    # BCa's jackknife evaluates the statistic n times on n - 1 examples (n² work): above BCA_MAX
    # examples, where the two intervals agree closely anyway, the percentile interval is used.
    methods = ("BCa", "percentile") if len(data[0]) <= BCA_MAX else ("percentile",)
    for method in methods:  # BCa is NaN on a degenerate distribution: percentile then
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning (a constant resample): handled below
            result = stats.bootstrap(
                data,
                statistic,
                paired=True,
                vectorized=True,
                n_resamples=RESAMPLES,
                confidence_level=confidence,
                method=method,
                batch=BATCH,
                rng=np.random.default_rng(SEED),
            )
        found = result.confidence_interval
        if math.isfinite(found.low) and math.isfinite(found.high):
            break
    assert found is not None
    if not (math.isfinite(found.low) and math.isfinite(found.high)):
        # Every resample gives the same difference (e.g. identical predictions): that value, exactly.
        value = float(statistic(*data))
        return value, value
    return float(found.low), float(found.high)


def _mcnemar(y: np.ndarray, a: np.ndarray, c: np.ndarray) -> float:
    """McNemar's exact test: the discordant pairs are Binomial(b + c, 1/2) under "no difference"."""
    arm_only = int(np.sum((a == y) & (c != y)))
    control_only = int(np.sum((a != y) & (c == y)))
    if arm_only + control_only == 0:
        return 1.0
    return float(stats.binomtest(arm_only, arm_only + control_only, 0.5).pvalue)


def _permutation(statistic: Callable[..., np.ndarray], y: np.ndarray, a: np.ndarray, c: np.ndarray) -> float:
    """Two-sided p-value of swapping the arms' results within each example (scipy.stats.permutation_test)."""

    def swapped(a: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(y, a, c, axis=axis)

    with np.errstate(all="ignore"):
        result = stats.permutation_test(
            (a, c),
            swapped,
            permutation_type="samples",
            vectorized=True,
            n_resamples=RESAMPLES,
            alternative="two-sided",
            batch=BATCH,
            rng=np.random.default_rng(SEED),
        )
    return float(result.pvalue)


def repeat_interval(
    metric: str, control: Sequence[float], arm: Sequence[float], *, confidence: float, paired: bool
) -> Interval:
    """The difference of the means of `arm`'s and `control`'s repeats (one value per seed), with a t interval.

    `paired`: the two lists are in the same seed order (both arms ran the same seeds).
    Needs at least 2 repeats per arm; otherwise a "no interval" Interval.
    """
    difference = float(np.mean(arm) - np.mean(control)) if len(arm) and len(control) else math.nan
    if min(len(arm), len(control)) < 2:
        return no_interval(metric, difference, confidence, "fewer than 2 repeats")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical repeats: "precision loss", handled below
        if paired:
            result = stats.ttest_rel(arm, control)
            method = f"paired t over {len(arm)} repeats"
        else:
            result = stats.ttest_ind(arm, control, equal_var=False)
            method = f"Welch t over {len(arm)} and {len(control)} repeats"
        ci = result.confidence_interval(confidence_level=confidence)
    low, high, p = float(ci.low), float(ci.high), float(result.pvalue)
    if not (math.isfinite(low) and math.isfinite(high)):  # every repeat gave the same difference
        low = high = difference
    if not math.isfinite(p):
        p = 1.0 if difference == 0 else 0.0
    return Interval(metric, difference, low, high, p, confidence, method, min(len(arm), len(control)))


# --------------------------------------------------------------------------- the decision

BETTER, SAME, WORSE = "better", "not distinguishable", "worse"


def verdict(interval: Interval, *, min_improvement: float, lower_is_better: bool) -> tuple[str, str]:
    """(verdict, why) of an arm on the promoted metric, from its interval against the control.

    better: the whole interval is an improvement of more than `min_improvement`;
    worse: the whole interval is a deterioration; otherwise (or with no interval) not
    distinguishable. Improvement is arm - control, or control - arm when lower is better.
    """
    if not interval.has_interval:
        return SAME, interval.method
    assert interval.low is not None and interval.high is not None
    sign = -1.0 if lower_is_better else 1.0
    low, high = sorted((sign * interval.low, sign * interval.high))
    level = f"{interval.confidence:.0%} interval of the improvement [{low:+.4g}, {high:+.4g}]"
    if low > min_improvement:
        return BETTER, f"{level} is above {min_improvement:+.4g}"
    if high < 0:
        return WORSE, f"{level} is below 0"
    if low > 0:
        return SAME, f"{level}: better, but not surely by more than {min_improvement:+.4g}"
    return SAME, f"{level} contains 0"
