"""Defaults that fit the history you have: horizon, cutoff frequency and slice sizes for ``auto`` params.

A score means "the chance to convert within the horizon", so the horizon should cover the time leads
take to convert; and every label needs a full horizon observed after its cutoff, so a short history
cannot carry a long horizon. When ``snapshots.horizon_days`` is ``auto`` it is the shortest of 7, 14,
30, 60 and 90 days that covers three quarters of the recorded conversions' days from creation (90 when
they take longer), shortened while the history is too short for it. When ``snapshots.frequency`` is
``auto`` the cutoffs are monthly when the history holds enough of them, weekly otherwise. "Enough" is
a test slice and rolling-origin folds (:class:`RollingSplits`) with at least ``MIN_CONVERSIONS``
converting leads in the test, in every fold's training rows and in every validation block; the
longest horizon that allows two folds wins, monthly before weekly. When nothing fits, smaller test
slices and validation blocks are tried (``SMALLER_SIZES``) before training is refused. What was chosen,
and why, goes into the run's notes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadtemp.core.config import AUTO, Params
from leadtemp.core.errors import NotEnoughHistory
from leadtemp.core.schema import CONVERTED_AT, CREATED_AT, LEAD_ID
from leadtemp.core.snapshots import build_snapshots, creation_snapshots, cutoff_dates

HORIZONS = (7, 14, 30, 60, 90)
FREQUENCIES = ("MS", "W-MON")
AUTO_TEST_CUTOFFS = {"MS": 3, "W-MON": 4}   # about a quarter, or a month, of test cutoffs
AUTO_FOLD_CUTOFFS = {"MS": 2, "W-MON": 4}   # each validation block: two months, or four weeks
# When no horizon and frequency fit with those sizes: smaller test slices and blocks, in this order, before
# refusing (each still needs MIN_CONVERSIONS converting leads): a short history with many leads is enough data
# for a slice of two weeks, but the embargoes of a long horizon leave no room for a month-long one.
SMALLER_SIZES = {"MS": ((2, 1),), "W-MON": ((3, 2), (2, 2), (2, 1))}
COVERED_SHARE = 0.75                        # the horizon covers this share of the days to convert
MIN_CONVERSIONS = 20                        # converting leads in the test, each fold's training rows and block


@dataclass(frozen=True)
class RollingSplits:
    """The test cutoffs and, before them, rolling-origin folds over the snapshots whose labels end before the test.

    The *pool* is every snapshot whose label window ends at or before the first test cutoff: what the
    final booster and the calibrator may learn from. Fold ``k`` validates on the pool snapshots taken
    in ``[starts[k], starts[k+1])`` (the last block runs to the end of the pool) and trains on pool
    snapshots whose label window ends at or before ``starts[k]``: each fold sees only the past, with a
    one-horizon embargo, as the final model does before the test.
    """

    test: pd.DatetimeIndex
    starts: tuple[pd.Timestamp, ...]
    horizon_days: int
    pool_cutoffs: pd.DatetimeIndex

    @property
    def horizon(self) -> pd.Timedelta:
        return pd.Timedelta(days=self.horizon_days)

    @property
    def trained_through(self) -> pd.Timestamp:
        """Every label the final booster and calibrator saw was observed before this."""
        return self.test.min()

    def slice_of(self, times: pd.Series | pd.DatetimeIndex, until: pd.Timestamp) -> np.ndarray:
        """``train`` (the pool), ``test`` or "" (embargoed or censored) for snapshots taken at ``times``."""
        t = pd.DatetimeIndex(times)
        pool = (t + self.horizon <= self.test.min())
        test = (t >= self.test.min()) & (t + self.horizon <= until)
        return np.select([pool, test], ["train", "test"], "").astype(object)

    def fold_masks(self, times: pd.Series | pd.DatetimeIndex) -> list[tuple[np.ndarray, np.ndarray]]:
        """(training rows, validation rows) of each fold, oldest first, over pool snapshots taken at ``times``."""
        t = pd.DatetimeIndex(times)
        ends = [*self.starts[1:], pd.Timestamp.max]
        return [(np.asarray(t + self.horizon <= start), np.asarray((t >= start) & (t < end)))
                for start, end in zip(self.starts, ends)]

    def describe(self) -> dict[str, str]:
        out = {f"fold {k + 1}": f"trains on labels ending by {s:%Y-%m-%d}, validates from {s:%Y-%m-%d}"
               for k, s in enumerate(self.starts)}
        out["train"] = (f"{self.pool_cutoffs.min():%Y-%m-%d}..{self.pool_cutoffs.max():%Y-%m-%d} "
                       f"({len(self.pool_cutoffs)})" if len(self.pool_cutoffs) else "empty")
        out["test"] = f"{self.test.min():%Y-%m-%d}..{self.test.max():%Y-%m-%d} ({len(self.test)})"
        return out


def plan_rolling(labelled: pd.DatetimeIndex, horizon_days: int, test_cutoffs: int, fold_cutoffs: int,
                 folds: int) -> RollingSplits | None:
    """The newest ``test_cutoffs`` cutoffs as the test, then up to ``folds`` blocks of ``fold_cutoffs`` pool cutoffs.

    None when the cutoffs cannot hold a test slice and one fold with a training cutoff before it.
    """
    labelled = pd.DatetimeIndex(sorted(labelled))
    horizon = pd.Timedelta(days=horizon_days)
    if len(labelled) <= test_cutoffs:
        return None
    test = labelled[-test_cutoffs:]
    pool = labelled[labelled + horizon <= test.min()]
    starts = []
    for k in range(1, folds + 1):
        if len(pool) < k * fold_cutoffs:
            break
        start = pool[-k * fold_cutoffs]
        if not (pool + horizon <= start).any():  # a fold needs at least one training cutoff
            break
        starts.insert(0, start)
    if not starts:
        return None
    return RollingSplits(test=test, starts=tuple(starts), horizon_days=horizon_days, pool_cutoffs=pool)


def _converters(snaps: pd.DataFrame, mask: np.ndarray) -> int:
    return int(snaps.loc[mask & (snaps["label"].to_numpy() == 1), LEAD_ID].nunique())


def trim_folds(splits: RollingSplits, snaps: pd.DataFrame, until: pd.Timestamp,
               minimum: int = MIN_CONVERSIONS) -> RollingSplits | None:
    """Drop the oldest folds while a fold's training rows or block hold fewer than ``minimum`` converting leads.

    None when the test slice itself has fewer, or no fold is left.
    """
    where = splits.slice_of(snaps["cutoff"], until)
    if _converters(snaps, where == "test") < minimum:
        return None
    pool = snaps.loc[where == "train"]
    masks = splits.fold_masks(pool["cutoff"])
    enough = [_converters(pool, fit) >= minimum and _converters(pool, valid) >= minimum for fit, valid in masks]
    # A fold's block runs to the next fold's start, so only the oldest folds can go: keep the newest run that all pass.
    first = len(enough) - next((i for i, ok in enumerate(reversed(enough)) if not ok), len(enough))
    if first == len(enough):
        return None
    return RollingSplits(splits.test, splits.starts[first:], splits.horizon_days, splits.pool_cutoffs)


@dataclass(frozen=True)
class Cadence:
    """Concrete snapshot and split settings for one training run, and why they were chosen."""

    horizon_days: int
    frequency: str
    test_cutoffs: int
    fold_cutoffs: int
    splits: RollingSplits | None   # None for splits.method: chain
    notes: tuple[str, ...]

    def apply(self, params: Params) -> Params:
        """``params`` with every ``auto`` of snapshots and splits replaced by what was chosen."""
        return params.replace(snapshots={"horizon_days": self.horizon_days, "frequency": self.frequency},
                              splits={"test_cutoffs": self.test_cutoffs, "fold_cutoffs": self.fold_cutoffs})


def preferred_horizon(leads: pd.DataFrame) -> tuple[int, str]:
    """The shortest standard horizon covering ``COVERED_SHARE`` of the recorded days from creation to conversion."""
    days = ((leads[CONVERTED_AT] - leads[CREATED_AT]).dt.total_seconds() / 86400).dropna()
    days = days[days >= 0]
    if len(days) < MIN_CONVERSIONS:
        return HORIZONS[-1], f"only {len(days)} recorded conversions to measure the time to convert"
    q = float(np.quantile(days, COVERED_SHARE))
    horizon = next((h for h in HORIZONS if h >= q), HORIZONS[-1])
    return horizon, f"{COVERED_SHARE:.0%} of {len(days):,} conversions came within {q:.0f} days of creation"


def resolve_cadence(leads: pd.DataFrame, until: pd.Timestamp, params: Params) -> Cadence:
    """Concrete horizon, frequency and slice sizes for ``params`` on this history (explicit values are kept)."""
    s, sp = params.snapshots, params.splits
    preferred, why = (s.horizon_days, None) if s.horizon_days != AUTO else preferred_horizon(leads)
    horizons = [preferred] if s.horizon_days != AUTO else [h for h in reversed(HORIZONS) if h <= preferred]
    frequencies = [s.frequency] if s.frequency != AUTO else list(FREQUENCIES)
    if sp.method == "chain":  # the fixed chain keeps its historical defaults
        h, f = horizons[0] if s.horizon_days != AUTO else 90, frequencies[0] if s.frequency != AUTO else "MS"
        return Cadence(h, f, sp.test_cutoffs if sp.test_cutoffs != AUTO else 3, 1, None, ())
    for level in range(1 + max(len(v) for v in SMALLER_SIZES.values())):
        fallback = None
        for horizon in horizons:
            for frequency in frequencies:
                sizes = _sizes(frequency, level, sp.test_cutoffs, sp.fold_cutoffs)
                if sizes is None:
                    continue
                splits = _feasible(leads, until, horizon, frequency, *sizes, params)
                if splits is None:
                    continue
                cadence = Cadence(horizon, frequency, *sizes, splits, ())
                if len(splits.starts) >= min(2, sp.folds):
                    return _with_notes(cadence, params, why, preferred)
                fallback = fallback or cadence
        if fallback is not None:
            return _with_notes(fallback, params, why, preferred)
    raise NotEnoughHistory(
        f"the history up to {until:%Y-%m-%d} is too short: no horizon and cutoff frequency leave a test slice and a "
        f"fold with {MIN_CONVERSIONS} converting leads in each (tried horizons of "
        f"{'/'.join(str(h) for h in horizons)} days with {' and '.join(frequencies)} cutoffs, test slices down to "
        f"2 cutoffs and validation blocks down to 1){_what_fits(leads, until, params, horizons)}; give more history "
        "(more months, or more recorded conversions)")


def _sizes(frequency: str, level: int, test_cutoffs: int | str, fold_cutoffs: int | str) -> tuple[int, int] | None:
    """(test cutoffs, cutoffs per validation block) at this level of shrinking; None when nothing is left to shrink.

    Level 0 is the ``auto`` sizes (or the explicit ones); later levels shrink only what is ``auto``.
    """
    default = (AUTO_TEST_CUTOFFS.get(frequency, 3), AUTO_FOLD_CUTOFFS.get(frequency, 2))
    if level == 0:
        chosen = default
    else:
        smaller = SMALLER_SIZES.get(frequency, ())
        if level > len(smaller) or (test_cutoffs != AUTO and fold_cutoffs != AUTO):
            return None
        chosen = smaller[level - 1]
    return (test_cutoffs if test_cutoffs != AUTO else chosen[0], fold_cutoffs if fold_cutoffs != AUTO else chosen[1])


def _what_fits(leads: pd.DataFrame, until: pd.Timestamp, params: Params, tried: list[int]) -> str:
    """", but a horizon of N days fits" when the user fixed a horizon and a shorter standard one would train."""
    if params.snapshots.horizon_days == AUTO:
        return ""
    for horizon in (h for h in reversed(HORIZONS) if h < min(tried)):
        try:
            resolve_cadence(leads, until, params.replace(snapshots={"horizon_days": horizon}))
        except NotEnoughHistory:
            continue
        return f", but snapshots.horizon_days: {horizon} fits"
    return ""


def _feasible(leads: pd.DataFrame, until: pd.Timestamp, horizon: int, frequency: str, n_test: int, block: int,
              params: Params) -> RollingSplits | None:
    labelled = cutoff_dates(leads, until, frequency)
    labelled = labelled[labelled + pd.Timedelta(days=horizon) <= until]
    splits = plan_rolling(labelled, horizon, n_test, block, params.splits.folds)
    if splits is None:
        return None
    snaps = build_snapshots(leads, labelled, horizon, until)
    if params.snapshots.at_creation:
        snaps = pd.concat([snaps, creation_snapshots(leads, horizon, until, skip=labelled)], ignore_index=True)
    return trim_folds(splits, snaps, until)


def _with_notes(cadence: Cadence, params: Params, why: str | None, preferred: int) -> Cadence:
    s, notes = params.snapshots, []
    if s.horizon_days == AUTO:
        notes.append(f"horizon {cadence.horizon_days} days (auto: {why}"
                     + (f"; {preferred} shortened to fit the history" if cadence.horizon_days < preferred else "") + ")")
    if s.frequency == AUTO:
        every = {"MS": "monthly", "W-MON": "weekly"}.get(cadence.frequency, cadence.frequency)
        notes.append(f"cutoffs {every} "
                     f"(auto), test slice {cadence.test_cutoffs} cutoffs, {len(cadence.splits.starts)} fold(s) of "
                     f"{cadence.fold_cutoffs} cutoffs")
    return Cadence(cadence.horizon_days, cadence.frequency, cadence.test_cutoffs, cadence.fold_cutoffs,
                   cadence.splits, tuple(notes))

