"""Point-in-time features: DataFrames in, DataFrames out, inputs never modified.

Every feature of a lead at ``as_of`` is computed from interactions strictly before ``as_of``.
A *channel* is an interaction (type, direction) pair, e.g. ``phone_call`` / ``inbound``; the
channels the model knows are fixed at training time and stored in the :class:`FeatureSpec`.
Only touches (contacts) make channels and contact counts; types declared as steps give "reached",
"days since" and "steps in the last 7 days"; outcomes give nothing (:mod:`leadtemp.core.vocabulary`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace

import numba
import numpy as np
import pandas as pd

from leadtemp.core.config import EventType, Features
from leadtemp.core.lifecycle import REOPENED_AT, LossRules, loss_spells, lost_state
from leadtemp.core.referrals import REFERRAL_FEATURES, referral_features, referral_ledger
from leadtemp.core.schema import (
    CREATED_AT,
    DIRECTION,
    LEAD_ID,
    LEAD_RATING,
    OUTCOME,
    REFERRED_BY,
    STAGE,
    TASK_OUTCOMES,
    TASK_RATING,
    TIMESTAMP,
    TYPE,
)
from leadtemp.core.vocabulary import STEP, TOUCH, kind_of, thermometer_weights

DAY = np.timedelta64(1, "D")
DIRECTION_SHORT = {"inbound": "in", "outbound": "out"}
LEGACY_MODES = {"outcomes": "labels"}  # scorer.json written before the data shapes had one name each
TREND_RECENT_DAYS, TREND_PRIOR_DAYS = 7, 30
STEPS_RECENT_DAYS = 7
NOT_A_STEP, UNTRACKED_STEP = -2, -1  # codes of prepared events that are no step / a step type the spec does not track
# The funnel (params: a type with kind: stage; data.interaction_columns.outcome): features of its stages and tasks.
STAGE_FEATURES = ("stage_rank", "days_in_stage", "stages_skipped", "stage_moves_back")
REACH_DAYS = 30  # outbound attempts counted for the reach rate
TASK_FEATURES = (f"task_attempts_{REACH_DAYS}d", f"reach_rate_{REACH_DAYS}d", "last_task_outcome")
RATING_FEATURES = {LEAD_RATING: "lead_rating_last", TASK_RATING: f"task_rating_{REACH_DAYS}d"}  # latest; mean
REACHED, MISSED = ("reached", "held"), ("no_answer", "voicemail", "no_show")  # an attempt that reached the lead, or not


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or "x"


@dataclass(frozen=True)
class Channel:
    type: str
    direction: str

    @property
    def name(self) -> str:
        return f"{_slug(self.type)}_{DIRECTION_SHORT[self.direction]}"


@dataclass(frozen=True)
class FeatureSpec:
    """What the model was trained on: channels, windows, attribute columns and their categories."""

    channels: tuple[Channel, ...]
    windows_days: tuple[int, ...]
    half_life_days: float
    just_active_days: int
    categorical: dict[str, tuple[str, ...]]
    numeric: tuple[str, ...]
    thermometer: dict[str, float] = field(default_factory=dict)
    mode: str = "events"   # events: snapshots with behaviour; labels: attributes of a label table (one row per lead)
    timed: bool = True     # False: the training table had no time at all
    # Lost and reopened leads (LossRules.to_dict(): lost_types, reopening_types); {} = the data had no way to
    # lose a lead. When set, the model has the feature days_since_reopened and lost types are no channel.
    lifecycle: dict = field(default_factory=dict)

    @property
    def loss_rules(self) -> LossRules:
        return LossRules.from_dict(self.lifecycle)
    # The user's vocabulary (params ``events``) and the declared step types seen in training, most frequent first.
    vocabulary: dict[str, EventType] = field(default_factory=dict)
    steps: tuple[str, ...] = ()
    # Referrals (data.columns.referred_by, core/referrals.py): the model has the REFERRAL_FEATURES columns.
    referrals: bool = False

    @property
    def referral_columns(self) -> list[str]:
        return list(REFERRAL_FEATURES) if self.referrals and self.mode == "events" else []

    # The funnel: the stage type and its open stages first to last (terminal stages are never features), and
    # whether the interactions carry task outcomes. Models without them have none of the funnel's columns.
    stage_type: str | None = None
    stages: tuple[str, ...] = ()
    task_outcomes: bool = False
    ratings: tuple[str, ...] = ()  # the rep's ratings the interactions carry: lead_rating, task_rating

    @property
    def funnel_features(self) -> list[str]:
        return ((list(STAGE_FEATURES) if self.stages else []) + (list(TASK_FEATURES) if self.task_outcomes else [])
                + [f for r, f in RATING_FEATURES.items() if r in self.ratings])

    def kind(self, type_: str) -> str:
        return kind_of(self.vocabulary, type_)

    @property
    def step_columns(self) -> dict[str, str]:
        """Column prefix of each tracked step type (``step_<slug>``, numbered if two types share a slug) → type."""
        out: dict[str, str] = {}
        for t in self.steps:
            name = base = f"step_{_slug(t)}"
            i = 2
            while name in out:
                name, i = f"{base}_{i}", i + 1
            out[name] = t
        return out

    @property
    def step_features(self) -> list[str]:
        """Columns of the steps: none unless the vocabulary declares a step type (older models have none)."""
        if not any(e.kind == STEP for e in self.vocabulary.values()):
            return []
        cols = [f"{name}_{stat}" for name in self.step_columns for stat in ("reached", "days_since")]
        return cols + [f"steps_{STEPS_RECENT_DAYS}d"]

    @property
    def behaviour_columns(self) -> list[str]:
        if self.mode != "events":
            return []
        cols = []
        for prefix in [c.name for c in self.channels] + ["inbound", "outbound"]:
            cols += [f"{prefix}_{w}d" for w in self.windows_days]
            cols += [f"{prefix}_days_since_last", f"{prefix}_decayed"]
        cols += ["days_since_first_inbound", "just_turned_active", "inbound_trend", "lead_age_days", *self.step_features,
                 *self.funnel_features]
        return cols + (["days_since_reopened"] if self.lifecycle else [])

    @property
    def columns(self) -> list[str]:
        """Model feature columns, in the booster's order."""
        return self.behaviour_columns + list(self.categorical) + list(self.numeric) + self.referral_columns

    def to_dict(self) -> dict:
        out = asdict(self)
        out["channels"] = [asdict(c) for c in self.channels]
        return out  # asdict turns the vocabulary's EventTypes into plain dicts

    @classmethod
    def from_dict(cls, raw: dict) -> FeatureSpec:
        return cls(
            channels=tuple(Channel(**c) for c in raw["channels"]),
            windows_days=tuple(raw["windows_days"]),
            half_life_days=float(raw["half_life_days"]),
            just_active_days=int(raw["just_active_days"]),
            categorical={k: tuple(v) for k, v in raw["categorical"].items()},
            numeric=tuple(raw["numeric"]),
            thermometer=dict(raw.get("thermometer", {})),
            mode=LEGACY_MODES.get(raw.get("mode", "events"), raw.get("mode", "events")),
            timed=bool(raw.get("timed", True)),
            lifecycle=dict(raw.get("lifecycle", {})),
            # scorer.json before the vocabulary (format 1): every type a touch, no steps
            vocabulary={t: EventType(**{k: tuple(v) if k == "order" else v for k, v in e.items() if k in EVENT_TYPE_FIELDS})
                        for t, e in raw.get("vocabulary", {}).items()},
            steps=tuple(raw.get("steps", ())),
            referrals=bool(raw.get("referrals", False)),
            stage_type=raw.get("stage_type"),
            stages=tuple(raw.get("stages", ())),
            task_outcomes=bool(raw.get("task_outcomes", False)),
            ratings=tuple(raw.get("ratings", ())),
        )


EVENT_TYPE_FIELDS = {f.name for f in fields(EventType)}


def fit_feature_spec(
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    settings: Features,
    categorical: tuple[str, ...],
    numeric: tuple[str, ...],
    before: pd.Timestamp | None,
    mode: str = "events",
    timed: bool = True,
    lifecycle: LossRules | None = None,
    events: dict[str, EventType] | None = None,
    referrals: bool = False,
) -> FeatureSpec:
    """Learn channels, step types and categories from rows strictly before ``before`` (the training data).

    ``before=None``: the caller passes only training rows (tables with a final label). ``lifecycle``:
    how leads are lost and reopened (:meth:`LossRules.of`); lost types never become channels. ``events``:
    the user's vocabulary (params ``events``); only touches make channels, the declared steps seen most
    often (at most ``max_channels``) get step features. ``referrals``: the leads name their referrer
    (``data.columns.referred_by``): the model gets the referral features (core/referrals.py).
    """
    events = dict(events or {})
    past = interactions if before is None else interactions.loc[interactions[TIMESTAMP] < before]
    if lifecycle is not None and lifecycle.lost_types:
        past = past.loc[~past[TYPE].isin(lifecycle.lost_types)]
    kinds = {t: kind_of(events, t) for t in past[TYPE].unique()} if events else {}
    is_kind = past[TYPE].map(kinds) if events else None
    touches = past if not events else past.loc[(is_kind == TOUCH).to_numpy()]
    counts = touches.groupby([TYPE, DIRECTION]).size().sort_values(ascending=False, kind="stable")
    channels = tuple(Channel(t, d) for t, d in counts.index[: settings.max_channels]) if mode == "events" else ()
    steps: tuple[str, ...] = ()
    if events and mode == "events":
        step_counts = past.loc[(is_kind == STEP).to_numpy(), TYPE].value_counts(sort=False)
        step_counts = step_counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
        steps = tuple(step_counts.index[: settings.max_channels])
    stage_type = next((t for t, e in events.items() if e.kind == "stage"), None) if mode == "events" else None
    old_leads = leads if before is None else leads.loc[leads[CREATED_AT] < before]
    categories = {
        col: tuple(sorted(old_leads[col].dropna().astype(str).unique())) for col in categorical
    }
    return FeatureSpec(
        channels=channels,
        windows_days=tuple(sorted(settings.windows_days)),
        half_life_days=settings.half_life_days,
        just_active_days=settings.just_active_days,
        categorical=categories,
        numeric=tuple(numeric),
        thermometer=thermometer_weights(settings, events),
        mode=mode,
        timed=timed,
        lifecycle=lifecycle.to_dict() if lifecycle is not None and mode == "events" else {},
        vocabulary=events,
        steps=steps,
        referrals=referrals and mode == "events",
        stage_type=stage_type,
        stages=tuple(events[stage_type].order) if stage_type is not None else (),
        task_outcomes=mode == "events" and OUTCOME in interactions.columns,
        ratings=tuple(r for r in RATING_FEATURES if mode == "events" and r in interactions.columns),
    )


def _attributes(leads: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    out = {}
    for col, cats in spec.categorical.items():
        # A category never seen in training is unknown to the model: missing, not an error.
        out[col] = pd.Categorical.from_codes(_category_codes(leads[col], cats), dtype=pd.CategoricalDtype(list(cats)))
    for col in spec.numeric:
        out[col] = pd.to_numeric(leads[col], errors="coerce").astype(float).to_numpy()
    return pd.DataFrame(out, index=leads.index)


def _category_codes(values: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
    """The code of each value, as text, among ``categories`` (-1: missing or not among them), hashed in Arrow.

    What ``pd.Categorical(values.astype("string"), categories)`` gives, ~10x faster on text columns.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(values.astype("string").array)
    found = pc.index_in(text, value_set=pa.array(list(categories), type=text.type))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int8 if len(categories) < 127 else np.int32)


def prepare_events(interactions: pd.DataFrame, spec: FeatureSpec, sort: bool = True) -> pd.DataFrame:
    """Interactions with integer channel codes; unknown channels keep only direction.

    ``touch``: the row is a contact (steps and outcomes are not); ``step``: the index of a tracked step
    type in ``spec.steps``, ``UNTRACKED_STEP`` for another declared step, ``NOT_A_STEP`` otherwise.

    ``sort``: in time order, so that :func:`features_as_of` cuts each date with a binary search
    (training reads one prepared log at many cutoffs); scoring one date needs no order. Interactions of
    a lost type are left out: a lost lead is not scored, and a reopened one carries only ``days_since_reopened``.
    """
    if spec.lifecycle and spec.lifecycle.get("lost_types"):
        interactions = interactions.loc[~interactions[TYPE].isin(spec.lifecycle["lost_types"])]
    kind, kinds = pd.factorize(interactions[TYPE], sort=False)
    inbound = (interactions[DIRECTION] == "inbound").to_numpy(dtype=bool)
    # A small lookup per distinct (type, direction): channel code and thermometer heat.
    codes = {(c.type, c.direction): i for i, c in enumerate(spec.channels)}
    lookup = np.array([[codes.get((t, "outbound"), -1), codes.get((t, "inbound"), -1)] for t in kinds],
                      dtype=np.int32).reshape(-1, 2)
    kind_names = [spec.kind(t) for t in kinds]
    touch = np.array([k == TOUCH for k in kind_names], dtype=bool)
    tracked = {t: i for i, t in enumerate(spec.steps)}
    step = np.array([tracked.get(t, UNTRACKED_STEP) if k == STEP else NOT_A_STEP for t, k in zip(kinds, kind_names)],
                    dtype=np.int32)
    heat = np.array([spec.thermometer.get(t, 0.0) if k == TOUCH else 0.0 for t, k in zip(kinds, kind_names)], dtype=float)
    stamps = interactions[TIMESTAMP].to_numpy()
    # Arrays are sorted one by one: cheaper than sorting a frame.
    order = np.argsort(stamps, kind="stable") if sort else np.arange(len(stamps))
    funnel = {}
    if spec.stages:  # the rank of an open stage (0: the first); -1: no stage row, or a terminal stage (never a feature)
        named = interactions[STAGE] if STAGE in interactions.columns else pd.Series(pd.NA, index=interactions.index)
        rank = pd.Series(named.array).map({name: i for i, name in enumerate(spec.stages)})
        rank = rank.where((interactions[TYPE] == spec.stage_type).to_numpy())
        funnel["stage_rank"] = rank.fillna(-1).to_numpy(dtype=np.int32)[order]
    if spec.task_outcomes:  # the task outcome's place in TASK_OUTCOMES; -1: none
        told = interactions[OUTCOME] if OUTCOME in interactions.columns else pd.Series(pd.NA, index=interactions.index)
        code = pd.Series(told.array).map({name: i for i, name in enumerate(TASK_OUTCOMES)})
        funnel["outcome_code"] = code.fillna(-1).to_numpy(dtype=np.int32)[order]
    for rating in spec.ratings:
        given = interactions[rating] if rating in interactions.columns else pd.Series(np.nan, index=interactions.index)
        funnel[rating] = pd.to_numeric(given, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)[order]
    return pd.DataFrame({
        LEAD_ID: interactions[LEAD_ID].take(order).array,
        TIMESTAMP: stamps[order],
        "channel": lookup[kind[order], inbound[order].astype(np.intp)] if len(kind) else np.zeros(0, dtype=np.int32),
        "inbound": inbound[order],
        "heat": np.where(inbound, heat[kind], 0.0)[order] if len(kind) else np.zeros(0),
        "touch": touch[kind[order]] if len(kind) else np.zeros(0, dtype=bool),
        "step": step[kind[order]] if len(kind) else np.zeros(0, dtype=np.int32),
    } | funnel)


def _positions(lead_ids: pd.Series, event_ids: pd.Series) -> np.ndarray:
    """For each event, the row of its lead in ``lead_ids`` (-1: not there), hashed in Arrow, not Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(event_ids.array, type=pa.string()), value_set=pa.array(lead_ids.array, type=pa.string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _by_lead(pos, n):
    """The events grouped by lead with a stable counting sort: lead ``i``'s events are ``order[start[i]:start[i + 1]]``,
    in the order they come."""
    start = np.zeros(n + 1, dtype=np.int64)
    for e in range(pos.shape[0]):
        start[pos[e] + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    fill = start[:-1].copy()
    order = np.empty(pos.shape[0], dtype=np.int64)
    for e in range(pos.shape[0]):
        order[fill[pos[e]]] = e
        fill[pos[e]] += 1
    return start, order


@numba.njit(cache=True, nogil=True, parallel=True)
def _behaviour(values, pos, age, decay, channel, inbound, heat, touch, step, n, n_channels, windows, rows_window,
               rows_last, rows_decayed, just_active_days, rows_steps, row_first, row_just_active, row_trend,
               row_steps_recent, thermometer):
    """Every behaviour column of ``values`` (columns, leads) in one pass over the events of each lead.

    The events are grouped by lead with a stable counting sort, so each lead's sums add its events in
    the order they come (what ``np.bincount`` does: the same floating-point result); all windows, the
    decay, days-since-last, the activation, trend, step and thermometer columns come from that one pass.
    ``rows_*``: the row of ``values`` of each column (-1: the model has no such column). Leads are
    computed in parallel chunks, each lead alone: the result does not depend on the number of threads.
    """
    start, order = _by_lead(pos, n)
    chunk = 4096  # leads per task: each lead is computed alone, so the threads change no sum
    for c0 in numba.prange((n + chunk - 1) // chunk):
        _behaviour_of(values, c0 * chunk, min(n, (c0 + 1) * chunk), start, order, age, decay, channel, inbound, heat,
                      touch, step, n_channels, windows, rows_window, rows_last, rows_decayed, just_active_days,
                      rows_steps, row_first, row_just_active, row_trend, row_steps_recent, thermometer)


@numba.njit(cache=True, nogil=True)
def _behaviour_of(values, lo, hi, start, order, age, decay, channel, inbound, heat, touch, step, n_channels, windows,
                  rows_window, rows_last, rows_decayed, just_active_days, rows_steps, row_first, row_just_active,
                  row_trend, row_steps_recent, thermometer):
    """The behaviour columns of leads ``lo``..``hi`` - 1 (see :func:`_behaviour`)."""
    width = n_channels + 2
    n_windows = windows.shape[0]
    n_steps = rows_steps.shape[0]
    counts = np.zeros((width, n_windows))
    last = np.empty(width)
    decayed = np.zeros(width)
    step_last = np.empty(max(n_steps, 1))
    for i in range(lo, hi):
        counts[:] = 0.0
        last[:] = np.inf
        decayed[:] = 0.0
        step_last[:] = np.inf
        first = -np.inf
        recent = 0.0
        prior = 0.0
        steps_recent = 0.0
        heat_sum = 0.0
        for q in range(start[i], start[i + 1]):
            e = order[q]
            a = age[e]
            s = step[e]
            if 0 <= s < n_steps and a < step_last[s]:
                step_last[s] = a
            if s != NOT_A_STEP and a < STEPS_RECENT_DAYS:
                steps_recent += 1.0
            if not touch[e]:
                continue
            d = decay[e]
            heat_sum += heat[e] * d
            c = channel[e]
            g = n_channels if inbound[e] else n_channels + 1
            for w in range(n_windows):
                if a < windows[w]:
                    counts[g, w] += 1.0
                    if c >= 0:
                        counts[c, w] += 1.0
            if a < last[g]:
                last[g] = a
            decayed[g] += d
            if c >= 0:
                if a < last[c]:
                    last[c] = a
                decayed[c] += d
            if inbound[e]:
                if a > first:
                    first = a
                if a < TREND_RECENT_DAYS:
                    recent += 1.0
                elif a < TREND_RECENT_DAYS + TREND_PRIOR_DAYS:
                    prior += 1.0
        for g in range(width):
            for w in range(n_windows):
                values[rows_window[g, w], i] = counts[g, w]
            values[rows_last[g], i] = np.nan if np.isinf(last[g]) else last[g]
            values[rows_decayed[g], i] = decayed[g]
        if np.isinf(first):
            first = np.nan
        values[row_first, i] = first
        values[row_just_active, i] = 1.0 if first < just_active_days else 0.0
        values[row_trend, i] = (np.log((recent + 0.5) / TREND_RECENT_DAYS)
                                - np.log((prior + 0.5) / TREND_PRIOR_DAYS))
        for j in range(n_steps):
            values[rows_steps[j, 0], i] = 0.0 if np.isinf(step_last[j]) else 1.0
            values[rows_steps[j, 1], i] = np.nan if np.isinf(step_last[j]) else step_last[j]
        if row_steps_recent >= 0:
            values[row_steps_recent, i] = steps_recent
        thermometer[i] = heat_sum


@numba.njit(cache=True, nogil=True)
def _funnel(values, pos, age, stage, outcome, inbound, n, rows_stage, rows_task, reached, missed, lead_rating,
            task_rating, rows_rating):
    """The funnel's columns of ``values`` (columns, leads) from each lead's stage rows and task outcomes.

    Stage rows are walked oldest first (ties in the order given): the current stage is the last one, its
    days the age of the move into it; a move forward by more than one stage skips the stages between, a
    move to an earlier stage is a move back; a row naming the current stage again is no move. Task outcomes:
    outbound attempts in the last ``REACH_DAYS`` days (reached or missed) and the latest outcome's code.
    Ratings (NaN: none on the row): the latest lead rating, the mean task rating of the last ``REACH_DAYS`` days.
    ``rows_*``: the row of ``values`` of each column (-1: the model has no such column).
    """
    start, order = _by_lead(pos, n)
    ages = np.empty(pos.shape[0])
    ranks = np.empty(pos.shape[0], dtype=np.int32)
    for i in range(n):
        m = 0
        attempts = 0.0
        hits = 0.0
        last_age = np.inf
        last_code = -1
        rated_age, rated = np.inf, np.nan
        task_sum, task_n = 0.0, 0.0
        for q in range(start[i], start[i + 1]):
            e = order[q]
            if not np.isnan(lead_rating[e]) and age[e] < rated_age:
                rated_age, rated = age[e], lead_rating[e]
            if not np.isnan(task_rating[e]) and age[e] < REACH_DAYS:
                task_sum += task_rating[e]
                task_n += 1.0
            if stage[e] >= 0:  # insertion by age, oldest first; equal ages keep their order
                j = m
                while j > 0 and ages[j - 1] < age[e]:
                    ages[j], ranks[j] = ages[j - 1], ranks[j - 1]
                    j -= 1
                ages[j], ranks[j] = age[e], stage[e]
                m += 1
            c = outcome[e]
            if c >= 0:
                if age[e] < last_age:
                    last_age, last_code = age[e], c
                if not inbound[e] and age[e] < REACH_DAYS:
                    if reached[c]:
                        attempts += 1.0
                        hits += 1.0
                    elif missed[c]:
                        attempts += 1.0
        if rows_stage[0] >= 0:
            current, entered, skipped, back = -1, np.nan, 0.0, 0.0
            for j in range(m):
                r = ranks[j]
                if current < 0:
                    current, entered = r, ages[j]
                elif r != current:
                    if r > current + 1:
                        skipped += r - current - 1
                    elif r < current:
                        back += 1.0
                    current, entered = r, ages[j]
            values[rows_stage[0], i] = np.nan if current < 0 else current + 1.0
            values[rows_stage[1], i] = entered
            values[rows_stage[2], i] = skipped
            values[rows_stage[3], i] = back
        if rows_task[0] >= 0:
            values[rows_task[0], i] = attempts
            values[rows_task[1], i] = hits / attempts if attempts > 0 else np.nan
            values[rows_task[2], i] = np.nan if last_code < 0 else float(last_code)
        if rows_rating[0] >= 0:
            values[rows_rating[0], i] = rated
        if rows_rating[1] >= 0:
            values[rows_rating[1], i] = task_sum / task_n if task_n > 0 else np.nan


def features_as_of(
    leads: pd.DataFrame,
    events: pd.DataFrame,
    as_of: pd.Timestamp,
    spec: FeatureSpec,
) -> pd.DataFrame:
    """Features of ``leads`` at ``as_of`` from ``events`` (see :func:`prepare_events`) before it.

    Returns one row per lead, aligned with ``leads``: lead_id, as_of, the model's feature columns and
    the rule-based ``thermometer_score`` baseline (not a model feature).
    """
    as_of = pd.Timestamp(as_of)
    if spec.mode != "events":
        return attribute_features(leads, as_of, spec)
    n = len(leads)
    stamps = events[TIMESTAMP].to_numpy()
    if len(stamps) < 2 or (stamps[1:] >= stamps[:-1]).all():  # in time order: the past is a prefix
        end = np.searchsorted(stamps, as_of.to_datetime64(), side="left")
        past = slice(0, end)
    else:
        past = np.flatnonzero(stamps < as_of.to_datetime64())
    pos = _positions(leads[LEAD_ID], events[LEAD_ID].iloc[past])
    keep = pos >= 0
    pos = pos[keep]
    age = (as_of.to_datetime64() - stamps[past][keep]) / DAY
    decay = np.exp(-np.log(2) * age / spec.half_life_days)

    def column(name: str, default):
        return events[name].to_numpy()[past][keep] if name in events.columns else np.full(len(pos), default)

    names = spec.behaviour_columns
    values = np.empty((len(names), n))
    row = {name: i for i, name in enumerate(names)}
    prefixes = [c.name for c in spec.channels] + ["inbound", "outbound"]
    steps = list(spec.step_columns) if spec.step_features else []  # a model without step features has no step codes
    thermometer = np.empty(n)
    _behaviour(
        values, pos, age, decay, column("channel", -1).astype(np.int32), column("inbound", False).astype(np.bool_),
        column("heat", 0.0).astype(np.float64), column("touch", True).astype(np.bool_),
        column("step", NOT_A_STEP).astype(np.int32),
        n, len(spec.channels), np.array(spec.windows_days, dtype=np.float64),
        np.array([[row[f"{p}_{w}d"] for w in spec.windows_days] for p in prefixes], dtype=np.int64).reshape(
            len(prefixes), len(spec.windows_days)),
        np.array([row[f"{p}_days_since_last"] for p in prefixes], dtype=np.int64),
        np.array([row[f"{p}_decayed"] for p in prefixes], dtype=np.int64), float(spec.just_active_days),
        np.array([[row[f"{s}_reached"], row[f"{s}_days_since"]] for s in steps], dtype=np.int64).reshape(len(steps), 2),
        row["days_since_first_inbound"], row["just_turned_active"], row["inbound_trend"],
        row.get(f"steps_{STEPS_RECENT_DAYS}d", -1), thermometer)
    values[row["lead_age_days"]] = (as_of.to_datetime64() - leads[CREATED_AT].to_numpy()) / DAY
    if spec.funnel_features:
        flags = [np.array([t in kinds for t in TASK_OUTCOMES], dtype=np.bool_) for kinds in (REACHED, MISSED)]
        _funnel(values, pos, age, column("stage_rank", -1).astype(np.int32), column("outcome_code", -1).astype(np.int32),
                column("inbound", False).astype(np.bool_), n,
                np.array([row.get(c, -1) for c in STAGE_FEATURES], dtype=np.int64),
                np.array([row.get(c, -1) for c in TASK_FEATURES], dtype=np.int64), *flags,
                column(LEAD_RATING, np.nan).astype(np.float64), column(TASK_RATING, np.nan).astype(np.float64),
                np.array([row.get(c, -1) for c in RATING_FEATURES.values()], dtype=np.int64))
    if spec.lifecycle:
        values[row["days_since_reopened"]] = _days_since_reopened(leads, as_of)

    behaviour = pd.DataFrame(values.T, columns=names, index=leads.index, copy=False)
    out = pd.concat([
        pd.DataFrame({LEAD_ID: leads[LEAD_ID].array, "as_of": as_of}, index=leads.index),
        behaviour,
        _attributes(leads, spec),
    ], axis=1)
    if spec.referral_columns:
        out = pd.concat([out, _referral_values(leads)], axis=1)
    out["thermometer_score"] = thermometer
    return out.reset_index(drop=True)


def _referral_values(leads: pd.DataFrame) -> pd.DataFrame:
    """The referral features the leads come with as of this very date (:func:`leadtemp.core.referrals.with_referrals`,
    from the whole table: a lead's referrer and referrals are other rows)."""
    if missing := [c for c in REFERRAL_FEATURES if c not in leads.columns]:
        raise ValueError(f"this model has referral features: pass leads with {missing} as of the date "
                         "(leadtemp.core.referrals.with_referrals)")
    return leads[list(REFERRAL_FEATURES)].astype(float)


def _days_since_reopened(leads: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """Days from the end of each lead's latest lost spell to ``as_of`` (NaN: never reopened); the leads come with
    ``reopened_at`` as of this very date (:func:`leadtemp.core.snapshots.scorable_leads`)."""
    if REOPENED_AT not in leads.columns:
        raise ValueError("this model has days_since_reopened: pass leads with their reopened_at as of the date "
                         "(leadtemp.core.snapshots.scorable_leads)")
    return (as_of.to_datetime64() - leads[REOPENED_AT].to_numpy(dtype="datetime64[ns]")) / DAY


def attribute_features(leads: pd.DataFrame, as_of: pd.Timestamp | None, spec: FeatureSpec) -> pd.DataFrame:
    """Features of a one-row-per-lead table: its attribute columns only, one row per lead."""
    head = pd.DataFrame({LEAD_ID: leads[LEAD_ID].to_numpy(), "as_of": pd.Timestamp(as_of) if as_of is not None else pd.NaT},
                        index=leads.index)
    return pd.concat([head, _attributes(leads, spec)], axis=1).reset_index(drop=True)


def build_training_frame(
    snapshots: pd.DataFrame,
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    spec: FeatureSpec,
) -> pd.DataFrame:
    """Features for every snapshot (lead_id, cutoff, label), each as of its own cutoff.

    Further columns of ``snapshots`` (e.g. ``snapshot``: periodic or creation) are carried along.
    A cutoff with few leads (creation snapshots: the leads created the day before) reads only those
    leads' events: the same rows in the same order, so the same features, without a pass over the
    whole log per date.
    """
    events = prepare_events(interactions, spec)
    by_id = leads.set_index(LEAD_ID, drop=False)
    extra = [c for c in snapshots.columns if c not in (LEAD_ID, "cutoff", "label", REOPENED_AT)]
    # Attributes do not depend on the date: built once for all rows, behaviour per date.
    per_date = replace(spec, categorical={}, numeric=(), referrals=False) if spec.mode == "events" else spec
    snapshots = snapshots.sort_values("cutoff", kind="stable")
    if spec.lifecycle:  # each row's reopening as of its own cutoff
        spells = loss_spells(leads, interactions, spec.loss_rules)
        state = lost_state(spells, snapshots[LEAD_ID].to_numpy(), snapshots["cutoff"].to_numpy())
        snapshots = snapshots.assign(**{REOPENED_AT: state[REOPENED_AT].to_numpy()})
    rows_of = None
    parts = []
    for cutoff, snap in snapshots.groupby("cutoff", sort=True):
        subset = events
        if len(snap) * 20 < len(by_id) and len(events):
            if rows_of is None:
                rows_of = events.groupby(LEAD_ID, sort=False).indices
            found = [rows_of[i] for i in snap[LEAD_ID].to_numpy() if i in rows_of]
            subset = events.iloc[np.sort(np.concatenate(found))] if found else events.iloc[:0]
        these = by_id.loc[snap[LEAD_ID]].reset_index(drop=True)
        if spec.lifecycle:
            these[REOPENED_AT] = snap[REOPENED_AT].to_numpy()
        frame = features_as_of(these, subset, cutoff, per_date)
        frame["label"] = snap["label"].to_numpy()
        for column in extra:
            frame[column] = snap[column].to_numpy()
        parts.append(frame)
    out = pd.concat(parts, ignore_index=True).rename(columns={"as_of": "cutoff"})
    if per_date is spec:
        return out
    rows = by_id.loc[snapshots[LEAD_ID]].reset_index(drop=True)
    attributes = _attributes(rows, spec)
    if spec.referral_columns:  # each row as of its own cutoff, from the whole table
        attributes = pd.concat([attributes, referral_features(referral_ledger(leads), rows[LEAD_ID].to_numpy(),
                                                              rows[REFERRED_BY].to_numpy(), snapshots["cutoff"].to_numpy())],
                               axis=1)
    at = out.columns.get_loc("thermometer_score")
    return pd.concat([out.iloc[:, :at], attributes, out.iloc[:, at:]], axis=1)


def feature_matrix(features: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """The model's columns as float64, categoricals as their codes (missing = NaN), as LightGBM sees them."""
    columns = []
    for name in spec.columns:
        column = features[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy(dtype=np.float64)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(columns) if columns else np.zeros((len(features), 0))

