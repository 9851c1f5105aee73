"""Temperature over time: every lead as one model scores it at a date, and how it moved since an earlier date.

The earlier scores are recomputed from the same data with the same model, point in time at each date
(only what happened strictly before it counts), so the moves are exact: a lead's groups' moves add up to
the move of its margin, and nothing about the model changed between the two dates.
"""

from __future__ import annotations

import pandas as pd

from leadtemp.core.errors import ConfigError
from leadtemp.core.metrics import BUCKETS
from leadtemp.modelling.scorer import CHANGE_COLUMNS, PREVIOUS_BUCKET, PREVIOUS_PROBABILITY, TREND, LeadScorer, rank_order


def check_order(earlier: pd.Timestamp, later: pd.Timestamp, what: str = "--from", then: str = "--to") -> None:
    if earlier >= later:
        raise ConfigError(f"{what} {earlier:%Y-%m-%d} is not before {then} {later:%Y-%m-%d}: the dates are in the wrong "
                          "order (the earlier date first)")


def scores_with_changes(scorer: LeadScorer, leads: pd.DataFrame, interactions: pd.DataFrame, earlier: pd.Timestamp,
                        later: pd.Timestamp, steady_within: float, reasons: bool = True) -> pd.DataFrame:
    """Every lead scorable at ``later``, ranked, with reasons, and its ``previous_probability``, ``previous_bucket``,
    ``trend`` and ``what_changed`` since ``earlier`` (``new``: not yet scorable then)."""
    earlier, later = pd.Timestamp(earlier), pd.Timestamp(later)
    check_order(earlier, later)
    now = scorer.features(leads, interactions, later)
    out = pd.concat([scorer.score_rows(now, reasons=reasons).reset_index(drop=True),
                     scorer.changes_since(now, leads, interactions, earlier, steady_within)], axis=1)
    out["rank"] = rank_order(out)
    return out.sort_values("rank", kind="stable").reset_index(drop=True)[scorer.output_columns() + CHANGE_COLUMNS]


def crossed(scored: pd.DataFrame) -> pd.DataFrame:
    """The leads whose bucket changed, hottest movers first: the hottest bucket now, then the largest rise."""
    moved = scored.loc[(scored[PREVIOUS_BUCKET] != "") & (scored[PREVIOUS_BUCKET] != scored["bucket"])]
    heat = moved["bucket"].map({b: i for i, b in enumerate(BUCKETS)})
    rise = moved["probability"] - moved[PREVIOUS_PROBABILITY]
    order = pd.DataFrame({"heat": heat, "rise": -rise, "rank": moved["rank"]}).sort_values(["heat", "rise", "rank"],
                                                                                           kind="stable").index
    return moved.loc[order].reset_index(drop=True)


def trend_counts(scored: pd.DataFrame) -> dict[str, int]:
    return {t: int((scored[TREND] == t).sum()) for t in ("warming", "cooling", "steady", "new")}


def previous_date(previous: pd.DataFrame, where: str, model_version: str, run_id: str) -> pd.Timestamp:
    """The date of an earlier scores file of ``leadtemp score`` (``--previous``), which must be one date scored by
    this very model: what changed between two models is not a change of the lead."""
    missing = [c for c in ("as_of", "model_version") if c not in previous.columns]
    if missing:
        raise ConfigError(f"{where}: no column {missing[0]!r}: give a scores file written by leadtemp score")
    if previous.empty:
        raise ConfigError(f"{where}: no scored rows: give a scores file written by leadtemp score")
    dates = pd.to_datetime(previous["as_of"], errors="coerce")
    if dates.isna().any():
        rows = (dates.index[dates.isna()][:3] + 2).tolist()
        raise ConfigError(f"{where}: column 'as_of': {int(dates.isna().sum())} row(s) are not dates, e.g. rows {rows}")
    if dates.nunique() != 1:
        raise ConfigError(f"{where}: column 'as_of' holds {dates.nunique()} dates "
                          f"({dates.min():%Y-%m-%d} .. {dates.max():%Y-%m-%d}); give the scores of one run")
    versions = sorted(previous["model_version"].astype(str).unique())
    runs = sorted(previous["run_id"].dropna().astype(str).unique()) if "run_id" in previous.columns else []
    if versions != [str(model_version)] or (run_id and runs and runs != [str(run_id)]):
        raise ConfigError(f"{where}: scored by model version {', '.join(versions)}"
                          + (f" (run {', '.join(runs)})" if runs else "") + f"; this run scores with version "
                          f"{model_version}: what changed between two models is not a change of the lead (use --since "
                          "DATE to rescore that date with this model)")
    return pd.Timestamp(dates.iloc[0])
