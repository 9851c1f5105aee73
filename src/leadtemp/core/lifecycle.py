"""Lost, disqualified and reopened leads: a lead's open/lost state at any time, from its history only.

A lead's **losses** are its ``lost_at`` time (the CRM's "closed as lost" column, when mapped) and every
interaction whose type is declared terminal-lost (``events: TYPE: {kind: outcome, ends: lost}``) or
that moves the lead to a lost stage of the funnel (``events: TYPE: {kind: stage, terminal: {STAGE: lost}}``). A
loss is undone, the lead **reopens**, by a later inbound interaction of another type or by one of the
declared reopening types (``reopens: true``). At time ``t`` only what happened strictly before ``t``
counts: the lead is lost at ``t`` when its latest loss before ``t`` is later than its latest reopening
before ``t`` (a loss and a reopening at the same moment leave it open). A lead may go round many times.

The history is boiled down once into **lost spells**, one row per stretch of being lost:
``lost_from`` (the first loss after the lead was open; lost for every ``t > lost_from``) and
``lost_until`` (the reopening that ended it; lost up to and including ``t == lost_until``; NaT: still
lost). :func:`lost_state` then reads the state of any (lead, time) pairs from the spells in a few
vectorised steps, so training asks for every snapshot of every cutoff at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from leadtemp.core.schema import DIRECTION, LEAD_ID, LOST_AT, STAGE, TIMESTAMP, TYPE

LOST_FROM, LOST_UNTIL = "lost_from", "lost_until"
LOST, LOST_SINCE, REOPENED_AT = "lost", "lost_since", "reopened_at"
NEVER = np.iinfo(np.int64).max  # "still lost" as int64 nanoseconds
NAT = np.iinfo(np.int64).min    # NaT as int64 nanoseconds


@dataclass(frozen=True)
class LossRules:
    """Which interaction types close a lead as lost and which reopen it (besides any inbound interaction); and the
    funnel's stages that close it (``events: TYPE: {kind: stage, terminal: {STAGE: lost}}``): rows of ``stage_type``
    naming one of ``lost_stages``."""

    lost_types: tuple[str, ...] = ()
    reopening_types: tuple[str, ...] = ()
    stage_type: str | None = None
    lost_stages: tuple[str, ...] = ()

    @classmethod
    def of(cls, params) -> LossRules | None:
        """From params' ``events`` section; None when params give no way to lose a lead (no ``data.columns.lost_at``,
        no lost type): then nothing about losses is computed or stored, and models stay as they were."""
        stage_type = next((t for t, e in params.events.items() if e.kind == "stage"), None)
        lost_stages = tuple(s for s, ends in params.events[stage_type].terminal.items() if ends == "lost") \
            if stage_type is not None else ()
        if params.data.columns.lost_at is None and not params.lost_types() and not lost_stages:
            return None
        return cls(tuple(params.lost_types()), tuple(params.reopening_types()), stage_type if lost_stages else None,
                   lost_stages)

    def to_dict(self) -> dict:
        out = {"lost_types": list(self.lost_types), "reopening_types": list(self.reopening_types)}
        if self.lost_stages:  # only then: every other model's lifecycle stays as it was written
            out |= {"stage_type": self.stage_type, "lost_stages": list(self.lost_stages)}
        return out

    @classmethod
    def from_dict(cls, raw: dict | None) -> LossRules:
        raw = raw or {}
        return cls(tuple(raw.get("lost_types", ())), tuple(raw.get("reopening_types", ())), raw.get("stage_type"),
                   tuple(raw.get("lost_stages", ())))


def _empty_spells() -> pd.DataFrame:
    return pd.DataFrame({LEAD_ID: pd.Series(dtype=object), LOST_FROM: pd.Series(dtype="datetime64[ns]"),
                         LOST_UNTIL: pd.Series(dtype="datetime64[ns]")})


def _ns(values) -> np.ndarray:
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def loss_spells(leads: pd.DataFrame, interactions: pd.DataFrame, rules: LossRules) -> pd.DataFrame:
    """Every lost spell of every lead: lead_id, lost_from, lost_until (NaT: still lost at the end of the data).

    Inputs are not modified. ``leads`` may lack ``lost_at`` (no such column mapped): then only the
    declared lost types close leads. Interactions at any time are read: the caller asks
    :func:`lost_state` about a time, and only spells' edges strictly before it count.
    """
    losses = []
    if LOST_AT in leads.columns:
        closed = leads.loc[leads[LOST_AT].notna(), [LEAD_ID, LOST_AT]]
        losses.append((closed[LEAD_ID].to_numpy(dtype=object), _ns(closed[LOST_AT])))
    is_loss = interactions[TYPE].isin(rules.lost_types).to_numpy(dtype=bool)
    if rules.lost_stages and STAGE in interactions.columns:  # the funnel's lost stages close the lead too
        is_loss = is_loss | ((interactions[TYPE] == rules.stage_type).to_numpy(dtype=bool, na_value=False)
                    & interactions[STAGE].isin(rules.lost_stages).to_numpy(dtype=bool, na_value=False))
    if is_loss.any():
        losses.append((interactions[LEAD_ID].to_numpy(dtype=object)[is_loss], _ns(interactions[TIMESTAMP].to_numpy()[is_loss])))
    if not losses or not sum(len(ids) for ids, _ in losses):
        return _empty_spells()
    loss_ids = np.concatenate([ids for ids, _ in losses])
    loss_t = np.concatenate([t for _, t in losses])
    lost_leads = pd.Index(pd.unique(loss_ids))
    loss_code = lost_leads.get_indexer(loss_ids)
    first_loss = np.full(len(lost_leads), NEVER)
    np.minimum.at(first_loss, loss_code, loss_t)

    # Reopenings that can matter: of leads that were ever lost, at or after their first loss.
    reopening = ((interactions[DIRECTION].eq("inbound").to_numpy(dtype=bool) & ~is_loss)
                 | interactions[TYPE].isin(rules.reopening_types).to_numpy(dtype=bool))
    candidates = np.flatnonzero(reopening)
    code = _codes(lost_leads, interactions[LEAD_ID].iloc[candidates])
    t = _ns(interactions[TIMESTAMP].to_numpy()[candidates])
    pick = code >= 0
    pick[pick] = t[pick] >= first_loss[code[pick]]
    open_code, open_t = code[pick], t[pick]

    # Edges in (lead, time) order; the state after each moment is read at the last edge of that moment.
    code = np.concatenate([loss_code, open_code])
    t = np.concatenate([loss_t, open_t])
    is_l = np.concatenate([np.ones(len(loss_code), bool), np.zeros(len(open_code), bool)])
    order = np.lexsort((t, code))
    code, t, is_l = code[order], t[order], is_l[order]
    latest_loss = _running_max(code, np.where(is_l, t, NAT))
    latest_open = _running_max(code, np.where(is_l, NAT, t))
    last_of_moment = np.ones(len(t), bool)
    last_of_moment[:-1] = (code[1:] != code[:-1]) | (t[1:] != t[:-1])
    code, t = code[last_of_moment], t[last_of_moment]
    lost_after = latest_loss[last_of_moment] > latest_open[last_of_moment]
    # A spell starts where a lead turns lost and ends at its next moment that leaves it open.
    new_lead = np.ones(len(code), bool)
    new_lead[1:] = code[1:] != code[:-1]
    was_lost = np.zeros(len(code), bool)
    was_lost[1:] = lost_after[:-1]
    was_lost &= ~new_lead
    starts = np.flatnonzero(lost_after & ~was_lost)
    ends = np.flatnonzero(~lost_after & was_lost)
    # Each start is closed by the next end, when that end is the same lead's (starts and ends alternate).
    after = np.searchsorted(ends, starts)
    end_idx = np.append(ends, len(code))[after]
    closed = end_idx < len(code)
    closed[closed] = code[end_idx[closed]] == code[starts[closed]]
    until = np.where(closed, t[np.minimum(end_idx, len(t) - 1)], NAT)
    return pd.DataFrame({
        LEAD_ID: lost_leads.to_numpy(dtype=object)[code[starts]],
        LOST_FROM: _times(t[starts]),
        LOST_UNTIL: _times(until),
    })


def _codes(index: pd.Index, values: pd.Series) -> np.ndarray:
    """Position of each value in ``index`` (-1: absent), hashed in Arrow (pandas' get_indexer on text is slower)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(values):
        return np.zeros(0, np.int64)
    found = pc.index_in(pa.array(values.array, type=pa.string()),
                        value_set=pa.array(index.to_numpy(dtype=object), type=pa.string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _times(ns: np.ndarray) -> np.ndarray:
    """int64 nanoseconds as datetime64[ns] (NAT: NaT)."""
    return np.asarray(ns, dtype=np.int64).view("datetime64[ns]")


def _running_max(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cumulative maximum of ``values`` within runs of equal, sorted ``groups``."""
    return pd.Series(values).groupby(groups, sort=False).cummax().to_numpy() if len(values) else values


def lost_state(spells: pd.DataFrame, lead_ids, as_of) -> pd.DataFrame:
    """Each (lead, time) pair's state from :func:`loss_spells`, using only what happened strictly before the time.

    ``lead_ids``: one per row; ``as_of``: one time for all rows or one per row. Returns, aligned with the
    rows (index 0..n-1): ``lost`` (bool), ``lost_since`` (start of the current lost spell, NaT when open)
    and ``reopened_at`` (end of the latest spell before ``as_of`` when the lead is open, else NaT).
    """
    ids = np.asarray(lead_ids, dtype=object)
    n = len(ids)
    at = np.broadcast_to(_ns(np.atleast_1d(as_of)) if np.ndim(as_of) else _ns([as_of]), (n,))
    lost = np.zeros(n, bool)
    since = np.full(n, NAT)
    reopened = np.full(n, NAT)
    if n and len(spells):
        spells = spells.sort_values([LEAD_ID, LOST_FROM], kind="stable")
        spell_leads = spells[LEAD_ID].to_numpy(dtype=object)
        index = pd.Index(pd.unique(spell_leads))
        spell_code = index.get_indexer(spell_leads)
        first = np.searchsorted(spell_code, np.arange(len(index)), side="left")
        count = np.bincount(spell_code, minlength=len(index))
        code = index.get_indexer(ids)
        rows = np.flatnonzero(code >= 0)
        per_row = count[code[rows]]
        row_of = np.repeat(rows, per_row)  # each row once per spell of its lead
        offset = np.arange(len(row_of)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        spell_of = first[code[row_of]] + offset
        start = _ns(spells[LOST_FROM])[spell_of]
        end = _ns(spells[LOST_UNTIL])
        end = np.where(end == NAT, NEVER, end)[spell_of]
        t = at[row_of]
        inside = (start < t) & (t <= end)
        lost[row_of[inside]] = True
        since[row_of[inside]] = start[inside]
        ended = end < t
        np.maximum.at(reopened, row_of[ended], end[ended])
        reopened[lost] = NAT
    return pd.DataFrame({LOST: lost, LOST_SINCE: _times(since), REOPENED_AT: _times(reopened)})
