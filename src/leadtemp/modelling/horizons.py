"""When, not only if: the chance to convert within each of several horizons, and the expected days to convert.

One booster per horizon ``h`` (``when.horizons_days``; the main horizon's is the main booster itself), learnt
from the same snapshots as the main model (a shorter horizon also from the newer ones its label allows: see
``workflows/train._short_horizon_rows``) with the label "converts within ``h`` days of the cutoff", under the
same rules: the pool rows whose ``h``-day label is observed before the first test cutoff, rolling-origin folds
that train on labels observed before their block (an embargo of ``h``), the main model's family, rounds from the
folds' mean curve, a calibrator fitted on the newest blocks' out-of-fold margins (or the booster's own
probabilities when those are better on the folds, as for the main model).

Separate boosters can cross: a lead's 7-day chance above its 30-day chance. The curve is made consistent around
the main horizon ``H``, whose value is the main ``probability`` (so buckets and ``p_<H>d`` never disagree): below
``H`` a running minimum from ``H`` down, above it a running maximum from ``H`` up. ``expected_days`` is the median
day of conversion given a conversion within the longest horizon: the first day the curve, drawn linearly between
(0, 0) and its horizons, reaches half its value at the longest horizon.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadtemp.core.cadence import MIN_CONVERSIONS, RollingSplits
from leadtemp.core.features import FeatureSpec
from leadtemp.core.metrics import classification_metrics
from leadtemp.core.schema import CONVERTED_AT, LEAD_ID
from leadtemp.modelling.booster import fit_rounds, reads_spec_codes
from leadtemp.modelling.calibration import Calibrator, with_ceiling
from leadtemp.modelling.select import (
    Selection,
    calibration_rows,
    calibrator_for,
    choose_calibration,
    evaluate_family,
    family_params,
    fold_datasets,
)

if TYPE_CHECKING:
    import lightgbm as lgb

    from leadtemp.core.config import Params

EXPECTED_DAYS = "expected_days"


def p_column(days: int) -> str:
    """The score column of one horizon: ``p_7d``."""
    return f"p_{days}d"


def timing_columns(horizons: tuple[int, ...]) -> list[str]:
    """The score columns a model with these horizons writes, after ``probability``: p_<h>d each, then expected_days."""
    return [*map(p_column, horizons), EXPECTED_DAYS] if horizons else []


@dataclass
class HorizonModel:
    """The booster and calibrator of one horizon other than the main one."""

    days: int
    booster: lgb.Booster
    calibrator: Calibrator

    def probability(self, features: pd.DataFrame, spec: FeatureSpec, matrix: np.ndarray | None = None) -> np.ndarray:
        """``matrix``: the rows' feature matrix, used when this booster reads the spec's codes (else the frame)."""
        rows = matrix if matrix is not None and reads_spec_codes(self.booster, spec) else features[spec.columns]
        return self.calibrator(self.booster.predict(rows, raw_score=True))


def consistent(p: dict[int, np.ndarray], main_days: int, probability: np.ndarray) -> dict[int, np.ndarray]:
    """Each horizon's probabilities made non-decreasing in the horizon for every lead, ``probability`` fixed at
    ``main_days`` (running minimum below it, running maximum above it). Returns the horizons of ``p`` (plus
    ``main_days`` when it was among them, with ``probability``)."""
    out = {main_days: np.asarray(probability, dtype=float)}
    below = sorted((h for h in p if h < main_days), reverse=True)
    above = sorted(h for h in p if h > main_days)
    prev = out[main_days]
    for h in below:
        prev = out[h] = np.minimum(p[h], prev)
    prev = out[main_days]
    for h in above:
        prev = out[h] = np.maximum(p[h], prev)
    return {h: out[h] for h in sorted(out) if h in p or h == main_days}


def expected_days(curve: dict[int, np.ndarray]) -> np.ndarray:
    """Median days to convert given a conversion within the longest horizon of ``curve`` (non-decreasing in h):
    the first day the linear interpolation through (0, 0) and the curve's points reaches half its last value."""
    days = np.array([0, *sorted(curve)], dtype=float)
    p = np.column_stack([np.zeros(len(next(iter(curve.values())))), *(curve[h] for h in sorted(curve))])
    target = p[:, -1] / 2
    reached = p >= target[:, None]
    reached[:, 0] = target <= 0  # a curve of zeros: day 0
    k = np.maximum(reached.argmax(axis=1), 1)
    rows = np.arange(len(p))
    lo, hi = p[rows, k - 1], p[rows, k]
    share = np.where(hi > lo, (target - lo) / np.where(hi > lo, hi - lo, 1.0), 1.0)
    out = days[k - 1] + np.clip(share, 0, 1) * (days[k] - days[k - 1])
    return np.where(target > 0, np.round(out, 1), 0.0)


def timing(models: dict[int, HorizonModel], main_days: int, horizons: tuple[int, ...], features: pd.DataFrame,
           spec: FeatureSpec, probability: np.ndarray, matrix: np.ndarray | None = None) -> pd.DataFrame:
    """The ``p_<h>d`` columns (``horizons``) and ``expected_days`` for leads whose main ``probability`` is known
    (``matrix``: the rows' feature matrix, when the caller has it)."""
    raw = {h: m.probability(features, spec, matrix) for h, m in models.items()}
    curve = consistent(raw, main_days, probability)
    shown = {h: curve[h] for h in horizons}
    out = pd.DataFrame({p_column(h): v for h, v in shown.items()})
    out[EXPECTED_DAYS] = expected_days({h: v for h, v in curve.items() if h <= max(horizons)})
    return out


def horizon_labels(rows: pd.DataFrame, leads: pd.DataFrame, days: int) -> np.ndarray:
    """1 when the row's lead converts at or after its cutoff and within ``days`` days of it (rows are eligible)."""
    converted = rows[LEAD_ID].map(leads.drop_duplicates(LEAD_ID).set_index(LEAD_ID)[CONVERTED_AT])
    converted = pd.to_datetime(converted)
    return (converted.notna() & (converted >= rows["cutoff"]) &
            (converted <= rows["cutoff"] + pd.Timedelta(days=days))).to_numpy(dtype=np.int8)


@dataclass
class HorizonFit:
    models: dict[int, HorizonModel]
    horizons: tuple[int, ...]           # the horizons shown (when.horizons_days the history could label)
    facts: dict[int, dict]              # per fitted horizon: where its labels end, rounds, calibration (model meta)
    notes: list[str]


def fit_horizons(frame: pd.DataFrame, leads: pd.DataFrame, splits: RollingSplits, until: pd.Timestamp,
                 spec: FeatureSpec, params: Params, selection: Selection, horizons: tuple[int, ...]) -> HorizonFit:
    """One booster and calibrator per horizon of ``horizons`` other than the main one (``splits.horizon_days``).

    ``frame``: the training frame's pool (``slice == "train"``) and test rows with their features; each horizon
    relabels them, keeps the pool rows whose label is observed before the first test cutoff and the test rows
    observed by ``until``, and is left out (with a note) when the folds or the test slice lack conversions.
    """
    main = splits.horizon_days
    test_from = splits.test.min()
    models, kept, notes, facts = {}, [], [], {}
    for h in horizons:
        if h == main:
            kept.append(h)
            continue
        ends = frame["cutoff"] + pd.Timedelta(days=h)
        y = horizon_labels(frame, leads, h)
        pool_mask = (frame["slice"].to_numpy() == "train") & (ends <= test_from).to_numpy()
        test_mask = (frame["slice"].to_numpy() == "test") & (ends <= until).to_numpy()
        pool = frame.loc[pool_mask].assign(label=y[pool_mask]).reset_index(drop=True)
        hs = replace(splits, horizon_days=h)
        folds = [(f, v) for f, v in hs.fold_masks(pool["cutoff"])
                 if min(_converters(pool, f), _converters(pool, v)) >= MIN_CONVERSIONS]
        converted_test = int(y[test_mask].sum())
        if not folds or converted_test < MIN_CONVERSIONS:
            notes.append(f"{p_column(h)} left out: the history cannot label a {h}-day horizon well enough ("
                         f"{converted_test} converted test rows, {len(folds)} fold(s) with {MIN_CONVERSIONS} "
                         f"converting leads; each needs {MIN_CONVERSIONS} and one fold)")
            continue
        period = pool["cutoff"].where(pool["snapshot"] == "periodic").to_numpy()
        candidate = evaluate_family(selection.family, pool, folds, fold_datasets(pool, folds, spec, params), period,
                                    spec, params)
        labels = [pool.loc[v, "label"].to_numpy() for _, v in folds]
        method = horizon_calibration(candidate, labels, params.calibration.method)
        newest = calibration_rows(labels)
        margin, label = np.concatenate(candidate.margins[-newest:]), np.concatenate(labels[-newest:])
        calibrator = with_ceiling(calibrator_for(replace(selection, calibration=method), margin, label), margin, label)
        booster = fit_rounds(pool, spec, params, candidate.rounds, family_params(selection.family, params, len(pool)))
        models[h] = HorizonModel(h, booster, calibrator)
        kept.append(h)
        span = pd.Timedelta(days=h)
        calibrated = np.logical_or.reduce([v for _, v in folds[-newest:]])
        facts[h] = {  # when each fitted thing's labels end (tests/test_when.py checks them against the test slice)
            "labels_through": str(pool["cutoff"].max() + span),
            "calibration_labels_through": str(pool.loc[calibrated, "cutoff"].max() + span),
            "folds": [{"labels_through": str(pool.loc[f, "cutoff"].max() + span),
                       "validates_from": str(pool.loc[v, "cutoff"].min())} for f, v in folds],
            "rounds": candidate.rounds, "calibration": method, "pool_rows": len(pool)}
        notes.append(f"{p_column(h)}: {len(pool):,} pool rows ({int(pool['label'].sum()):,} converted), {len(folds)} "
                     f"fold(s), {candidate.rounds} rounds, calibration {method}")
    return HorizonFit(models, tuple(kept), facts, notes)


def horizon_calibration(candidate, labels: list[np.ndarray], method: str) -> str:
    """The calibration of one horizon's booster: of its own probabilities (``raw``), Platt scaling (``sigmoid``) and
    ``method``, the lowest ECE fitted on one fold's block and applied to the next (``choose_calibration``'s test);
    with one fold, ``raw``, as for the main model (``choose_calibration``: nothing can test a calibrator fitted on
    the one fold booster's margins, and on three one-fold histories it made the main horizon's ECE worse). A short
    horizon converts rarely, so an isotonic calibrator's lowest step (no conversion among its leads) would give
    most leads the floor probability and erase their order; Platt scaling keeps it (measured in
    docs/design/sales-floor.md), so it is one of the options the folds test."""
    if len(labels) < 2:
        return "raw"
    scores = {}
    for option in dict.fromkeys(["raw", "sigmoid", method]):
        _, ece = choose_calibration(candidate, labels, option)
        scores[option] = ece[f"folds_{option}_ece"]
    return min(scores, key=lambda o: (scores[o], list(scores).index(o)))


def _converters(rows: pd.DataFrame, mask: np.ndarray) -> int:
    return int(rows.loc[mask & (rows["label"].to_numpy() == 1), LEAD_ID].nunique())


def horizon_metrics(test: pd.DataFrame, leads: pd.DataFrame, curve: pd.DataFrame, horizons: tuple[int, ...],
                    until: pd.Timestamp) -> dict[str, float]:
    """Per horizon, on the test rows whose ``h``-day label is observed by ``until``: ROC-AUC, ECE, rows and
    conversion rate of the consistent ``p_<h>d`` (keys ``p_<h>d_roc_auc`` ...)."""
    out = {}
    for h in horizons:
        observed = (test["cutoff"] + pd.Timedelta(days=h) <= until).to_numpy()
        y = horizon_labels(test, leads, h)[observed]
        if 0 < y.sum() < len(y):
            m = classification_metrics(pd.Series(y), curve[p_column(h)].to_numpy()[observed])
            out.update({f"{p_column(h)}_{k}": m[k] for k in ("roc_auc", "ece", "rows", "positive_rate")})
    return out
