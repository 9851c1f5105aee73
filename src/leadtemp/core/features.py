"""Point-in-time features: DataFrames in, DataFrames out, inputs never modified.

Every feature of a lead at ``as_of`` is computed from interactions strictly before ``as_of``.
A *channel* is an interaction (type, direction) pair, e.g. ``phone_call`` / ``inbound``; the
channels the model knows are fixed at training time and stored in the :class:`FeatureSpec`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from leadtemp.core.config import Features
from leadtemp.core.lifecycle import REOPENED_AT, LossRules, loss_spells, lost_state
from leadtemp.core.schema import CREATED_AT, DIRECTION, LEAD_ID, TIMESTAMP, TYPE

DAY = np.timedelta64(1, "D")
DIRECTION_SHORT = {"inbound": "in", "outbound": "out"}
LEGACY_MODES = {"outcomes": "labels"}  # scorer.json written before the data shapes had one name each
TREND_RECENT_DAYS, TREND_PRIOR_DAYS = 7, 30


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

    @property
    def behaviour_columns(self) -> list[str]:
        if self.mode != "events":
            return []
        cols = []
        for prefix in [c.name for c in self.channels] + ["inbound", "outbound"]:
            cols += [f"{prefix}_{w}d" for w in self.windows_days]
            cols += [f"{prefix}_days_since_last", f"{prefix}_decayed"]
        cols += ["days_since_first_inbound", "just_turned_active", "inbound_trend", "lead_age_days"]
        return cols + (["days_since_reopened"] if self.lifecycle else [])

    @property
    def columns(self) -> list[str]:
        """Model feature columns, in the booster's order."""
        return self.behaviour_columns + list(self.categorical) + list(self.numeric)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["channels"] = [asdict(c) for c in self.channels]
        return out

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
        )


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
) -> FeatureSpec:
    """Learn channels and categories from rows strictly before ``before`` (the training data).

    ``before=None``: the caller passes only training rows (tables with a final label). ``lifecycle``:
    how leads are lost and reopened (:meth:`LossRules.of`); lost types never become channels.
    """
    past = interactions if before is None else interactions.loc[interactions[TIMESTAMP] < before]
    if lifecycle is not None and lifecycle.lost_types:
        past = past.loc[~past[TYPE].isin(lifecycle.lost_types)]
    counts = past.groupby([TYPE, DIRECTION]).size().sort_values(ascending=False, kind="stable")
    channels = tuple(Channel(t, d) for t, d in counts.index[: settings.max_channels]) if mode == "events" else ()
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
        thermometer=dict(settings.thermometer),
        mode=mode,
        timed=timed,
        lifecycle=lifecycle.to_dict() if lifecycle is not None and mode == "events" else {},
    )


def _attributes(leads: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    out = {}
    for col, cats in spec.categorical.items():
        # A category never seen in training is unknown to the model: missing, not an error
        # (pd.Categorical maps values outside the given categories to missing).
        out[col] = pd.Categorical(leads[col].astype("string"), categories=list(cats))
    for col in spec.numeric:
        out[col] = pd.to_numeric(leads[col], errors="coerce").astype(float).to_numpy()
    return pd.DataFrame(out, index=leads.index)


def prepare_events(interactions: pd.DataFrame, spec: FeatureSpec, sort: bool = True) -> pd.DataFrame:
    """Interactions with integer channel codes; unknown channels keep only direction.

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
    heat = np.array([spec.thermometer.get(t, 0.0) for t in kinds], dtype=float)
    stamps = interactions[TIMESTAMP].to_numpy()
    # Arrays are sorted one by one: cheaper than sorting a frame.
    order = np.argsort(stamps, kind="stable") if sort else np.arange(len(stamps))
    return pd.DataFrame({
        LEAD_ID: interactions[LEAD_ID].take(order).array,
        TIMESTAMP: stamps[order],
        "channel": lookup[kind[order], inbound[order].astype(np.intp)] if len(kind) else np.zeros(0, dtype=np.int32),
        "inbound": inbound[order],
        "heat": np.where(inbound, heat[kind], 0.0)[order] if len(kind) else np.zeros(0),
    })


def _positions(lead_ids: pd.Series, event_ids: pd.Series) -> np.ndarray:
    """For each event, the row of its lead in ``lead_ids`` (-1: not there), hashed in Arrow, not Python."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(event_ids.array, type=pa.string()), value_set=pa.array(lead_ids.array, type=pa.string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _group_count(index: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=size)[:size].astype(float)


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
    n, k = len(leads), len(spec.channels)
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
    channel = events["channel"].to_numpy()[past][keep]
    inbound = events["inbound"].to_numpy()[past][keep]
    decay = np.exp(-np.log(2) * age / spec.half_life_days)

    # Channel and direction groups share one code space: lead * (k + 2) + group.
    width = k + 2
    direction_group = np.where(inbound, k, k + 1)
    known = channel >= 0
    idx_all = np.concatenate([pos[known] * width + channel[known], pos * width + direction_group])
    age_all = np.concatenate([age[known], age])
    decay_all = np.concatenate([decay[known], decay])
    size = n * width

    # Every behaviour column is a row of one (columns, leads) array: the frame wraps it without copying.
    names = spec.behaviour_columns
    values = np.empty((len(names), n))
    row = {name: i for i, name in enumerate(names)}
    prefixes = [c.name for c in spec.channels] + ["inbound", "outbound"]

    def put(stat: str, block: np.ndarray) -> None:
        values[[row[f"{prefix}_{stat}"] for prefix in prefixes]] = block.reshape(n, width).T

    for w in spec.windows_days:
        put(f"{w}d", _group_count(idx_all[age_all < w], size))
    last = np.full(size, np.inf)
    np.minimum.at(last, idx_all, age_all)
    put("days_since_last", np.where(np.isinf(last), np.nan, last))
    put("decayed", _group_count(idx_all, size, decay_all))

    first = np.full(n, -np.inf)
    np.maximum.at(first, pos[inbound], age[inbound])
    first = np.where(np.isinf(first), np.nan, first)
    values[row["days_since_first_inbound"]] = first
    values[row["just_turned_active"]] = first < spec.just_active_days
    recent = _group_count(pos[inbound & (age < TREND_RECENT_DAYS)], n)
    prior = _group_count(pos[inbound & (age >= TREND_RECENT_DAYS) & (age < TREND_RECENT_DAYS + TREND_PRIOR_DAYS)], n)
    values[row["inbound_trend"]] = np.log((recent + 0.5) / TREND_RECENT_DAYS) - np.log((prior + 0.5) / TREND_PRIOR_DAYS)
    values[row["lead_age_days"]] = (as_of.to_datetime64() - leads[CREATED_AT].to_numpy()) / DAY
    if spec.lifecycle:
        values[row["days_since_reopened"]] = _days_since_reopened(leads, as_of)

    behaviour = pd.DataFrame(values.T, columns=names, index=leads.index, copy=False)
    out = pd.concat([
        pd.DataFrame({LEAD_ID: leads[LEAD_ID].array, "as_of": as_of}, index=leads.index),
        behaviour,
        _attributes(leads, spec),
    ], axis=1)
    heat = events["heat"].to_numpy()[past][keep]
    out["thermometer_score"] = _group_count(pos, n, heat * decay)
    return out.reset_index(drop=True)


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
    per_date = replace(spec, categorical={}, numeric=()) if spec.mode == "events" else spec
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
    attributes = _attributes(by_id.loc[snapshots[LEAD_ID]].reset_index(drop=True), spec)
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

