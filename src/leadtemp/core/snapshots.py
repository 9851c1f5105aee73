"""Point-in-time snapshots: cutoffs, eligibility, horizon labels and time-ordered splits.

A snapshot of a lead at cutoff ``t`` is what we knew strictly before ``t``. A lead is eligible when
it was created before ``t``, had not converted before ``t`` and is not lost at ``t`` (closed as lost
or disqualified and not reopened since: :mod:`leadtemp.core.lifecycle`). Its label is 1 when it converts at or
after ``t`` and no later than ``t + horizon`` (a conversion stamped exactly at ``t`` was not yet
known at ``t``, so it is an outcome, not history). Snapshots whose horizon ends after the observed
data are censored: dropped, never counted as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadtemp.core.errors import NotEnoughHistory
from leadtemp.core.lifecycle import LOST, LOST_SINCE, REOPENED_AT, LossRules, loss_spells, lost_state
from leadtemp.core.schema import CONVERTED_AT, CREATED_AT, LABEL, LEAD_ID, TIMESTAMP


def observed_until(leads: pd.DataFrame, interactions: pd.DataFrame, explicit: str | None = None) -> pd.Timestamp:
    """End of the observed data: explicit, or the latest timestamp anywhere in the input."""
    if explicit is not None:
        return pd.Timestamp(explicit)
    stamps = [leads[CREATED_AT].max(), leads[CONVERTED_AT].max()]
    if len(interactions):
        stamps.append(interactions[TIMESTAMP].max())
    return max(s for s in stamps if pd.notna(s))


def cutoff_dates(leads: pd.DataFrame, until: pd.Timestamp, frequency: str) -> pd.DatetimeIndex:
    """Periodic cutoffs after the first lead was created, up to ``until``."""
    first = leads[CREATED_AT].min()
    return pd.date_range(first, until, freq=frequency, inclusive="right").normalize().unique()


def eligible_leads(leads: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Leads created before ``as_of`` and not converted before it."""
    converted = leads[CONVERTED_AT]
    mask = (leads[CREATED_AT] < as_of) & (converted.isna() | (converted >= as_of))
    return leads.loc[mask]


def scorable_leads(leads: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp, rules: LossRules,
                   include_lost: bool = False) -> tuple[pd.DataFrame, int]:
    """The one eligibility rule of scoring (in memory, batch partitions, Spark): open leads at ``as_of``.

    Eligible (:func:`eligible_leads`) and not lost at ``as_of``; ``include_lost`` keeps the lost ones too.
    Returns a copy of those leads with ``lost_since`` (NaT unless lost) and ``reopened_at`` (the end of
    the latest lost spell, NaT if never reopened) added, and how many eligible leads were lost at
    ``as_of`` (kept with ``include_lost``, else left out).
    """
    eligible = eligible_leads(leads, as_of).reset_index(drop=True)
    state = lost_state(loss_spells(eligible, interactions, rules), eligible[LEAD_ID].to_numpy(), as_of)
    lost = state[LOST].to_numpy()
    out = eligible.assign(**{LOST_SINCE: state[LOST_SINCE].to_numpy(), REOPENED_AT: state[REOPENED_AT].to_numpy()})
    if not include_lost:
        out = out.loc[~lost].reset_index(drop=True)
    return out, int(lost.sum())


def drop_lost(snapshots: pd.DataFrame, spells: pd.DataFrame | None) -> pd.DataFrame:
    """Snapshots (lead_id, cutoff, ...) without the rows whose lead was lost at its cutoff: a lost lead is at risk
    of nothing and is never scored, so it is never a training row either (``spells``: :func:`loss_spells`)."""
    if spells is None or not len(spells) or not len(snapshots):
        return snapshots
    lost = lost_state(spells, snapshots[LEAD_ID].to_numpy(), snapshots["cutoff"].to_numpy())[LOST].to_numpy()
    return snapshots.loc[~lost].reset_index(drop=True)


def open_leads(leads: pd.DataFrame, as_of: pd.Timestamp | None) -> pd.DataFrame:
    """Leads of a one-row-per-lead table still without an outcome (and created before ``as_of``)."""
    mask = pd.Series(True, index=leads.index)
    if LABEL in leads.columns:
        mask &= leads[LABEL].isna()
    if as_of is not None and leads[CREATED_AT].notna().any():
        mask &= leads[CREATED_AT] < as_of
    return leads.loc[mask].reset_index(drop=True)


def build_snapshots(
    leads: pd.DataFrame,
    cutoffs: pd.DatetimeIndex,
    horizon_days: int,
    until: pd.Timestamp,
    spells: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (eligible lead, cutoff) whose horizon is observed: lead_id, cutoff, label.

    ``spells`` (:func:`~leadtemp.core.lifecycle.loss_spells`): leads lost at a cutoff are not at risk there.
    """
    horizon = pd.Timedelta(days=horizon_days)
    parts = []
    for cutoff in cutoffs:
        if cutoff + horizon > until:
            continue  # censored: the outcome window is not fully observed
        lead = eligible_leads(leads, cutoff)
        converted = lead[CONVERTED_AT]
        label = (converted.notna() & (converted <= cutoff + horizon)).astype(np.int8)
        parts.append(pd.DataFrame({LEAD_ID: lead[LEAD_ID].to_numpy(), "cutoff": cutoff, "label": label.to_numpy()}))
    if not parts:
        return pd.DataFrame({LEAD_ID: pd.Series(dtype=str), "cutoff": pd.Series(dtype="datetime64[ns]"),
                             "label": pd.Series(dtype=np.int8)})
    return drop_lost(pd.concat(parts, ignore_index=True), spells)


def creation_snapshots(leads: pd.DataFrame, horizon_days: int, until: pd.Timestamp,
                       skip: pd.DatetimeIndex | None = None, spells: pd.DataFrame | None = None) -> pd.DataFrame:
    """One snapshot per lead at the first midnight after its creation: what a team scoring new leads each morning sees.

    Same rules as a periodic cutoff: the lead was created strictly before its cutoff (always, by
    construction), is eligible only if not converted before it, is labelled 1 when it converts in
    [cutoff, cutoff + horizon], and is censored (dropped) when that window is not fully observed.
    ``skip``: periodic cutoffs already used; a creation snapshot on one of them is the same snapshot
    as the periodic one, so it is not repeated. ``spells``: as in :func:`build_snapshots` (a lead
    disqualified on its first day is not at risk the next morning). Columns: lead_id, cutoff, label.
    """
    horizon = pd.Timedelta(days=horizon_days)
    cutoff = leads[CREATED_AT].dt.normalize() + pd.Timedelta(days=1)
    converted = leads[CONVERTED_AT]
    keep = cutoff.notna() & (cutoff + horizon <= until) & (converted.isna() | (converted >= cutoff))
    if skip is not None:
        keep &= ~cutoff.isin(skip)
    label = (converted.notna() & (converted <= cutoff + horizon)).astype(np.int8)
    return drop_lost(pd.DataFrame({LEAD_ID: leads.loc[keep, LEAD_ID].to_numpy(), "cutoff": cutoff[keep].to_numpy(),
                                   "label": label[keep].to_numpy()}), spells)


@dataclass(frozen=True)
class SplitCutoffs:
    train: pd.DatetimeIndex
    validation: pd.DatetimeIndex
    calibration: pd.DatetimeIndex
    test: pd.DatetimeIndex

    def describe(self) -> dict[str, str]:
        return {name: f"{idx.min():%Y-%m-%d}..{idx.max():%Y-%m-%d} ({len(idx)})"
                for name, idx in vars(self).items()}




def split_cutoffs(cutoffs: pd.DatetimeIndex, horizon_days: int, test: int, calibration: int,
                  validation: int) -> SplitCutoffs:
    """Split labelled cutoffs by time: train < validation < calibration < test.

    Everything the test slice is scored with (booster, calibrator, bucket cut-offs) must have had
    its labels fully observed before the first test cutoff; likewise the booster's labels before
    the calibration slice. Each boundary therefore leaves a gap of one horizon (an embargo).
    Random splits would let later behaviour leak into training.
    """
    cutoffs = pd.DatetimeIndex(sorted(cutoffs))
    horizon = pd.Timedelta(days=horizon_days)
    test_idx = cutoffs[-test:]
    before_test = cutoffs[cutoffs + horizon <= test_idx.min()]
    cal_idx = before_test[-calibration:]
    before_cal = cutoffs[cutoffs + horizon <= cal_idx.min()] if len(cal_idx) else cal_idx
    val_idx = before_cal[-validation:]
    train_idx = before_cal[:-validation]
    if len(test_idx) < test or len(cal_idx) < calibration or len(val_idx) < validation or len(train_idx) < 1:
        raise NotEnoughHistory(
            f"{len(cutoffs)} labelled cutoffs ({cutoffs.min():%Y-%m-%d}..{cutoffs.max():%Y-%m-%d}) are too few for "
            f"{test} test + {calibration} calibration + {validation} validation cutoffs, at least one training "
            f"cutoff and two embargo gaps of {horizon_days} days; give more history or fewer cutoffs per slice"
            if len(cutoffs) else "no labelled cutoffs: the data is shorter than one horizon"
        )
    return SplitCutoffs(train=train_idx, validation=val_idx, calibration=cal_idx, test=test_idx)


def slices_of_times(times: pd.Series | pd.DatetimeIndex, splits: SplitCutoffs, horizon_days: int,
                    until: pd.Timestamp) -> np.ndarray:
    """Slice of snapshots taken at arbitrary ``times`` (creation snapshots), from the periodic split.

    A snapshot at ``t`` belongs to the slice whose periodic range holds ``t``: test from the first
    test cutoff on, calibration from the first calibration cutoff, validation from the first
    validation cutoff, train before that. It is dropped ("") when its label window crosses what
    the periodic split embargoes: the booster's slices (train, validation) need ``t + horizon`` at
    or before the first calibration cutoff, the calibration slice at or before the first test
    cutoff, the test slice at or before ``until``.
    """
    t = pd.DatetimeIndex(times).as_unit("ns").to_numpy()
    horizon = pd.Timedelta(days=horizon_days).to_timedelta64()
    test, cal, val = (pd.Timestamp(x).as_unit("ns").to_datetime64()
                      for x in (splits.test.min(), splits.calibration.min(), splits.validation.min()))
    conditions = [t >= test, t >= cal, t >= val]
    name = np.select(conditions, ["test", "calibration", "validation"], "train")
    limit = np.select(conditions, [pd.Timestamp(until).as_unit("ns").to_datetime64(), test, cal], cal)
    return np.where(t + horizon <= limit, name, "").astype(object)
