"""Typed, frozen settings read from params.yaml. Nothing happens on import."""

from __future__ import annotations

import dataclasses
import datetime
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leadtemp.core.errors import ConfigError

AUTO = "auto"  # a setting leadtemp derives from the data (core/cadence.py)


@dataclass(frozen=True)
class LeadColumns:
    """Your column names for leadtemp's roles in the leads table."""

    lead_id: str | None = "lead_id"            # None: the data row number (1, 2, ...) is the id
    created_at: str | None = "created_at"      # None: no time at all (splits become stratified random)
    converted_at: str | None = "converted_at"  # conversion time, empty while not converted
    label: str | None = None                   # a final 0/1 outcome instead of a conversion time
    lost_at: str | None = None                 # when the lead was closed as lost/disqualified; empty while open
    referred_by: str | None = None             # the id of the lead or customer who referred it; empty: nobody


@dataclass(frozen=True)
class InteractionColumns:
    lead_id: str = "lead_id"
    timestamp: str = "timestamp"
    type: str = "type"
    direction: str = "direction"
    value: str = "value"
    # The funnel (docs/own-data.md#funnel-stages-and-task-outcomes): the column holding the stage name of the
    # rows of a stage type (None: its value column), and a column of task outcomes (reached, no_answer, ...).
    stage: str | None = None
    outcome: str | None = None
    # The rep's ratings (numbers, any scale, higher is better): of the lead, and of the task the row records.
    lead_rating: str | None = None
    task_rating: str | None = None


@dataclass(frozen=True)
class RowOrderTime:
    """Give each row a month from a month-name column of a table sorted by time (no year column)."""

    month_column: str
    start: str  # year and month of the first row, "YYYY-MM"; the year advances when the month drops


@dataclass(frozen=True)
class Data:
    leads: str = "data/sim/leads.parquet"
    interactions: str | None = "data/sim/interactions.parquet"
    csv_separator: str = ","
    columns: LeadColumns = field(default_factory=LeadColumns)
    interaction_columns: InteractionColumns = field(default_factory=InteractionColumns)
    missing_values: tuple[str, ...] = ()
    # strftime format of every text timestamp column, or {column: format} for some; None (or not listed): inferred
    date_format: str | dict[str, str] | None = None
    earliest: str = "1970-01-01"     # timestamps before this are bad values ...
    latest: str = "2100-01-01"       # ... and so are those at or after this one
    created_from_row_order: RowOrderTime | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """The data shape: ``events`` (conversion times, + interactions: snapshots at cutoffs) or ``labels``
        (a label table: one final outcome per lead, with or without time)."""
        return "labels" if self.columns.label else "events"

    @property
    def timed(self) -> bool:
        return self.columns.created_at is not None or self.created_from_row_order is not None


@dataclass(frozen=True)
class Snapshots:
    # "auto": derived from the history (core/cadence.py): the horizon from the days leads take to convert,
    # the frequency from how many labelled cutoffs the history holds. Printed and logged with each run.
    horizon_days: int | str = AUTO
    frequency: str = AUTO
    observed_until: str | None = None
    # Besides the periodic cutoffs, one snapshot per lead at the first midnight after its creation.
    at_creation: bool = True
    # Weight each lead's training snapshots 1/n so every lead counts about once in the booster's loss.
    weight_per_lead: bool = False


@dataclass(frozen=True)
class When:
    # p_<h>d columns: the chance to convert within each of these many days (ascending); expected_days from them.
    # Empty: no such columns. Horizons the history cannot label are left out with a note.
    horizons_days: tuple[int, ...] = (7, 30, 90)


@dataclass(frozen=True)
class Splits:
    # rolling: the newest cutoffs are the test; before it, rolling-origin folds (each fold's booster fitted on
    # labels observed before its validation block) choose the rounds and the model family, the calibrator is
    # fitted on the newest fold, the final booster on every label observed before the test.
    # chain: one fixed train < validation < calibration < test chain with two embargoes.
    method: str = "rolling"
    test_cutoffs: int | str = AUTO      # auto: 3 monthly or 4 weekly cutoffs (down to 2 on a short history)
    folds: int = 3                      # rolling: validation blocks (fewer when the history is short)
    fold_cutoffs: int | str = AUTO      # rolling: cutoffs per validation block; auto: 2 monthly or 4 weekly (down to 1)
    calibration_cutoffs: int = 3        # chain only
    validation_cutoffs: int = 2         # chain only
    # Tables with a label column instead of conversion times: shares of the labelled rows.
    test_fraction: float = 0.2
    calibration_fraction: float = 0.1
    validation_fraction: float = 0.1


# The sales coach's ordering of a lead's own actions, hottest first (docs/domain.md section 1):
# the thermometer baseline weighs each inbound action by its place here; types not listed weigh 0.
COACH_THERMOMETER = {
    "pos_question": 11.0, "phone_call": 10.0, "sms": 9.0, "email": 8.0, "private_message": 7.0,
    "friend_request": 6.0, "newsletter_reply": 5.0, "post_comment": 4.0, "post_share": 3.0,
    "page_like": 2.0, "post_like": 1.0,
}


@dataclass(frozen=True)
class Features:
    windows_days: tuple[int, ...] = (7, 30, 90)
    half_life_days: float = 14.0
    just_active_days: int = 7
    max_channels: int = 40
    thermometer: dict[str, float] = field(default_factory=lambda: dict(COACH_THERMOMETER))


EVENT_KINDS = ("touch", "step", "outcome", "stage")
OUTCOME_ENDS = ("lost", "won")


@dataclass(frozen=True)
class EventType:
    """One interaction type of the user's own vocabulary (params.yaml section ``events``, keyed by the type).

    ``kind``: ``touch`` a contact between the team and the lead (it has a direction); ``step`` a process
    or system status the lead reached (never worded as a contact); ``outcome`` terminal: ``ends`` says
    whether it closes the lead as ``lost`` (the first one sets the lead's lost time) or ``won``.
    ``label``: the words used in reasons; None = the raw type name, in quotes. ``thermometer``: the
    type's place on the thermometer (the weight of an inbound touch, hottest highest); None = not on it.
    ``reopens``: this type, after a loss, makes the lead open again.
    ``stage``: each row is a move in the sales funnel, the stage named in the row (its value, or the column
    ``data.interaction_columns.stage``); ``order`` lists the open stages first to last, ``terminal`` the stages
    that end the lead (stage: lost | won), which are outcomes: never a feature.
    """

    label: str | None = field(default=None, metadata={"text": True})  # words, never a number: no coercion
    kind: str = "touch"
    thermometer: float | None = None
    ends: str | None = None
    reopens: bool = False
    order: tuple[str, ...] = ()
    terminal: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BoosterSettings:
    """The LightGBM booster (params.yaml section `model`)."""

    num_leaves: int = 15
    learning_rate: float = 0.05
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    early_stopping_metric: str = "auc"
    refit_with_validation: bool = True
    # auto: the training rows / 1000, between 20 and 200 (a rare but telling status needs small leaves)
    min_data_in_leaf: int | str = AUTO
    # rolling splits: trees (num_leaves) or additive (one split per tree: a boosted additive model, steadier
    # when periods drift); auto: the one with the better within-cutoff ROC-AUC on the folds
    family: str = AUTO
    feature_fraction: float = 0.8
    lambda_l2: float = 10.0
    seed: int = 42
    num_threads: int = 2


@dataclass(frozen=True)
class Calibration:
    method: str = "isotonic"


@dataclass(frozen=True)
class Buckets:
    method: str = "share"
    hot_share: float = 0.10
    warm_share: float = 0.30
    hot_probability: float = 0.50
    warm_probability: float = 0.15
    steady_within: float = 0.02


CHAMPION, PREVIOUS = "champion", "previous"  # registry aliases: the model scoring follows, and the one it replaced


@dataclass(frozen=True)
class Tracking:
    experiment: str = "leadtemp"
    registered_model: str = "leadtemp"
    export_dir: str = "models"


@dataclass(frozen=True)
class Checks:
    min_leads: int = 500
    min_conversions: int = 50
    leakage_auc: float = 0.9
    allow_leaky: tuple[str, ...] = ()


@dataclass(frozen=True)
class Simulate:
    leads: int = 20000
    seed: int = 7
    start: str = "2023-01-01"
    months: int = 30
    shift_at: str | None = None
    lost: bool = False   # lost leads recorded (disqualified, closed silently) and recycled: docs/simulator.md
    referrals: bool = False  # referral leads name their referrer (a referred_by column): docs/simulator.md
    stages: bool = False  # funnel stage changes and call outcomes from the hidden story: docs/simulator.md


@dataclass(frozen=True)
class Retrain:
    max_auc_drop: float = 0.01
    max_champion_auc_drop: float = 0.1
    min_auc: float = 0.6
    beat_thermometer: bool = True
    max_ece: float = 0.03
    bucket_order: bool = True
    min_conversions: int = 30
    max_label_rate_ratio: float = 3.0
    bootstrap: int = 1000


@dataclass(frozen=True)
class Drift:
    psi_warn: float = 0.1
    psi_alert: float = 0.25


@dataclass(frozen=True)
class Calls:
    reps: int | None = None          # leadtemp calls: reps calling that day (--reps overrides)
    per_rep: int | None = None       # calls each rep makes that day (--per-rep overrides)
    cooldown_days: float = 7.0       # leads we contacted within this many days are left for another day


@dataclass(frozen=True)
class Params:
    data: Data = field(default_factory=Data)
    snapshots: Snapshots = field(default_factory=Snapshots)
    splits: Splits = field(default_factory=Splits)
    when: When = field(default_factory=When)
    features: Features = field(default_factory=Features)
    model: BoosterSettings = field(default_factory=BoosterSettings)
    calibration: Calibration = field(default_factory=Calibration)
    buckets: Buckets = field(default_factory=Buckets)
    checks: Checks = field(default_factory=Checks)
    mlflow: Tracking = field(default_factory=Tracking)
    simulate: Simulate = field(default_factory=Simulate)
    retrain: Retrain = field(default_factory=Retrain)
    drift: Drift = field(default_factory=Drift)
    calls: Calls = field(default_factory=Calls)
    events: dict[str, EventType] = field(default_factory=dict)

    def lost_types(self) -> tuple[str, ...]:
        """Interaction types that close a lead as lost (``kind: outcome, ends: lost``)."""
        return tuple(t for t, e in self.events.items() if e.kind == "outcome" and e.ends == "lost")

    def stage_names(self) -> dict[str, tuple[str, ...]]:
        """Each stage type (``kind: stage``) and every stage its rows may name: the order, then the terminal ones."""
        return {t: (*e.order, *e.terminal) for t, e in self.events.items() if e.kind == "stage"}

    def reopening_types(self) -> tuple[str, ...]:
        return tuple(t for t, e in self.events.items() if e.reopens)

    def replace(self, **sections: Any) -> Params:
        """A copy with some sections' fields replaced: ``replace(data={"leads": "x.csv"})``."""
        updated = {
            name: dataclasses.replace(getattr(self, name), **changes)
            for name, changes in sections.items()
        }
        return dataclasses.replace(self, **updated).validate()

    def flat(self) -> dict[str, Any]:
        """Flattened ``section.key`` dict for MLflow params (lists and dicts as text)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if dataclasses.is_dataclass(value):
                    walk(f"{prefix}{f.name}.", value)
                else:
                    out[f"{prefix}{f.name}"] = value if isinstance(value, (int, float, str)) or value is None else str(value)

        walk("", self)
        return out

    def validate(self) -> Params:
        problems = []
        sn, sp, m = self.snapshots, self.splits, self.model
        for where, value in (("snapshots.horizon_days", sn.horizon_days), ("splits.test_cutoffs", sp.test_cutoffs),
                             ("splits.fold_cutoffs", sp.fold_cutoffs), ("model.min_data_in_leaf", m.min_data_in_leaf)):
            if value != AUTO and not (isinstance(value, int) and value > 0):
                problems.append(f"{where} must be a whole number > 0 or auto, not {value!r}")
        if sn.frequency != AUTO:
            import pandas as pd

            try:
                pd.tseries.frequencies.to_offset(sn.frequency)
            except ValueError:
                problems.append(f"snapshots.frequency: {sn.frequency!r} is not a pandas offset alias (MS, W-MON, ...) or auto")
        hs = self.when.horizons_days
        if any(not isinstance(h, int) or h <= 0 for h in hs) or list(hs) != sorted(set(hs)):
            problems.append(f"when.horizons_days must be whole numbers of days > 0, ascending, each once, not {list(hs)}")
        if sp.method not in {"rolling", "chain"}:
            problems.append(f"splits.method must be rolling or chain, not {sp.method!r}")
        if sp.folds < 1:
            problems.append("splits.folds must be at least 1")
        if m.family not in {AUTO, "trees", "additive"}:
            problems.append(f"model.family must be trees, additive or auto, not {m.family!r}")
        if any(w <= 0 for w in self.features.windows_days) or not self.features.windows_days:
            problems.append("features.windows_days must be positive numbers of days")
        if self.features.half_life_days <= 0:
            problems.append("features.half_life_days must be > 0")
        if self.model.early_stopping_metric not in {"auc", "binary_logloss", "average_precision"}:
            problems.append("model.early_stopping_metric must be auc, binary_logloss or average_precision")
        if self.calibration.method not in {"isotonic", "sigmoid"}:
            problems.append(f"calibration.method must be isotonic or sigmoid, not {self.calibration.method!r}")
        b = self.buckets
        if b.method not in {"share", "probability"}:
            problems.append(f"buckets.method must be share or probability, not {b.method!r}")
        if not (0 < b.hot_share and 0 <= b.warm_share and b.hot_share + b.warm_share < 1):
            problems.append("buckets: need 0 < hot_share and hot_share + warm_share < 1")
        if not (0 < b.warm_probability <= b.hot_probability < 1):
            problems.append("buckets: need 0 < warm_probability <= hot_probability < 1")
        c = self.calls
        if any(v is not None and (not isinstance(v, int) or v < 1) for v in (c.reps, c.per_rep)):
            problems.append(f"calls: reps and per_rep must be whole numbers of at least 1 (or left empty), not "
                            f"{c.reps!r} and {c.per_rep!r}")
        if not c.cooldown_days >= 0:
            problems.append(f"calls.cooldown_days must be 0 or more days, not {c.cooldown_days!r}")
        if not (0 <= b.steady_within < 1):
            problems.append(f"buckets.steady_within must be a probability change in [0, 1), not {b.steady_within!r}")
        s = self.splits
        if min(s.calibration_cutoffs, s.validation_cutoffs) < 1:
            problems.append("splits: every slice needs at least 1 cutoff")
        fractions = (s.test_fraction, s.calibration_fraction, s.validation_fraction)
        if min(fractions) <= 0 or sum(fractions) >= 0.9:
            problems.append("splits: the fractions must be > 0 and leave at least 10% of the rows for training")
        d = self.data
        c = d.columns
        roles = [*d.categorical, *d.numeric, *d.excluded]
        if dupes := sorted({x for x in roles if roles.count(x) > 1}):
            problems.append(f"data: columns listed in more than one role: {dupes}")
        special = {k: v for k, v in vars(c).items() if v is not None}
        if clash := sorted(set(special.values()) & set(roles)):
            problems.append(f"data: {clash} are data.columns roles and cannot also be attributes")
        if d.created_from_row_order is not None:
            if c.created_at is not None:
                problems.append("data: created_from_row_order derives the creation time; set data.columns.created_at: null")
            import pandas as pd

            try:
                pd.Period(d.created_from_row_order.start, freq="M")
            except ValueError:
                problems.append(f"data.created_from_row_order.start: {d.created_from_row_order.start!r} is not YYYY-MM")
        problems += _date_problems(d)
        if d.mode == "events" and not d.timed:
            problems.append("data: without a label column leadtemp needs data.columns.created_at (and converted_at)")
        if d.mode == "labels" and d.interactions is not None:
            problems.append(
                "data: interactions need conversion times (data.columns.converted_at), not a label: with a final label "
                "only, no one knows which interactions came before the outcome; set data.interactions: null")
        k = self.checks
        if k.min_leads < 1 or k.min_conversions < 1 or not 0.5 < k.leakage_auc <= 1:
            problems.append("checks: need min_leads >= 1, min_conversions >= 1 and 0.5 < leakage_auc <= 1")
        r = self.retrain
        if not (0 <= r.max_auc_drop < 0.5 and 0 < r.max_champion_auc_drop < 0.5 and 0.5 <= r.min_auc < 1
                and 0 < r.max_ece < 1 and r.min_conversions >= 1 and r.max_label_rate_ratio > 1 and r.bootstrap >= 0):
            problems.append("retrain: need 0 <= max_auc_drop < 0.5, 0 < max_champion_auc_drop < 0.5, 0.5 <= min_auc < 1, "
                            "0 < max_ece < 1, min_conversions >= 1, max_label_rate_ratio > 1 and bootstrap >= 0")
        for name, e in self.events.items():
            if e.kind not in EVENT_KINDS:
                problems.append(f"events.{name}.kind: {e.kind!r} is not one of {list(EVENT_KINDS)}")
            if (e.kind == "outcome") != (e.ends is not None) or (e.ends is not None and e.ends not in OUTCOME_ENDS):
                problems.append(f"events.{name}: an outcome needs ends: lost or won, and only outcomes have ends")
        problems += _lost_problems(self)
        problems += _referral_problems(self)
        problems += _stage_problems(self)
        problems += _vocabulary_problems(self)
        if not 0 < self.drift.psi_warn <= self.drift.psi_alert:
            problems.append("drift: need 0 < psi_warn <= psi_alert")
        if problems:
            raise ConfigError("; ".join(problems))
        return self


def _lost_problems(p: Params) -> list[str]:
    """Lost leads (issue 18): ``lost_at`` is a column of its own, and a type cannot both close and reopen a lead."""
    problems = []
    c = p.data.columns
    if c.lost_at is not None and c.lost_at in {c.lead_id, c.created_at, c.converted_at, c.label}:
        problems.append(f"data.columns.lost_at: {c.lost_at!r} is already another role's column")
    if both := sorted(set(p.lost_types()) & set(p.reopening_types())):
        problems.append(f"events: {both} close a lead as lost (outcome, ends: lost) and reopen it (reopens: true); "
                        "choose one")
    return problems


def _referral_problems(p: Params) -> list[str]:
    """Referrals (DOMAIN section 4): ``referred_by`` is an id column of its own, read with conversion times."""
    c = p.data.columns
    if c.referred_by is None:
        return []
    if c.referred_by in {c.lead_id, c.created_at, c.converted_at, c.label, c.lost_at}:
        return [f"data.columns.referred_by: {c.referred_by!r} is already another role's column"]
    # the columns and reason groups of core/referrals.py and core/reasons.py: an attribute of one of these names would
    # be two features of one name
    if taken := sorted({"referred", "referrer", "referrer_is_lead", "referrer_converted", "referrals_made",
                        "referrals_converted"} & {*p.data.categorical, *p.data.numeric}):
        return [f"data: {taken} are names of the referral features (data.columns.referred_by); rename those attributes"]
    if p.data.mode == "labels":
        return ["data.columns.referred_by needs conversion times (data.columns.converted_at), not a label: whether a "
                "referrer had bought by a date is what its features ask"]
    return []


def _stage_problems(p: Params) -> list[str]:
    """A stage type has an order of open stages, each named once; only stage types have an order or terminal
    stages; one stage type at most (one funnel). Terminal stages among the order are left to the leakage check."""
    problems = []
    stages = [t for t, e in p.events.items() if e.kind == "stage"]
    for name, e in p.events.items():
        if e.kind != "stage":
            if e.order or e.terminal:
                problems.append(f"events.{name}: only a stage type (kind: stage) has an order or terminal stages")
            continue
        if not e.order:
            problems.append(f"events.{name}.order: a stage type needs its stages listed first to last")
        names = [*e.order, *e.terminal]
        if dupes := sorted({x for x in e.order if e.order.count(x) > 1}):
            problems.append(f"events.{name}.order: {dupes} listed more than once")
        if empty := [x for x in names if not str(x).strip()]:
            problems.append(f"events.{name}: {len(empty)} empty stage name(s)")
        if bad := {k: v for k, v in e.terminal.items() if v not in OUTCOME_ENDS}:
            problems.append(f"events.{name}.terminal: {bad} must each end the lead as lost or won")
    if len(stages) > 1:
        problems.append(f"events: {stages} are all stage types; declare one funnel (one type with kind: stage)")
    if p.data.interaction_columns.stage is not None and not stages:
        problems.append("data.interaction_columns.stage is set but no events type has kind: stage")
    return problems


def _vocabulary_problems(p: Params) -> list[str]:
    """Labels are words, thermometer places are non-negative numbers and belong to touches only."""
    problems = []
    for name, e in p.events.items():
        if e.label is not None and not e.label.strip():
            problems.append(f"events.{name}.label: empty; leave it out to use the raw type name")
        if e.thermometer is not None:
            if not (math.isfinite(e.thermometer) and e.thermometer >= 0):
                problems.append(f"events.{name}.thermometer: {e.thermometer!r} is not a non-negative number")
            if e.kind != "touch":
                problems.append(f"events.{name}.thermometer: only a touch (a contact the lead makes) has a place on "
                                f"the thermometer, and {name!r} is a {e.kind}")
    if bad := sorted(t for t, w in p.features.thermometer.items() if not (math.isfinite(w) and w >= 0)):
        problems.append(f"features.thermometer: the weights of {bad} are not non-negative numbers")
    return problems


def _date_problems(d: Data) -> list[str]:
    """``data.date_format`` must read back what it writes; the window must be dates pandas holds, in order."""
    import pandas as pd

    problems = []
    formats = d.date_format if isinstance(d.date_format, dict) else {None: d.date_format}
    timestamps = sorted({c for c in (d.columns.created_at, d.columns.converted_at, d.columns.lost_at,
                                     d.interaction_columns.timestamp) if c is not None})
    for column, fmt in formats.items():
        where = "data.date_format" if column is None else f"data.date_format of {column!r}"
        if column is not None and column not in timestamps:
            problems.append(f"data.date_format: {column!r} is not a timestamp column; those are {timestamps} "
                            "(data.columns created_at, converted_at, lost_at and data.interaction_columns.timestamp)")
            continue
        if fmt is None:
            continue
        sample = pd.Timestamp("2024-11-23 13:45:56")
        try:
            back = pd.to_datetime(sample.strftime(fmt), format=fmt)
        except (ValueError, TypeError):
            back = None
        if back is None or "%" not in fmt:
            problems.append(f"{where}: {fmt!r} is not a strftime format leadtemp can read back "
                            "(e.g. \"%d/%m/%Y\" or \"%m/%d/%Y %H:%M\")")
    window = []
    for name in ("earliest", "latest"):
        try:
            when = pd.Timestamp(getattr(d, name))
        except (ValueError, TypeError):
            when = pd.NaT
        if pd.isna(when) or when.tz is not None or not pd.Timestamp("1678-01-01") <= when <= pd.Timestamp("2262-01-01"):
            problems.append(f"data.{name}: {getattr(d, name)!r} is not a date (YYYY-MM-DD) between 1678 and 2262")
        else:
            window.append(when)
    if len(window) == 2 and window[0] >= window[1]:
        problems.append(f"data: earliest ({d.earliest}) must be before latest ({d.latest})")
    return problems


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        if unknown := sorted(set(value) - names):
            raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(names)}")
        for f in dataclasses.fields(tp):
            if f.metadata.get("text") and f.name in value and not isinstance(value[f.name], (str, type(None))):
                raise ConfigError(f"{where}.{f.name}: expected text (in quotes if it looks like a number or "
                                  f"yes/no), got {value[f.name]!r}")
        return tp(**{k: _coerce(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # int | str: a number stays a number, "auto" is text
            try:
                return _coerce(option, value, where)
            except ConfigError:
                pass
        return _coerce(options[-1], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(item, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)):
        return str(value)
    if tp is str and isinstance(value, datetime.date):  # YAML reads an unquoted 1970-01-01 as a date
        return value.isoformat()
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def params_from_dict(raw: dict[str, Any] | None, where: str = "params") -> Params:
    return _coerce(Params, raw or {}, where).validate()


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last one).

    A type declared twice under ``events`` (say once as a step, once as a touch) must not quietly become
    whichever came last; the same holds for any section. Keys brought in by a YAML merge (``<<: *base``)
    may still be overridden, as YAML means them to be.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                    seen.setdefault(key, line)
                except TypeError:  # an unhashable key: the parent class says what is wrong
                    continue
                if first is not None:
                    raise _DuplicateKey(f"line {line}: {key!r} is given twice in the same "
                                        f"section (first on line {first}); YAML would silently keep only the last, "
                                        "so say it once")
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(ConfigError):
    pass


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check a params file; a missing or malformed file, or a key given twice, is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (pass --params FILE)")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return params_from_dict(raw, where=str(path))
    except ConfigError as exc:  # the checks across sections name the keys; say which file they are in
        if str(exc).startswith(str(path)):
            raise
        raise ConfigError(f"{path}: {exc}") from None
