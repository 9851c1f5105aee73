"""Score one partition of a batch run: rows checked one by one, every lead scored or rejected with its reason.

The local engine (:mod:`leadtemp.workflows.score`) and the Spark engine (:mod:`leadtemp.adapters.spark`)
both turn source batches into canonical rows with :func:`canonical_leads` / :func:`canonical_events`
and score each partition with :func:`score_partition`, so both give the same rows.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadtemp.core.config import Params
from leadtemp.core.errors import ConfigError
from leadtemp.core.lifecycle import LOST_SINCE
from leadtemp.core.ports import TableSource
from leadtemp.core.schema import (
    CONVERTED_AT,
    CREATED_AT,
    DIRECTION,
    LABEL,
    LEAD_ID,
    LEAD_RATING,
    LOST_AT,
    OUTCOME,
    REFERRED_BY,
    STAGE,
    TASK_RATING,
    TIMESTAMP,
    TYPE,
    DateRules,
    RowProblems,
    is_among,
    validate_interactions,
    validate_leads,
)
from leadtemp.modelling.scorer import CHANGE_COLUMNS, LeadScorer

REJECT = "_reject"  # per-row reason a partition row cannot be used (None = fine)
ROW = "_row"        # the row's position in its source, from 1, for reject reports
REJECT_COLUMNS = ["lead_id", "as_of", "model_version", "source", "row", "reason"]
DEFAULT_CHUNK = 50_000  # leads per partition

# What a row-level problem says about one row (validation words it for a count of rows).
_SINGULAR = (("are not parsable timestamps", "is not a parsable timestamp"), ("are empty", "is empty"),
             ("have an empty lead id", "is empty"), ("convert before they were created", "is before the creation time"),
             ("are not numbers", "is not a number"), ("have an empty type", "is empty"),
             ("have a direction other than", "is not one of"), ("are not an outcome", "is not an outcome"),
             ("are not finite numbers", "is not a finite number"), ("are outside", "is outside"),
             ("are lost before they were created", "is before the creation time"),
             ("are lost at the moment they converted", "is the conversion time"))


def _singular(reason: str) -> str:
    for plural, single in _SINGULAR:
        if plural in reason:
            return reason.replace(plural, single)
    return reason


def row_reasons(problems: RowProblems) -> list[str | None]:
    """Each row's first problem, worded for one row (None: the row is fine)."""
    return [_singular(r) if r is not None else None for r in problems.reason]


@numba.njit(cache=True, nogil=True)
def _fnv1a(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """FNV-1a (64 bits) of each string's UTF-8 bytes, given an Arrow string array's offsets and data."""
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    for i in range(len(out)):
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = h
    return out


def text_hash(ids: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string, computed on the Arrow buffers (no Python object per id); NULL hashes as ""."""
    ids = pc.fill_null(ids.cast(pa.large_string()), "")
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset:ids.offset + len(ids) + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if ids.buffers()[2] is not None else np.zeros(0, np.uint8)
    return _fnv1a(offsets, data)


def partition_of(lead_ids: pd.Series | np.ndarray | pa.Array | pa.ChunkedArray, n: int) -> np.ndarray:
    """The partition of each lead id: a stable hash of its text (the same in every process and run) modulo ``n``."""
    ids = lead_ids if isinstance(lead_ids, pa.Array | pa.ChunkedArray) else pa.array(lead_ids, type=pa.large_string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks else pa.array([], pa.large_string())
    return (text_hash(ids) % np.uint64(n)).astype(np.int64)


def _reads_referrers(spec) -> bool:
    """The model has referral features, so its rows carry ``referred_by`` (a spec-like object naming only the
    attribute columns has none)."""
    return bool(getattr(spec, "referral_columns", ()))


def lead_schema(scorer: LeadScorer) -> pa.Schema:
    spec = scorer.spec
    fields = [(LEAD_ID, pa.string()), (CREATED_AT, pa.timestamp("ns")), (CONVERTED_AT, pa.timestamp("ns")),
              (LOST_AT, pa.timestamp("ns")), (LABEL, pa.int8())]
    fields += [(c, pa.string()) for c in spec.categorical] + [(c, pa.float64()) for c in spec.numeric]
    fields += [(REFERRED_BY, pa.string())] if _reads_referrers(spec) else []
    return pa.schema(fields + [(REJECT, pa.string()), (ROW, pa.int64())])


EVENT_SCHEMA = pa.schema([(LEAD_ID, pa.string()), (TIMESTAMP, pa.timestamp("ns")), (TYPE, pa.string()),
                          (DIRECTION, pa.string()), (REJECT, pa.string()), (ROW, pa.int64())])


def funnel_columns(scorer: LeadScorer) -> tuple[str, ...]:
    """The funnel's event columns a model reads (a stage model: ``stage``; task outcomes: ``outcome``; the ratings)."""
    spec = scorer.spec
    return tuple(c for c, used in ((STAGE, bool(spec.stages)), (OUTCOME, spec.task_outcomes),
                                   (LEAD_RATING, LEAD_RATING in spec.ratings), (TASK_RATING, TASK_RATING in spec.ratings))
                 if used)


def event_schema(scorer: LeadScorer) -> pa.Schema:
    """EVENT_SCHEMA, and the funnel's columns for a model that reads them."""
    fields = list(EVENT_SCHEMA)
    fields[4:4] = [pa.field(c, pa.float64() if c in (LEAD_RATING, TASK_RATING) else pa.string())
                   for c in funnel_columns(scorer)]
    return pa.schema(fields)


def lead_columns_read(params: Params, scorer: LeadScorer) -> tuple[list[str], list[str]] | None:
    """The leads table's columns :func:`canonical_leads` reads: (required, optional); None: all of them
    (months from row order read the table as a whole)."""
    d, spec = params.data, scorer.spec
    if d.created_from_row_order is not None:
        return None
    c = d.columns
    required = [x for x in (c.lead_id, c.created_at, c.lost_at) if x] + list(spec.categorical) + list(spec.numeric)
    if _reads_referrers(spec):
        if c.referred_by is None:
            raise ConfigError("this model has referral features: map the referrer column in data.columns.referred_by")
        required.append(c.referred_by)
    return required, [x for x in (c.converted_at, c.label) if x]


def event_columns_read(params: Params) -> tuple[list[str], list[str]]:
    """The interaction columns :func:`canonical_events` reads: (required, optional)."""
    c = params.data.interaction_columns
    return [c.lead_id, c.timestamp, c.type, c.direction], [c.value] + [
        x for x in (c.stage, c.outcome, c.lead_rating, c.task_rating) if x]


def canonical_leads(raw: pd.DataFrame, source: str, params: Params, scorer: LeadScorer, first_row: int,
                    dates: DateRules | None = None) -> pd.DataFrame:
    """One batch of the leads table under leadtemp's names, the model's columns only, with reasons.

    ``dates``: pass the same rules to every batch of a table, so all are read in the format the
    first batches settled (default: each batch on its own, with params' date_format and window).
    """
    d, spec = params.data, scorer.spec
    problems = RowProblems(len(raw))
    leads = validate_leads(raw, source, spec.categorical, spec.numeric, columns=d.columns,
                           missing_values=d.missing_values, row_order=d.created_from_row_order, problems=problems,
                           dates=dates or DateRules.of(d))
    return canonical_rows(leads, problems, scorer, first_row)


def canonical_rows(leads: pd.DataFrame, problems: RowProblems, scorer: LeadScorer, first_row: int) -> pd.DataFrame:
    """Validated leads (:func:`~leadtemp.core.schema.validate_leads` with ``problems``) as canonical rows."""
    spec = scorer.spec
    out = pd.DataFrame({LEAD_ID: leads[LEAD_ID], CREATED_AT: leads[CREATED_AT], CONVERTED_AT: leads[CONVERTED_AT],
                        LOST_AT: leads[LOST_AT] if LOST_AT in leads.columns else pd.Series(pd.NaT, index=leads.index,
                                                                                         dtype="datetime64[ns]"),
                        LABEL: leads[LABEL] if LABEL in leads.columns else pd.Series(pd.NA, index=leads.index,
                                                                                     dtype="Int8")})
    for column in spec.categorical:  # as text, exactly as features._attributes reads it
        out[column] = leads[column].astype("string")
    for column in spec.numeric:
        out[column] = leads[column]
    if _reads_referrers(spec):
        if REFERRED_BY not in leads.columns:
            raise ConfigError("this model has referral features: map the referrer column in data.columns.referred_by")
        out[REFERRED_BY] = leads[REFERRED_BY].astype("string")
    out[REJECT] = row_reasons(problems)
    out[ROW] = np.arange(first_row, first_row + len(out), dtype=np.int64)
    return out


def canonical_events(raw: pd.DataFrame, source: str, params: Params, first_row: int,
                     as_of: pd.Timestamp, dates: DateRules | None = None, funnel: tuple[str, ...] = ()) -> pd.DataFrame:
    """One batch of the interactions under leadtemp's names with reasons; events at or after ``as_of``
    are left out here, as scoring would never look at them (a bad row is kept whatever its time).
    ``dates`` as in :func:`canonical_leads`; ``funnel``: the funnel's columns the model reads (:func:`funnel_columns`),
    empty where the interactions have none."""
    problems = RowProblems(len(raw))
    events = validate_interactions(raw, source, None, params.data.interaction_columns, problems=problems,
                                   dates=dates or DateRules.of(params.data), stages=params.stage_names())
    out = events[[LEAD_ID, TIMESTAMP, TYPE, DIRECTION]].copy()
    for column in funnel:
        empty = pd.Series(np.nan if column in (LEAD_RATING, TASK_RATING) else pd.NA, index=out.index,
                          dtype="float64" if column in (LEAD_RATING, TASK_RATING) else "string")
        out[column] = events[column] if column in events.columns else empty
    out[REJECT] = row_reasons(problems)
    out[ROW] = np.arange(first_row, first_row + len(out), dtype=np.int64)
    keep = problems.bad | (out[TIMESTAMP] < as_of).to_numpy()
    return out.loc[keep]


def score_partition(leads: pd.DataFrame, events: pd.DataFrame, scorer: LeadScorer, as_of: pd.Timestamp,
                    reasons: bool = True, include_lost: bool = False, since: pd.Timestamp | None = None,
                    steady_within: float = 0.0, ledger: pd.DataFrame | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """Score one partition: canonical leads and all their events (with ``_reject`` reasons).

    Returns the scored rows (output columns without ``rank``, plus ``margin`` and ``lost_since``), the
    rejected rows (``lead_id, source, row, reason``), the number of valid leads not eligible at ``as_of``
    (not yet created, or converted) and the number of eligible leads lost at ``as_of`` (not scored,
    unless ``include_lost``: then scored with ``lost_since`` set). Eligibility is
    :meth:`LeadScorer.eligible`, the rule of every scoring path.
    A lead is rejected for a bad value of its own, a duplicate id (every copy) or a bad interaction.
    Interactions of a lead that is not in the leads table are rejected as ``interactions`` rows.
    ``since`` (before ``as_of``): also how each scored lead moved since then, by the same model
    (:meth:`LeadScorer.changes`, ``steady_within``: its steady band), in the columns ``CHANGE_COLUMNS``.
    ``ledger``: a model with referral features looks referrers and referrals up there
    (:func:`~leadtemp.core.referrals.referral_ledger` of the whole table: a referrer may be in another partition).
    """
    leads = leads.reset_index(drop=True)
    reason = leads[REJECT].astype(object).where(leads[REJECT].notna(), None).to_numpy()
    ids = leads[LEAD_ID].to_numpy(dtype=object)
    copies = leads.groupby(LEAD_ID, sort=False)[LEAD_ID].transform("size").to_numpy()
    duplicate = (copies > 1) & (ids != "")
    reason = np.where(duplicate, [f"duplicate lead id ({c} rows)" for c in copies], reason)

    bad_events = events.loc[events[REJECT].notna()]
    orphan = ~is_among(events[LEAD_ID], ids)
    event_reason = bad_events.drop_duplicates(LEAD_ID).set_index(LEAD_ID)
    for i in np.flatnonzero(pd.Series(ids).isin(event_reason.index).to_numpy() & pd.isna(reason)):
        first = event_reason.loc[ids[i]]
        reason[i] = f"interaction row {first[ROW]}: {first[REJECT]}"
    rejected = ~pd.isna(reason)
    rejects = [pd.DataFrame({LEAD_ID: ids[rejected], "source": "leads", "row": leads[ROW].to_numpy()[rejected],
                             "reason": reason[rejected].astype(str)})]
    stray = events.loc[orphan]
    if len(stray):
        rejects.append(pd.DataFrame({LEAD_ID: stray[LEAD_ID].to_numpy(), "source": "interactions",
                                     "row": stray[ROW].to_numpy(),
                                     "reason": np.where(stray[REJECT].notna(), stray[REJECT].astype(object),
                                                        "its lead is not in the leads table").astype(str)}))
    good = leads.loc[~rejected].drop(columns=[REJECT, ROW])
    good[LABEL] = good[LABEL].astype("Int8")
    for column in scorer.spec.categorical:
        good[column] = good[column].astype("string")
    valid_events = events.loc[~orphan & events[REJECT].isna()].drop(columns=[REJECT, ROW])
    eligible, lost = scorer.eligible(good, valid_events, as_of, include_lost, ledger)
    valid_events = valid_events.loc[is_among(valid_events[LEAD_ID], eligible[LEAD_ID])]
    if len(eligible):
        now = scorer.features_of(eligible, valid_events, as_of)
        scored = scorer.score_rows(now, reasons=reasons)
        scored[LOST_SINCE] = (eligible[LOST_SINCE].to_numpy() if LOST_SINCE in eligible.columns
                              else np.full(len(eligible), np.datetime64("NaT", "ns")))
        if since is not None:
            moved = scorer.changes_since(now, eligible, valid_events, since, steady_within, ledger)
            scored = pd.concat([scored.reset_index(drop=True), moved], axis=1)
    else:
        scored = pd.DataFrame({c: [] for c in scorer.output_columns() if c != "rank"} | {"margin": [], LOST_SINCE: []}
                              | ({c: [] for c in CHANGE_COLUMNS} if since is not None else {}))
        scored[LOST_SINCE] = scored[LOST_SINCE].astype("datetime64[ns]")
    not_eligible = len(good) - len(eligible) - (0 if include_lost else lost)
    return scored, pd.concat(rejects, ignore_index=True), not_eligible, lost


def partition_ledger(lead_parts, n: int) -> pd.DataFrame:
    """The referral ledger of a partitioned run: ids, times and referrers of every valid row of every partition
    (a lead's referrer and referrals may be in other partitions); a few columns of the whole table in memory."""
    from leadtemp.core.referrals import LEDGER_COLUMNS, referral_ledger

    parts = [part.loc[part[REJECT].isna(), LEDGER_COLUMNS] for part in (lead_parts.read(k) for k in range(n))]
    return referral_ledger(pd.concat(parts, ignore_index=True))


def interactions_read(scorer: LeadScorer, interactions: TableSource | None) -> TableSource | None:
    """The interactions a model reads: required for event models that learned channels, none for
    one-row-per-lead models; a model trained without an interaction log scores without one."""
    if scorer.spec.mode != "events":
        return None
    if interactions is None and scorer.spec.channels:
        raise ConfigError("this model reads interactions: give an interactions file, folder or table")
    return interactions
