"""The user's own event vocabulary (params.yaml ``events``): what each interaction type is, and what follows.

A type is a **touch** (a contact between the team and the lead, with a direction), a **step** (a
process or system status the lead reached: "offer sent", "application pre-accepted") or an
**outcome** (terminal). Types in the data but not declared are touches, as before the vocabulary
existed. Only touches are contacts: steps have features of their own and outcomes none.

The thermometer rule: when any event type declares a ``thermometer`` place, the thermometer weighs
the declared places only (``features.thermometer`` is not used); otherwise it is
``features.thermometer`` (the sales coach's ordering by default), minus any type declared as a step or
an outcome. When the data gives it nothing to weigh, it is *not applicable*, and no gate compares a
model with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadtemp.core.config import EventType, Features
from leadtemp.core.schema import CONVERTED_AT, DIRECTION, LEAD_ID, TIMESTAMP, TYPE

TOUCH, STEP, OUTCOME = "touch", "step", "outcome"
NAMED = 8  # undeclared types named in the training note, the most frequent first
# An undeclared type looks like an outcome when at least TERMINAL_LEADS leads have it, none converted after it,
# and at most TERMINAL_FOLLOWED of them have any event later than a day after it (what a decline or a
# cancellation looks like in a process log); or when at least TERMINAL_WON of its leads converted at or
# within a day before it, and none after (an "approved" status).
TERMINAL_LEADS, TERMINAL_FOLLOWED, TERMINAL_WON = 50, 0.05, 0.9


def kind_of(events: dict[str, EventType], type_: str) -> str:
    """A type's kind; undeclared types are touches."""
    declared = events.get(type_)
    return declared.kind if declared is not None else TOUCH


def thermometer_weights(settings: Features, events: dict[str, EventType]) -> dict[str, float]:
    """Weight of each inbound type on the thermometer (see the module docstring for the rule)."""
    declared = {t: float(e.thermometer) for t, e in events.items() if e.thermometer is not None}
    if declared:
        return declared
    return {t: float(w) for t, w in settings.thermometer.items() if kind_of(events, t) == TOUCH}


def thermometer_constant(scores: np.ndarray | pd.Series) -> float | None:
    """The thermometer score's one value when it is the same on every row (NaN: no rows), else None.

    A score that is the same for every row ranks nobody: its ROC-AUC is 0.5 by construction, and
    "beats the thermometer" would only say "better than chance".
    """
    values = np.asarray(scores, dtype=float)
    distinct = np.unique(values[~np.isnan(values)])
    if distinct.size > 1:
        return None
    return float(distinct[0]) if distinct.size else float("nan")


def not_applicable_reason(level: float, n: int, rows: str) -> str:
    """The words of a thermometer that is ``level`` on all ``n`` ``rows``."""
    cause = ("none of its types (events.*.thermometer, or features.thermometer when no event type declares a place) "
             "occurs as an inbound interaction before these cutoffs" if level == 0 else "it ranks nobody")
    return f"not applicable (the thermometer score is {level:g} on all {n:,} {rows}: {cause})"


def thermometer_not_applicable(scores: np.ndarray | pd.Series, rows: str) -> str | None:
    """Why the thermometer cannot be compared with on these rows, or None when it can."""
    level = thermometer_constant(scores)
    return None if level is None else not_applicable_reason(level, len(scores), rows)


def terminal_types(leads: pd.DataFrame, interactions: pd.DataFrame, events: dict[str, EventType]) -> dict[str, str]:
    """Undeclared types that look like an outcome (see ``TERMINAL_*``): type → ``lost`` or ``won``.

    Only a hint for the user: nothing is closed or converted because of it. Counted from each lead's first
    event of the type; leads without a conversion time count as not converted.
    """
    if interactions.empty or CONVERTED_AT not in leads.columns:
        return {}
    undeclared = interactions.loc[~interactions[TYPE].isin(list(events)), [LEAD_ID, TYPE, TIMESTAMP]]
    first = undeclared.groupby([TYPE, LEAD_ID], observed=True, sort=False)[TIMESTAMP].min().reset_index()
    last = interactions.groupby(LEAD_ID, observed=True, sort=False)[TIMESTAMP].max()
    converted = leads.drop_duplicates(LEAD_ID).set_index(LEAD_ID)[CONVERTED_AT]
    first["converted"] = first[LEAD_ID].map(converted)
    first["last"] = first[LEAD_ID].map(last)
    day = pd.Timedelta(days=1)
    first["after"] = first["converted"] > first[TIMESTAMP]
    first["followed"] = first["last"] > first[TIMESTAMP] + day
    first["won_at"] = (first["converted"] <= first[TIMESTAMP]) & (first["converted"] >= first[TIMESTAMP] - day)
    per = first.groupby(TYPE, observed=True, sort=True)[["after", "followed", "won_at"]].agg(["sum", "size"])
    out = {}
    for type_, row in per.iterrows():
        n = int(row[("after", "size")])
        if n < TERMINAL_LEADS or row[("after", "sum")] > 0:
            continue
        if row[("won_at", "sum")] >= TERMINAL_WON * n:
            out[str(type_)] = "won"
        elif row[("followed", "sum")] <= TERMINAL_FOLLOWED * n:
            out[str(type_)] = "lost"
    return out


def terminal_note(leads: pd.DataFrame, interactions: pd.DataFrame, events: dict[str, EventType]) -> str | None:
    """The training note naming the undeclared types that look like outcomes, or None."""
    found = terminal_types(leads, interactions, events)
    if not found:
        return None
    shown = ", ".join(f"'{t}' {{kind: outcome, ends: {e}}}" for t, e in list(found.items())[:NAMED])
    return (f"{len(found)} undeclared interaction type(s) look like an outcome (no lead converted after one, and "
            f"the leads had no other event later or had just converted): {shown}; if they close a lead, declare "
            "them so in events (or map data.columns.lost_at): until then a lead they closed is scored as open, and "
            "they are counted as contacts (docs/own-data.md#lost-and-reopened-leads)")


def vocabulary_notes(interactions: pd.DataFrame, settings: Features, events: dict[str, EventType],
                     leads: pd.DataFrame | None = None) -> list[str]:
    """What the user must hear once per training about their vocabulary, counted over ``interactions``.

    With an ``events`` section: the undeclared types with their counts (treated as touches and named
    in reasons by their raw code) and the declared types that never occur. Always: a thermometer none
    of whose types occurs inbound; with ``leads``, the undeclared types that look like outcomes.
    """
    notes = []
    if leads is not None and (note := terminal_note(leads, interactions, events)):
        notes.append(note)
    counts = interactions[TYPE].value_counts(sort=True)
    if events:
        undeclared = counts.loc[~counts.index.isin(list(events))]
        if len(undeclared):
            shown = ", ".join(f"'{t}' {n:,}" for t, n in undeclared.head(NAMED).items())
            more = f" and {len(undeclared) - NAMED} more" if len(undeclared) > NAMED else ""
            notes.append(f"{len(undeclared)} interaction type(s) not declared in events: {shown}{more}; "
                         "counted as touches (contacts, with their direction) and named by their raw code in reasons")
        if absent := [t for t in events if t not in counts.index]:
            notes.append(f"declared in events but not in the interactions: {absent}")
    weights = thermometer_weights(settings, events)
    inbound = interactions.loc[interactions[DIRECTION] == "inbound", TYPE]
    if not inbound.isin([t for t, w in weights.items() if w > 0]).any():
        source = "events.*.thermometer" if any(e.thermometer is not None for e in events.values()) else "features.thermometer"
        notes.append(f"thermometer: none of the types with a place on it ({source}) occurs as an inbound interaction, "
                     "so the thermometer baseline is not applicable: no gate compares the model with it")
    return notes
