"""Every quarter: a rolling-origin backtest, and a challenger that replaces the champion only when it is better.

Point in time: a model "trained at t" sees the data as it was known just before ``t``
(:func:`known_at`): leads created before ``t``, conversions before ``t``, interactions before ``t``.
Labels need a full horizon after their cutoff, so such a model is fitted on cutoffs up to
``t - horizon`` and nothing later.

A challenger and the champion are compared on the *evaluation window*: the newest labelled cutoffs
neither of them was fitted on (the challenger's own test slice, from the champion's
``trained_through`` on), with the same leads and labels for both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadtemp.core.cadence import resolve_cadence
from leadtemp.core.config import Params, Retrain
from leadtemp.core.drift import drift_report
from leadtemp.core.errors import ConfigError, NotEnoughHistory, TrainingDataError
from leadtemp.core.features import build_training_frame, feature_matrix
from leadtemp.core.lifecycle import loss_spells
from leadtemp.core.metrics import (
    BUCKETS,
    bucket_shares,
    bucket_table,
    classification_metrics,
    lead_bootstrap_aucs,
    ranking_metrics,
    within_period_auc,
)
from leadtemp.core.schema import CONVERTED_AT, CREATED_AT, LEAD_ID, TIMESTAMP
from leadtemp.core.snapshots import build_snapshots, cutoff_dates, drop_lost, eligible_leads, observed_until
from leadtemp.core.vocabulary import not_applicable_reason, thermometer_constant
from leadtemp.modelling.horizons import horizon_metrics, timing
from leadtemp.modelling.results import Backtest, Fold, Gate, RetrainReport
from leadtemp.modelling.scorer import LeadScorer
from leadtemp.workflows.train import train

QUARTER = pd.DateOffset(months=3)


def known_at(leads: pd.DataFrame, interactions: pd.DataFrame, t: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data as it was known just before ``t``: later leads and events gone, later conversions not yet happened."""
    t = pd.Timestamp(t)
    known = leads.loc[leads[CREATED_AT] < t].reset_index(drop=True)
    known = known.assign(**{CONVERTED_AT: known[CONVERTED_AT].where(known[CONVERTED_AT] < t)})
    return known, interactions.loc[interactions[TIMESTAMP] < t].reset_index(drop=True)


def _require_events(params: Params, command: str) -> None:
    if params.data.mode != "events":
        raise ConfigError(f"{command} needs conversion times (data.columns.converted_at): with a final label only, "
                          "no one knows what was known at a past date")


def _quarter(t: pd.Timestamp) -> str:
    return f"{t.year}Q{(t.month - 1) // 3 + 1}"


def score_window(scorer: LeadScorer, leads: pd.DataFrame, interactions: pd.DataFrame, cutoffs: pd.DatetimeIndex,
                 until: pd.Timestamp) -> pd.DataFrame:
    """Every eligible lead at each cutoff (lost ones are not: the scorer's loss rules and the leads' lost_at),
    with its label, the scorer's margin, probability and bucket."""
    spells = loss_spells(leads, interactions, scorer.spec.loss_rules)
    snaps = build_snapshots(leads, cutoffs, scorer.horizon_days, until, spells=spells)
    if snaps.empty:
        raise TrainingDataError(f"no labelled snapshots at {list(cutoffs.strftime('%Y-%m-%d'))}")
    frame = build_training_frame(snaps, leads, interactions, scorer.spec)
    margin = scorer.margin(frame)
    probability = scorer.calibrator(margin)
    return frame.assign(margin=margin, probability=probability, bucket=scorer.buckets.assign(probability))


def window_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """ROC-AUC (pooled and within each cutoff), PR-AUC, ECE, lift@10% and more, the thermometer baseline, and each
    bucket's share and rate.

    A thermometer score that is the same on every row gives ``thermometer_constant`` (its value) instead
    of metrics: it ranks nobody, so its ROC-AUC would be 0.5 by construction.
    """
    y = frame["label"].to_numpy()
    if y.min() == y.max():
        raise TrainingDataError(f"{len(y):,} snapshots at {frame['cutoff'].min():%Y-%m-%d}..{frame['cutoff'].max():%Y-%m-%d} "
                                f"all have label {int(y[0])}: no metric can be measured there")
    metrics = classification_metrics(y, frame["probability"])
    score = frame["margin"] if "margin" in frame.columns else frame["probability"]
    metrics["within_cutoff_roc_auc"] = within_period_auc(y, score.to_numpy(), frame["cutoff"].to_numpy())
    if "thermometer_score" in frame.columns and (level := thermometer_constant(frame["thermometer_score"])) is not None:
        metrics["thermometer_constant"] = level
    elif "thermometer_score" in frame.columns:
        thermo = ranking_metrics(y, frame["thermometer_score"])
        metrics.update(thermometer_roc_auc=thermo["roc_auc"], thermometer_lift_at_10=thermo["lift_at_10"])
    for row in bucket_table(y, frame["bucket"].to_numpy()).itertuples():
        metrics[f"{row.bucket}_share"] = row.leads / len(frame)
        metrics[f"{row.bucket}_rate"] = row.rate
    return metrics


def window_timing(scorer: LeadScorer, frame: pd.DataFrame, leads: pd.DataFrame, until: pd.Timestamp) -> dict[str, float]:
    """ROC-AUC, ECE, rows and conversion rate of each ``p_<h>d`` the scorer has, on the window's rows whose ``h``
    days are observed by ``until`` (none for a model without them)."""
    if not scorer.timing_days:
        return {}
    curve = timing(scorer.horizon_models, scorer.horizon_days, scorer.timing_days, frame, scorer.spec,
                   frame["probability"].to_numpy())
    return horizon_metrics(frame, leads, curve, scorer.timing_days, until)


def calls_reached(frame: pd.DataFrame, calls: int, cooldown_days: float = 0.0) -> dict[str, float]:
    """The share of the window's conversions a team making ``calls`` calls at each cutoff would have reached, calling
    the leads in leadtemp's order (probability, then margin), the thermometer's, or the newest leads first (the order
    they arrived in, the usual queue without a score). Conversions within the horizon of each cutoff.

    As ``leadtemp calls`` does, a lead contacted by us within ``cooldown_days`` before a cutoff is not called there:
    by the data (``outbound_days_since_last``, the same for every order) or by the order's own calls at an earlier
    cutoff of the window (so each order's team cools the leads it called itself).
    """
    if "cutoff" not in frame.columns:
        return {}
    y = frame["label"].to_numpy(dtype=float)
    ids = frame[LEAD_ID].astype(str).to_numpy()
    orders = {"leadtemp": (ids, -frame["margin"].to_numpy(dtype=float), -frame["probability"].to_numpy(dtype=float))}
    if "thermometer_score" in frame.columns and thermometer_constant(frame["thermometer_score"]) is None:
        orders["thermometer"] = (ids, -frame["thermometer_score"].to_numpy(dtype=float))
    if "lead_age_days" in frame.columns:
        orders["newest_first"] = (ids, frame["lead_age_days"].to_numpy(dtype=float))
    cutoff = frame["cutoff"].to_numpy()
    last = frame.get("outbound_days_since_last", pd.Series(np.nan, index=frame.index)).to_numpy(dtype=float)
    contacted = ~np.isnan(last) & (last < cooldown_days)
    reached = dict.fromkeys(orders, 0.0)
    lead = pd.factorize(ids)[0]
    called = {name: np.full(lead.max() + 1 if len(lead) else 0, np.datetime64("NaT"), dtype=cutoff.dtype)
              for name in orders}   # per order, when its team last called each lead
    cool = np.timedelta64(int(round(cooldown_days * 86400)), "s")
    for c in np.unique(cutoff):
        rows = np.flatnonzero((cutoff == c) & ~contacted)
        for name, keys in orders.items():  # lexsort: the last key is the primary one
            ranked = rows[np.lexsort(tuple(k[rows] for k in keys))]
            last_called = called[name][lead[ranked]]
            ranked = ranked[np.isnat(last_called) | ~(c - last_called < cool)]
            first = ranked[:calls]
            reached[name] += y[first].sum()
            called[name][lead[first]] = c
    total = y.sum()
    return {f"calls_reached_{name}": value / total for name, value in reached.items()} if total else {}


# -- backtest -------------------------------------------------------------------------------------

def backtest_quarters(cutoffs: pd.DatetimeIndex, until: pd.Timestamp, params: Params, k: int) -> list[pd.Timestamp]:
    """Starts of the last ``k`` calendar quarters whose every cutoff has a fully observed horizon."""
    horizon = pd.Timedelta(days=params.snapshots.horizon_days)
    starts = pd.DatetimeIndex(sorted({c.to_period("Q").start_time for c in cutoffs}))
    complete = [s for s in starts if (inside := cutoffs[(cutoffs >= s) & (cutoffs < s + QUARTER)]).size
                and inside.max() + horizon <= until and s + QUARTER <= until]
    if len(complete) < k:
        raise ConfigError(f"only {len(complete)} quarters have fully labelled cutoffs by {until:%Y-%m-%d} "
                          f"(horizon {params.snapshots.horizon_days} days); ask for --quarters {len(complete)} or fewer")
    return complete[-k:]


def backtest(leads: pd.DataFrame, interactions: pd.DataFrame, params: Params, k: int, calls: int | None = None) -> Backtest:
    """Rolling origin: for each of the last ``k`` quarters, train with the data known at its start, test on it.

    Each model is what ``retrain --through <quarter start>`` would have trained; its test is every
    cutoff of the quarter, labelled from the full data. ``calls``: a team's calls per day; each quarter also
    gets the share of its conversions the team would have reached in leadtemp's order, the thermometer's and
    the newest leads first (:func:`calls_reached`).
    """
    _require_events(params, "backtest")
    until = observed_until(leads, interactions, params.snapshots.observed_until)
    params = resolve_cadence(leads, until, params).apply(params)  # one horizon and frequency for every quarter
    cutoffs = cutoff_dates(leads, until, params.snapshots.frequency)
    folds = []
    for start in backtest_quarters(cutoffs, until, params, k):
        try:
            result = train(*known_at(leads, interactions, start), params.replace(snapshots={"observed_until": str(start)}))
        except (NotEnoughHistory, TrainingDataError) as exc:
            raise type(exc)(f"backtest of {_quarter(start)} (data before {start:%Y-%m-%d}): {exc}; "
                            "ask for fewer --quarters") from exc
        window = cutoffs[(cutoffs >= start) & (cutoffs < start + QUARTER)]
        frame = score_window(result.scorer, leads, interactions, window, until)
        metrics = window_metrics(frame)
        metrics.update(window_timing(result.scorer, frame, leads, until))
        if calls is not None:
            metrics.update(calls_reached(frame, calls, params.calls.cooldown_days), calls_per_cutoff=float(calls))
        folds.append(Fold(_quarter(start), start, result, metrics))
    return Backtest(folds)


# -- champion / challenger --------------------------------------------------------------------------

def auc_difference(y: np.ndarray, new: np.ndarray, old: np.ndarray, groups: np.ndarray, n: int,
                   seed: int) -> tuple[float, float, float]:
    """ROC-AUC(new) - ROC-AUC(old) with a paired bootstrap over leads (a lead's rows at several cutoffs move together)."""
    diff = float(roc_auc_score(y, new) - roc_auc_score(y, old))
    aucs = lead_bootstrap_aucs(y, [new, old], groups, n, seed)
    if aucs.size == 0:
        return diff, float("nan"), float("nan")
    low, high = np.quantile(aucs[:, 0] - aucs[:, 1], [0.025, 0.975])
    return diff, float(low), float(high)


def quarters_without_conversions(leads: pd.DataFrame, through: pd.Timestamp) -> list[str]:
    """Full quarters before ``through``, from the first with a conversion on, in which nobody converted."""
    converted = leads[CONVERTED_AT].dropna()
    if converted.empty:
        return []
    counts = converted.dt.to_period("Q").value_counts()
    last = (through - pd.Timedelta(days=1)).to_period("Q")
    if last.end_time >= through:  # the quarter of the day before ``through`` is not over yet
        last -= 1
    quarters = pd.period_range(counts.index.min(), last, freq="Q") if last >= counts.index.min() else []
    return [str(q) for q in quarters if counts.get(q, 0) == 0]


def _new_quarter(scorer: LeadScorer, leads: pd.DataFrame, interactions: pd.DataFrame, through: pd.Timestamp,
                 frequency: str) -> pd.DataFrame:
    """Features (by ``scorer``'s spec) of the leads eligible at each cutoff of the quarter before ``through``."""
    cutoffs = cutoff_dates(leads, through, frequency)
    cutoffs = cutoffs[(cutoffs >= through - QUARTER) & (cutoffs < through)]
    parts = [eligible_leads(leads, c)[[LEAD_ID]].assign(cutoff=c) for c in cutoffs]
    snaps = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({LEAD_ID: [], "cutoff": []})
    snaps = drop_lost(snaps, loss_spells(leads, interactions, scorer.spec.loss_rules))
    if snaps.empty:
        return pd.DataFrame()
    return build_training_frame(snaps.assign(label=np.nan), leads, interactions, scorer.spec)


def challenger_gates(m: dict[str, float], trained_rate: float, g: Retrain) -> list[Gate]:
    """The challenger's own gates on the window: plausible conversion rate, ranking, calibration, buckets."""
    ratio = m["positive_rate"] / trained_rate if trained_rate > 0 else np.inf
    gates = [
        Gate("conversion rate plausible", 1 / g.max_label_rate_ratio <= ratio <= g.max_label_rate_ratio,
             f"{m['positive_rate']:.2%} in the window vs {trained_rate:.2%} in training "
             f"(x{ratio:.2f}, allowed x{1 / g.max_label_rate_ratio:.2f}..x{g.max_label_rate_ratio:.2f})"),
        Gate("ROC-AUC floor", m["roc_auc"] >= g.min_auc, f"challenger ROC-AUC {m['roc_auc']:.3f} (need >= {g.min_auc:.3f})"),
    ]
    if g.beat_thermometer and "thermometer_constant" in m:
        gates.append(Gate("thermometer", True, not_applicable_reason(m["thermometer_constant"], int(m["rows"]),
                                                                     "snapshots of the window"), applicable=False))
    elif g.beat_thermometer and "thermometer_roc_auc" in m:
        gates.append(Gate("beats the thermometer", m["roc_auc"] > m["thermometer_roc_auc"],
                          f"ROC-AUC {m['roc_auc']:.3f} vs thermometer baseline {m['thermometer_roc_auc']:.3f}"))
    gates.append(Gate("calibrated", m["ece"] <= g.max_ece, f"ECE {m['ece']:.4f} (need <= {g.max_ece})"))
    if g.bucket_order:
        rates = [m[f"{b}_rate"] for b in BUCKETS]
        gates.append(Gate("buckets ordered", rates[0] > rates[1] > rates[2],
                          "conversion hot {:.1%} > warm {:.1%} > cold {:.1%}".format(*rates)))
    return gates


def _compare_with_champion(report: RetrainReport, champion: LeadScorer, mine: pd.DataFrame, leads: pd.DataFrame,
                           interactions: pd.DataFrame, params: Params) -> None:
    """Both models on the same window rows: the AUC difference, the champion's gates and the drift report."""
    g, m, through, window = params.retrain, report.challenger_metrics, report.through, report.window
    theirs = score_window(champion, leads, interactions, window, through)
    keys = [LEAD_ID, "cutoff"]
    paired = mine[keys + ["label", "probability"]].merge(theirs[keys + ["probability"]], on=keys,
                                                         suffixes=("", "_champion"), validate="one_to_one")
    report.champion_metrics = c = window_metrics(theirs)
    report.auc_difference = auc_difference(paired["label"].to_numpy(), paired["probability"].to_numpy(),
                                           paired["probability_champion"].to_numpy(), paired[LEAD_ID].to_numpy(),
                                           g.bootstrap, params.model.seed)
    report.gates.append(Gate("not worse than the champion", m["roc_auc"] >= c["roc_auc"] - g.max_auc_drop,
                             f"ROC-AUC {m['roc_auc']:.3f} vs champion {c['roc_auc']:.3f} "
                             f"(may be at most {g.max_auc_drop:.3f} lower)"))
    # Labels dealt to the wrong leads break the window too, so comparing on it proves nothing; what
    # shows it is the champion, sound at its own test, suddenly ranking no better than chance.
    if (own := champion.meta.get("test_roc_auc")) is not None:
        held = c["roc_auc"] >= own - g.max_champion_auc_drop
        report.gates.append(Gate("champion has not collapsed", held,
                                 f"champion ROC-AUC {c['roc_auc']:.3f} on the window vs {own:.3f} on its own test "
                                 f"(may drop at most {g.max_champion_auc_drop:.2f})" + ("" if held else
                                 ": broken data (labels dealt to the wrong leads?) or a world turned over; "
                                 "check the data before switching")))
    else:
        report.notes.append("the champion has no test ROC-AUC on record (trained by an older leadtemp): "
                            "its collapse is not checked")
    mine_profile, their_profile = report.challenger.scorer.meta["profile"], champion.meta.get("profile")
    if their_profile is None:
        report.notes.append("the champion has no training profile (trained by an older leadtemp): no drift report")
        return
    constant = [name for name, f in mine_profile["features"].items()
                if f["distinct"] <= 1 and their_profile["features"].get(name, {}).get("distinct", 0) > 1]
    report.gates.append(Gate("no feature went constant", not constant,
                             f"constant in the challenger's training data but not in the champion's: {constant}"
                             if constant else "every feature that varied for the champion still varies"))
    new = _new_quarter(champion, leads, interactions, through, params.snapshots.frequency)
    if not new.empty:
        margin = champion.margin(new)
        assigned = champion.buckets.assign(champion.calibrator(margin))
        report.drift = drift_report(their_profile, feature_matrix(new, champion.spec), champion.spec.columns,
                                    m["positive_rate"], bucket_shares(assigned),
                                    params.drift.psi_warn, params.drift.psi_alert)


def _same_cadence(params: Params, champion: LeadScorer | None, leads: pd.DataFrame, through: pd.Timestamp) -> Params:
    """Concrete horizon and frequency for a challenger: the champion's, so both predict the same thing and are
    judged on the same snapshots; without a champion, what the known history supports (core/cadence.py)."""
    if champion is not None:  # a champion trained before the cadence was recorded used monthly cutoffs
        frequency = (champion.meta.get("cadence") or {}).get("frequency", "MS")
        params = params.replace(snapshots={"horizon_days": champion.horizon_days, "frequency": frequency})
    return resolve_cadence(leads, pd.Timestamp(through), params).apply(params)


def retrain(leads: pd.DataFrame, interactions: pd.DataFrame, params: Params, through: pd.Timestamp,
            champion: LeadScorer | None = None, champion_version: str | None = None) -> RetrainReport:
    """Train a challenger with the data known at ``through``, compare it with the champion, apply the gates.

    Returns the whole story (metrics of both, AUC difference, drift, every gate with its numbers);
    promoting is the caller's move. Bad data for the challenger (a slice without conversions) is a
    failed gate, not an error: the champion stays.
    """
    _require_events(params, "retrain")
    through = pd.Timestamp(through)
    end = observed_until(leads, interactions, params.snapshots.observed_until)
    if through > end.normalize() + pd.Timedelta(days=1):  # the day after the last day with data is fine
        raise ConfigError(f"--through {through:%Y-%m-%d} is after the end of the data ({end:%Y-%m-%d}): "
                          "leads not yet converted there would count as never converting")
    leads, interactions = known_at(leads, interactions, through)
    params = _same_cadence(params, champion, leads, through)
    g = params.retrain
    report = RetrainReport(through, None, champion_version)
    if missing := quarters_without_conversions(leads, through):
        report.gates.append(Gate("conversions every quarter", False,
                                 f"no conversions recorded in {', '.join(missing)}: conversions missing from the data?"))
        return report
    report.gates.append(Gate("conversions every quarter", True, "every full quarter has conversions"))
    try:
        result = train(leads, interactions, params.replace(snapshots={"observed_until": str(through)}))
    except TrainingDataError as exc:
        report.gates.append(Gate("challenger trained", False, str(exc)))
        return report
    report.challenger = result
    # The window is the periodic test cutoffs: creation snapshots (snapshots.at_creation) fall on almost every
    # day, and scoring the champion there would rebuild features per date for little evidence.
    test = result.test.loc[result.test["snapshot"] == "periodic"] if "snapshot" in result.test.columns else result.test
    window = pd.DatetimeIndex(sorted(test["cutoff"].unique()))
    if champion is not None:
        fitted_until = pd.Timestamp(champion.meta["trained_through"])
        window = window[window >= fitted_until]
        if window.empty:
            report.gates.append(Gate("window unseen by the champion", False,
                                     f"the champion was fitted on labels up to {fitted_until:%Y-%m-%d}, after the "
                                     f"challenger's test cutoffs: retrain --through a later date"))
            return report
    report.window = window
    mine = test.loc[test["cutoff"].isin(window)].reset_index(drop=True)
    conversions = int(mine["label"].sum())
    enough = g.min_conversions <= conversions < len(mine)
    report.gates.append(Gate("enough conversions", enough,
                             f"{conversions} conversions among {len(mine):,} snapshots in the window "
                             f"(need {g.min_conversions})"))
    if not enough:
        return report
    report.challenger_metrics = m = window_metrics(mine)
    report.gates += challenger_gates(m, result.scorer.meta["profile"]["label_rate"], g)
    if champion is None:
        report.notes.append("no champion yet: the challenger is judged by its own gates")
        return report

    _compare_with_champion(report, champion, mine, leads, interactions, params)
    return report
