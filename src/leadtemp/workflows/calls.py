"""A call list that fits the team: who each rep calls today, in which order (issue 14, item 2).

The plan takes the leads with the most expected conversions the team can reach that day: each call is
worth the lead's calibrated probability, so the best plan of ``reps x per_rep`` calls is the best-scored
leads, and its value is the sum of their probabilities. Within one score (1..99), a lead that just turned
active (DOMAIN §1: it started a contact for the first time) goes first. Leads we contacted within the
cooldown are left for another day. With ``by`` (a lead column such as region), every rep stays on one
group: reps go one by one to the group whose next ``per_rep`` leads add the most expected conversions
(the best split, because each group's leads are taken best first). Within a group, leads are dealt to
its reps in a snake (1, 2, ..., n, n, ..., 2, 1, ...), so their lists hold about the same expected
conversions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadtemp.core.errors import ConfigError
from leadtemp.core.schema import LEAD_ID

CALL_COLUMNS = ["rep", "order", LEAD_ID, "as_of", "probability", "score", "bucket", "just_turned_active",
                "reason_1", "reason_2", "reason_3", "model_version", "run_id"]


@dataclass
class CallPlan:
    """The calls (one row per call: rep, order, lead and why), and what the plan is worth against others."""

    calls: pd.DataFrame
    capacity: int                  # reps x per_rep
    eligible: int                  # leads scorable at as_of
    cooled: int                    # of them, contacted by us within the cooldown: not called today
    expected: float                # expected conversions of the plan (sum of calibrated probabilities)
    thermometer_expected: float | None  # the same number of calls chosen by the thermometer rule
    random_expected: float         # ... chosen at random (its exact expectation)
    per_rep: pd.DataFrame = field(default_factory=pd.DataFrame)  # rep, group, calls, expected
    notes: list[str] = field(default_factory=list)


def call_order(scored: pd.DataFrame) -> np.ndarray:
    """Row order of a call list: score (1..99) first, within one score the leads that just turned active, then the
    probability, the booster's margin and the lead id (the tie-breaks of the scores' rank)."""
    active = scored["just_turned_active"].fillna(0).to_numpy(dtype=float) if "just_turned_active" in scored else \
        np.zeros(len(scored))
    return np.lexsort((scored[LEAD_ID].astype(str).to_numpy(), -scored["margin"].to_numpy(dtype=float),
                       -scored["probability"].to_numpy(dtype=float), -active, -scored["score"].to_numpy(dtype=float)))


def _snake(n_rows: int, reps: int) -> np.ndarray:
    """Rep (0-based) of each of ``n_rows`` leads dealt best first: 0, 1, ..., r-1, r-1, ..., 1, 0, 0, 1, ..."""
    cycle = np.concatenate([np.arange(reps), np.arange(reps)[::-1]])
    return np.resize(cycle, n_rows)


def _allocate(groups: dict[str, np.ndarray], reps: int, per_rep: int) -> dict[str, int]:
    """Reps per group, one at a time to the group whose next ``per_rep`` leads (probabilities best first) add the
    most expected conversions; ties to the group named first."""
    given = dict.fromkeys(groups, 0)
    for _ in range(reps):
        gain = {g: float(p[given[g] * per_rep:(given[g] + 1) * per_rep].sum()) for g, p in groups.items()}
        best = max(gain, key=lambda g: (gain[g], -list(groups).index(g)))
        if gain[best] <= 0:
            break
        given[best] += 1
    return given


def day_rows(scorer, leads: pd.DataFrame, events: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The scored leads a plan of ``as_of`` chooses from, with the columns :func:`plan_calls` reads beside the scores
    (just turned active, our last contact, the thermometer's score)."""
    eligible, _ = scorer.eligible(leads, events, as_of)
    features = scorer.features_of(eligible, events, as_of)
    rows = scorer.score_rows(features).reset_index(drop=True)
    for column in ("just_turned_active", "outbound_days_since_last", "thermometer_score"):
        if column in features.columns:
            rows[column] = features[column].to_numpy()
    return rows


def plan_calls(scored: pd.DataFrame, reps: int, per_rep: int, cooldown_days: float, by: str | None = None) -> CallPlan:
    """The day's calls from ``scored``: scorer rows (``score_rows``: probability, score, bucket, reasons, margin) joined
    with the features ``just_turned_active``, ``outbound_days_since_last`` and ``thermometer_score`` (and ``by``)."""
    if reps < 1 or per_rep < 1:
        raise ConfigError(f"--reps {reps} --per-rep {per_rep}: a plan needs at least one rep with one call")
    if by is not None and by not in scored.columns:
        raise ConfigError(f"--by {by!r}: not a lead column the model reads (one of the data.categorical columns)")
    capacity = reps * per_rep
    notes = []
    last = scored["outbound_days_since_last"] if "outbound_days_since_last" in scored else pd.Series(np.nan, scored.index)
    cooled = last.notna().to_numpy() & (last.to_numpy(dtype=float) < cooldown_days)
    open_ = scored.loc[~cooled].reset_index(drop=True)
    open_ = open_.iloc[call_order(open_)].reset_index(drop=True)
    if len(open_) < capacity:
        notes.append(f"capacity {capacity:,} calls, only {len(open_):,} leads to call (after the {cooldown_days:g}-day "
                     "cooldown): every one is planned and some reps get fewer calls")
    group = open_[by].astype("string").fillna("(none)").to_numpy(dtype=object) if by else np.full(len(open_), "all")
    names = list(dict.fromkeys(group))
    members = {g: np.flatnonzero(group == g) for g in names}
    if by is None:
        given = {"all": reps}
    else:
        given = _allocate({g: open_["probability"].to_numpy()[rows] for g, rows in members.items()}, reps, per_rep)
    parts, first_rep = [], 1
    for g in names:
        n = given[g]
        if n == 0:
            continue
        rows = members[g][:n * per_rep]
        chosen = open_.iloc[rows].copy()
        chosen["rep"] = first_rep + _snake(len(chosen), n)
        if by is not None:
            chosen[by] = g
        parts.append(chosen)
        first_rep += n
    calls = pd.concat(parts, ignore_index=True) if parts else open_.head(0).assign(rep=pd.Series(dtype=int))
    calls["order"] = calls.groupby("rep").cumcount() + 1
    if "just_turned_active" in calls.columns:
        calls["just_turned_active"] = calls["just_turned_active"].fillna(0).astype(bool)
    calls = calls.sort_values(["rep", "order"], kind="stable").reset_index(drop=True)
    if by is not None and (idle := reps - sum(given.values())):
        notes.append(f"{idle} rep(s) without calls: no group has leads left for them")
    columns = CALL_COLUMNS[:3] + ([by] if by else []) + [c for c in CALL_COLUMNS[3:] if c in calls.columns]
    size = len(calls)
    p_open = open_["probability"].to_numpy(dtype=float)
    thermometer = None
    if "thermometer_score" in open_.columns and open_["thermometer_score"].nunique() > 1:
        order = np.lexsort((open_[LEAD_ID].astype(str).to_numpy(), -open_["thermometer_score"].to_numpy(dtype=float)))
        thermometer = float(p_open[order[:size]].sum())
    per_rep_table = calls.groupby(["rep"] + ([by] if by else []), sort=True).agg(
        calls=(LEAD_ID, "size"), expected=("probability", "sum")).reset_index()
    return CallPlan(calls=calls[columns], capacity=capacity, eligible=len(scored), cooled=int(cooled.sum()),
                    expected=float(calls["probability"].sum()), thermometer_expected=thermometer,
                    random_expected=float(p_open.mean() * size) if len(p_open) else 0.0,
                    per_rep=per_rep_table, notes=notes)
