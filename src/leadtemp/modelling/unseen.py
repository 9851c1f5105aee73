"""What a scoring run meets that the model never met in training, said once per run with counts.

A lead with an interaction type, or a category, the model never saw gets a score all the same (the
type counts only in its direction's totals, the category reads as missing), and so does a lead whose
attribute is empty; a date far from the training period scores a world the model may not describe.
A few such leads are normal; a large share means the test metrics no longer say how good the scores
are. Counted partition by partition over the leads eligible at the date (see :class:`Unseen`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadtemp.core.schema import DIRECTION, LABEL, LEAD_ID, TYPE, is_among
from leadtemp.modelling.partition import REJECT, ROW
from leadtemp.modelling.scorer import LeadScorer

UNSEEN_SHARE = 0.2     # warn when more than this share of the scored leads meets something unseen
MISSING_MARGIN = 0.2   # warn when an attribute is empty for this much larger a share than in training
EXAMPLES = 3           # unseen interaction types named in the warning (a CRM's vocabulary, never a lead's data)


@dataclass
class Unseen:
    """Counts over the valid leads eligible at the date, added up partition by partition."""

    leads: int = 0
    unseen_types: int = 0                                   # leads with an interaction of an unknown channel
    types: Counter = field(default_factory=Counter)         # "type (direction)" -> leads
    categories: Counter = field(default_factory=Counter)    # column -> leads with a value unseen in training
    missing: Counter = field(default_factory=Counter)       # column -> leads with the attribute empty

    def add(self, leads: pd.DataFrame, events: pd.DataFrame, scorer: LeadScorer, as_of: pd.Timestamp) -> None:
        """Count one partition (canonical rows with their ``_reject`` reasons, as the partition step wrote them)."""
        spec = scorer.spec
        good = leads.loc[leads[REJECT].isna()].drop(columns=[REJECT, ROW])
        good[LABEL] = good[LABEL].astype("Int8")
        valid = events.loc[events[REJECT].isna()] if spec.mode == "events" else events
        eligible, _ = scorer.eligible(good, valid, as_of)  # the leads the run scores (lost ones are not)
        self.count(eligible, valid, scorer)

    def count(self, eligible: pd.DataFrame, valid: pd.DataFrame, scorer: LeadScorer) -> None:
        """Count leads already known to be scored, with their valid interactions."""
        spec = scorer.spec
        self.leads += len(eligible)
        for column, categories in spec.categorical.items():
            values = eligible[column].astype("string")
            self.categories[column] += int((values.notna() & ~values.isin(categories)).sum())
        for column in [*spec.categorical, *spec.numeric]:
            self.missing[column] += int(eligible[column].isna().sum())
        if spec.mode != "events" or valid.empty:
            return
        known = {(c.type, c.direction) for c in spec.channels}
        lost_types = set(spec.loss_rules.lost_types)
        mine = valid.loc[is_among(valid[LEAD_ID], eligible[LEAD_ID])]
        # decided per distinct (type, direction), not per event: declared steps and outcomes, and the
        # types that close a lead as lost, have no channel
        types, type_names = pd.factorize(mine[TYPE], use_na_sentinel=False)
        directions, direction_names = pd.factorize(mine[DIRECTION], use_na_sentinel=False)
        pairs, pair_of_event = np.unique(types * len(direction_names) + directions, return_inverse=True)
        unseen = np.array([(t, d) not in known and t not in lost_types and spec.kind(t) == "touch"
                           for t, d in ((type_names[p // len(direction_names)], direction_names[p % len(direction_names)])
                                        for p in pairs)], dtype=bool)
        new = mine.loc[unseen[pair_of_event.reshape(-1)]] if len(pairs) else mine.iloc[:0]
        self.unseen_types += new[LEAD_ID].nunique()
        pairs = new.drop_duplicates([LEAD_ID, TYPE, DIRECTION])
        self.types.update(f"'{t}' {d}" for t, d in zip(pairs[TYPE], pairs[DIRECTION]))

    def warnings(self, scorer: LeadScorer, share: float = UNSEEN_SHARE) -> list[str]:
        """Unseen types and categories met by more than ``share`` of the leads (0: by any), and attributes
        empty far more often than in training."""
        n = self.leads
        if not n:
            return []
        out = []
        if self.unseen_types > share * n:
            examples = ", ".join(name for name, _ in self.types.most_common(EXAMPLES))
            out.append(f"{_share(self.unseen_types, n)} have interactions of types the model never saw in training "
                       f"({examples}{', ...' if len(self.types) > EXAMPLES else ''}): they count only in the "
                       "inbound/outbound totals")
        for column, count in self.categories.items():
            if count > share * n:
                out.append(f"{_share(count, n)} have a value of '{column}' the model never saw in training: "
                           "it reads as missing")
        trained = scorer.meta.get("missing_share", {})
        for column, count in self.missing.items():
            before = trained.get(column)  # None for models trained before the share was recorded: warn at 100%
            if count == n if before is None else count / n > before + MISSING_MARGIN:
                was = f" ({before:.0%} in training)" if before is not None else ""
                out.append(f"'{column}' is empty for {_share(count, n)}{was}: check that the column is still filled")
        return out


def _share(count: int, n: int) -> str:
    return f"{count:,} of the {n:,} leads scored ({count / n:.0%})"


def period_warning(scorer: LeadScorer, as_of: pd.Timestamp) -> str | None:
    """A warning when ``as_of`` lies before the first training cutoff (or, for a label table, its first
    training row), or more than one horizon after the end of the data the model was trained on."""
    meta = scorer.meta
    first = _date(str((meta.get("splits") or {}).get("train", ""))[:10])
    until = _date(meta.get("observed_until"))
    if first is not None and as_of < first:
        return (f"as of {as_of:%Y-%m-%d} lies before the model's training period (it starts {first:%Y-%m-%d}): "
                "the model learned from later leads than these")
    if until is not None and as_of > until + pd.Timedelta(days=scorer.horizon_days):
        return (f"as of {as_of:%Y-%m-%d} lies {(as_of - until).days:,} days after the end of the model's training "
                f"data ({until:%Y-%m-%d}), more than one horizon ({scorer.horizon_days} days): retrain before "
                "trusting these scores")
    return None


def _date(text: str | None) -> pd.Timestamp | None:
    try:
        when = pd.Timestamp(text) if text else None
    except ValueError:
        return None
    return None if when is None or pd.isna(when) else when.tz_localize(None) if when.tzinfo else when
