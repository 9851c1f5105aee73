"""Train: checks, slices, features, then a fitted scorer and its test metrics. No I/O: MLflow is adapters/tracking.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadtemp.core.cadence import MIN_CONVERSIONS, Cadence, resolve_cadence
from leadtemp.core.checks import (
    check_amount,
    check_identifiers,
    check_leakage,
    check_terminal_stages,
    context_columns,
    leakage_report,
)
from leadtemp.core.config import AUTO, Params, Retrain
from leadtemp.core.errors import TrainingDataError
from leadtemp.core.features import FeatureSpec, attribute_features, build_training_frame, fit_feature_spec
from leadtemp.core.lifecycle import LossRules, loss_spells
from leadtemp.core.metrics import (
    BUCKETS,
    auc_interval,
    bucket_table,
    chance_ece,
    classification_metrics,
    lead_auc_interval,
    ranking_metrics,
    within_period_auc,
)
from leadtemp.core.referrals import outside_referrers
from leadtemp.core.schema import CONVERTED_AT, CREATED_AT, LABEL, LEAD_ID, LOST_AT, REFERRED_BY, empty_interactions
from leadtemp.core.snapshots import (
    build_snapshots,
    creation_snapshots,
    cutoff_dates,
    observed_until,
    slices_of_times,
    split_cutoffs,
)
from leadtemp.core.vocabulary import thermometer_not_applicable, vocabulary_notes
from leadtemp.modelling.fit import fit_scorer, fit_scorer_cross_fitted, fit_scorer_rolling
from leadtemp.modelling.horizons import fit_horizons, horizon_metrics, timing
from leadtemp.modelling.results import Gate, RowSplits, TrainingResult
from leadtemp.modelling.scorer import LeadScorer

SLICES = ("train", "validation", "calibration", "test")


def _check_slice(name: str, frame: pd.DataFrame) -> None:
    positives = int(frame["label"].sum())
    if len(frame) == 0 or positives in (0, len(frame)):
        raise TrainingDataError(
            f"the {name} slice ({len(frame)} snapshots, {positives} converted) needs both converted and "
            "not-converted leads; give more history or change splits in params.yaml"
        )


def fingerprint(leads: pd.DataFrame, interactions: pd.DataFrame, frame: pd.DataFrame,
                until: pd.Timestamp | None, source_hashes: dict[str, str]) -> dict:
    """What the run was trained on, without personal data: counts, time range, rates, input hashes.

    ``source_hashes``: SHA-256 of each input file by role ("leads", "interactions"), from the caller.
    """
    converted = leads[LABEL].astype(float) if LABEL in leads.columns else leads["converted_at"].notna()
    out = {
        "leads": len(leads), "interactions": len(interactions),
        "created_from": str(leads["created_at"].min()), "observed_until": str(until),
        "lead_conversion_rate": float(converted.mean()),
        "snapshots": len(frame), "snapshot_positive_rate": float(frame["label"].mean()),
        "lead_columns": sorted(map(str, leads.columns)),
    }
    for name, group in frame.groupby("slice", sort=False):
        out[f"{name}_snapshots"] = len(group)
        out[f"{name}_positive_rate"] = float(group["label"].mean())
    out.update({f"sha256_{k}": v for k, v in source_hashes.items()})
    return out


def unused_columns(leads: pd.DataFrame, params: Params) -> list[str]:
    """Input columns in no role at all: said out loud, so a forgotten attribute is noticed."""
    d = params.data
    known = {LEAD_ID, CREATED_AT, CONVERTED_AT, LABEL, LOST_AT, *d.categorical, *d.numeric, *d.excluded,
             *([REFERRED_BY] if d.columns.referred_by else []),
             *(c for c in vars(d.columns).values() if c)}
    if d.created_from_row_order is not None:
        known.add(d.created_from_row_order.month_column)
    return [str(c) for c in leads.columns if c not in known]


def referral_notes(leads: pd.DataFrame) -> list[str]:
    """What the referral features will see: how many leads name a referrer, and how many of those referrers the
    table does not hold (outside customers: referred, history unknown; nothing is guessed about them)."""
    named = int(leads[REFERRED_BY].notna().sum())
    outside = outside_referrers(leads)
    if not named:
        return ["data.columns.referred_by: no lead names a referrer; the referral features are all 0"]
    return [f"referrals: {named:,} leads name a referrer; {outside:,} of them one not in the leads table (an outside "
            "customer: counted as referred, with no history)"] if outside else []


def _missing_share(train: pd.DataFrame, spec: FeatureSpec) -> dict[str, float]:
    """Share of the training rows without each attribute: scoring warns when many more leads lack it."""
    return {c: round(float(train[c].isna().mean()), 4) for c in [*spec.categorical, *spec.numeric]}


def _evaluate(scorer: LeadScorer, parts: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, float]]:
    """Test-slice metrics; the scorer keeps its test ROC-AUC, so a later retrain can tell if it collapsed."""
    test = parts["test"]
    margin = scorer.margin(test)
    test = test.assign(margin=margin, raw_probability=1 / (1 + np.exp(-margin)),
                       probability=scorer.calibrator(margin))
    test["bucket"] = scorer.buckets.assign(test["probability"])
    metrics = classification_metrics(test["label"], test["probability"])
    raw = classification_metrics(test["label"], test["raw_probability"])
    metrics.update({f"raw_{k}": raw[k] for k in ("roc_auc", "ece", "brier", "log_loss")})
    if "thermometer_score" in test.columns and thermometer_not_applicable(test["thermometer_score"], "") is None:
        metrics["thermometer_roc_auc"] = ranking_metrics(test["label"], test["thermometer_score"])["roc_auc"]
    if "snapshot" in test.columns:  # snapshots: pooled metrics of each kind, and ranking within each periodic cutoff
        periodic = test["snapshot"].to_numpy() == "periodic"
        metrics["within_cutoff_roc_auc"] = within_period_auc(test["label"].to_numpy()[periodic],
                                                             test["margin"].to_numpy()[periodic],
                                                             test["cutoff"].to_numpy()[periodic])
        for kind in ("periodic", "creation"):
            part = test.loc[test["snapshot"] == kind]
            if 0 < part["label"].sum() < len(part):
                m = classification_metrics(part["label"], part["probability"])
                metrics.update({f"{kind}_{k}": m[k] for k in ("roc_auc", "ece", "rows", "positive_rate")})
    elif CREATED_AT in test.columns and test[CREATED_AT].notna().all():  # a timed label table: within each month
        metrics["within_month_roc_auc"] = within_period_auc(test["label"].to_numpy(), test["margin"].to_numpy(),
                                                            test[CREATED_AT].dt.to_period("M").astype(str).to_numpy())
    metrics["best_iteration"] = float(scorer.booster.current_iteration())
    metrics["validation_roc_auc"] = scorer.meta["validation_roc_auc"]
    scorer.meta["test_roc_auc"] = metrics["roc_auc"]
    return test, metrics


def ship_gates(test: pd.DataFrame, metrics: dict[str, float], buckets: pd.DataFrame, scorer: LeadScorer | None = None,
               resamples: int = Retrain.bootstrap, seed: int = 0, max_ece: float | None = None) -> list[Gate]:
    """What a newly trained model must show on its test slice before it may become champion.

    A model that fails is still logged and registered (so it can be inspected), never given the
    alias: a constant model, one that ranks no better than chance, one that loses to the
    thermometer rule the sales team already has, or buckets that do not separate. ``scorer`` (its
    calibrator and cut-offs) lets the bucket gate look past the test slice; ``resamples`` and
    ``seed``: the lead-clustered bootstrap of the ROC-AUC interval (``retrain.bootstrap``, ``model.seed``).
    """
    y = test["label"].to_numpy()
    positives = int(y.sum())
    # Distinct calibrated probabilities: two margins the calibrator maps to one probability still score every lead alike.
    distinct = np.unique(test["probability" if "probability" in test.columns else "margin"].to_numpy()).size
    gates = [Gate("not a constant model", distinct > 1,
                  f"{distinct} distinct probabilit{'y' if distinct == 1 else 'ies'} on {len(y):,} test rows" + ("" if distinct > 1 else
                  ": the booster learned nothing; give more conversions (or more history) to learn from"))]
    low, high, how = ranking_interval(test, metrics["roc_auc"], resamples, seed)
    gates.append(Gate("ranks better than chance", low > 0.5,
                      f"test ROC-AUC {metrics['roc_auc']:.3f} (95% interval {low:.3f}..{high:.3f}, {how}; "
                      f"{positives:,} conversions)" + ("" if low > 0.5 else
                      ": no evidence the model ranks leads; more conversions or more informative attributes would help")))
    if "thermometer_score" in test.columns:
        gates.append(thermometer_gate(test["thermometer_score"], metrics, "test"))
    gates.append(buckets_gate(buckets, scorer))
    if max_ece is not None:  # the scores are percentages a rep reads: they must hold on the newest data
        chance = chance_ece(test["probability"].to_numpy(), seed=seed)
        ok = metrics["ece"] - chance <= max_ece
        gates.append(Gate("probabilities hold on the test slice", ok,
                          f"test ECE {metrics['ece']:.3f}; calibrated probabilities reach {chance:.3f} by chance on "
                          f"{len(test):,} rows (95%), and the rest may be at most {max_ece:.3f} (test conversion "
                          f"{metrics['positive_rate']:.1%})" + ("" if ok else
                          ": the calibrated chances are off by that much on average on the newest labelled data "
                          "(its conversion rate moved?); the ranking may still hold, but the scores do not mean "
                          "what they say: retrain when newer labels are in")))
    return gates


def thermometer_gate(scores: pd.Series, metrics: dict[str, float], where: str) -> Gate:
    """The model against the thermometer rule, or "not applicable (why)" when the rule ranks nobody here."""
    if (why := thermometer_not_applicable(scores, f"{where} rows")) is not None or "thermometer_roc_auc" not in metrics:
        return Gate("thermometer", True, why or "not applicable (no thermometer score)", applicable=False)
    return Gate("beats the thermometer", metrics["roc_auc"] > metrics["thermometer_roc_auc"],
                f"{where} ROC-AUC {metrics['roc_auc']:.3f} vs thermometer rule {metrics['thermometer_roc_auc']:.3f}")


def ranking_interval(test: pd.DataFrame, auc: float, resamples: int, seed: int) -> tuple[float, float, str]:
    """95% interval of the test ROC-AUC, and how it was found.

    A lead's snapshots at several cutoffs are correlated, so the leads, not the rows, are resampled
    (a one-row-per-lead table: the ordinary bootstrap); Hanley & McNeil over the rows would count
    each snapshot as new evidence. With ``resamples`` 0: Hanley & McNeil on the number of distinct
    converted and non-converted leads, a cheaper approximation that still counts leads, not rows.
    """
    y = test["label"].to_numpy()
    leads = test[LEAD_ID].to_numpy() if LEAD_ID in test.columns else np.arange(len(test))
    score = test["probability"] if "probability" in test.columns else test["margin"]
    n_leads = pd.unique(leads).size
    if resamples > 0:
        low, high = lead_auc_interval(y, score.to_numpy(), leads, resamples, seed)
        if not np.isnan(low):
            return low, high, f"bootstrap of {n_leads:,} leads, {resamples} resamples"
    converted = pd.unique(leads[y == 1]).size
    low, high = auc_interval(auc, converted, pd.unique(leads[y == 0]).size)
    return low, high, f"Hanley-McNeil on {n_leads:,} leads"


def buckets_gate(buckets: pd.DataFrame, scorer: LeadScorer | None = None) -> Gate:
    """Buckets separate: every bucket can hold leads and holds some, on the calibration and the test slice; hot > cold.

    A cut-off on the calibrator's floor (or past its ceiling) leaves a bucket empty for every lead
    ever scored, whatever the test slice shows; ``scorer`` (when given) lets the gate see it, and the
    calibration slice's shares (where the cut-offs were fitted, kept in the model's profile).
    """
    rows = buckets.set_index("bucket")
    problems = []
    shares = {}
    if scorer is not None:
        low, high = scorer.calibrator.bounds()
        cut = scorer.buckets
        for name, value in (("warm", cut.warm), ("hot", cut.hot)):
            if value <= low:
                problems.append(f"the {name} cut-off {value:.4g} is at the calibrator's lowest probability {low:.4g}, "
                                f"so no lead can ever be {'cold' if name == 'warm' else 'warm or cold'}")
            elif value > high:
                problems.append(f"the {name} cut-off {value:.4g} is above the calibrator's highest probability {high:.4g}, "
                                f"so no lead can ever be {name}" + (" or hot" if name == "warm" else ""))
        shares = scorer.meta.get("profile", {}).get("bucket_shares", {})
        if empty := [b for b in BUCKETS if b in shares and shares[b] == 0]:
            problems.append(f"empty on the calibration slice (where the cut-offs were fitted): {', '.join(empty)}")
    if empty := [b for b in BUCKETS if rows.loc[b, "leads"] == 0]:
        problems.append(f"empty on the test slice: {', '.join(empty)}")
    fitted = "calibration slice " + ", ".join(f"{b} {shares[b]:.1%}" for b in BUCKETS if b in shares) if shares else ""
    if problems:
        return Gate("buckets separate", False, "; ".join(problems) + (f" ({fitted})" if fitted else "") + ": "
                    + _buckets_advice(scorer))
    hot, cold = rows.loc[BUCKETS[0], "rate"], rows.loc[BUCKETS[-1], "rate"]
    return Gate("buckets separate", hot > cold, (f"{fitted}; " if fitted else "") + f"test conversion hot {hot:.1%} vs cold {cold:.1%}"
                + ("" if hot > cold else ": hot leads convert no more than cold ones"))


def _buckets_advice(scorer: LeadScorer | None) -> str:
    """What helps when the buckets do not separate, for the cut-offs and the calibrator this model has."""
    cut = scorer.buckets if scorer is not None else None
    if cut is not None and cut.method == "probability":
        return (f"the fixed cut-offs (buckets.hot_probability {cut.hot:g}, buckets.warm_probability {cut.warm:g}) do not "
                "fit this data's probabilities; move them to where its leads lie, or use buckets.method: share (the top "
                "hot_share of the calibration slice hot, the next warm_share warm)")
    isotonic = scorer is None or scorer.calibrator.method == "isotonic"
    return ("the calibrated probabilities do not spread over three buckets"
            + (" (an isotonic calibrator gives every lead below its lowest step one probability)" if isotonic else "")
            + "; a longer horizon or more conversions give the model more to tell leads apart, or set fixed cut-offs "
            "(buckets.method: probability) between its lowest and highest probability")


def _slices(frame: pd.DataFrame, leads: pd.DataFrame, spec: FeatureSpec, params: Params,
            names: tuple[str, ...] = SLICES) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, list[str]]:
    """The frame cut by its ``slice`` column, each slice checked, the training slice checked for leakage.

    Returns the slices, the leakage report and the notes the user must hear (allowed leaky columns,
    columns in no role).
    """
    parts = {name: frame.loc[frame["slice"] == name].reset_index(drop=True) for name in names}
    for name, part in parts.items():
        _check_slice(name, part)
    leakage = leakage_report(parts["train"], [*spec.categorical, *spec.numeric, *spec.funnel_features],
                             seed=params.model.seed)
    allowed = check_leakage(leakage, params.checks)
    notes = [f"column '{c}' alone predicts the label with AUC {a:.3f} on the training slice; "
             "used only because checks.allow_leaky lists it"
             for c, a in leakage.loc[leakage["column"].isin(allowed)].itertuples(index=False)]
    if unused := unused_columns(leads, params):
        notes.append(f"columns in no role (not categorical, numeric or excluded), not used: {unused}")
    if spec.referral_columns:
        notes += referral_notes(leads)
    pool = parts["train"].drop_duplicates(LEAD_ID) if LEAD_ID in parts["train"].columns else parts["train"]
    if context := context_columns(pool, [*params.data.categorical, *params.data.numeric], _creation_month(pool, leads),
                                  params.data.categorical):
        notes.append(CONTEXT_NOTE.format(", ".join(f"'{c}' ({v:.0%})" for c, v in context.items())))
    return parts, leakage, notes


CONTEXT_NOTE = ("columns that describe the month more than the lead (share of their variation between creation months): "
                "{}. The model learns each past month's conversion level from them, and a new month may bring values "
                "it never saw, so its level there is a guess: the calibrator, fitted on the newest labelled "
                "data, sets the level, and the gate 'probabilities hold on the test slice' checks it. They cannot rank "
                "leads of the same day against each other; if they are not meant to describe the lead, list them in "
                "data.excluded")


def _creation_month(rows: pd.DataFrame, leads: pd.DataFrame) -> np.ndarray:
    """Each row's lead creation month (the period a lead attribute belongs to)."""
    created = rows[CREATED_AT] if CREATED_AT in rows.columns else rows[LEAD_ID].map(
        leads.drop_duplicates(LEAD_ID).set_index(LEAD_ID)[CREATED_AT])
    return pd.to_datetime(created).dt.to_period("M").astype(str).where(created.notna()).to_numpy()


def train(leads: pd.DataFrame, interactions: pd.DataFrame, params: Params,
          source_hashes: dict[str, str] | None = None, holdout: np.ndarray | None = None) -> TrainingResult:
    """Checks → slices → features → booster → calibrator → bucket cut-offs → test metrics.

    Tables with conversion times are cut into point-in-time snapshots (``auto`` horizon, frequency and
    slice sizes resolved from the history first: core/cadence.py); tables with a final label
    (``data.columns.label``) are one row per lead. ``holdout`` (label tables only): a boolean mask of
    the rows to use as the test slice, e.g. one fold of a cross-validation.
    """
    if params.data.mode == "labels":
        return _train_label_table(leads, params, source_hashes or {}, holdout)
    if holdout is not None:
        raise ValueError("holdout applies to tables with a label column; snapshots are split by time")
    check_terminal_stages(params.events)  # a won or lost stage is never a feature
    until = observed_until(leads, interactions, params.snapshots.observed_until)
    cadence = resolve_cadence(leads, until, params)
    params = cadence.apply(params)
    rules = LossRules.of(params)  # lost leads are not at risk (core/lifecycle.py); None: the data cannot say
    spells = loss_spells(leads, interactions, rules) if rules is not None else None
    if params.splits.method == "chain":
        return _train_chain(leads, interactions, params, until, source_hashes or {}, rules, spells)
    return _train_rolling(leads, interactions, params, until, cadence, source_hashes or {}, rules, spells)


def _snapshots(leads: pd.DataFrame, used: pd.DatetimeIndex, slice_of, params: Params, until: pd.Timestamp,
               spells: pd.DataFrame | None) -> pd.DataFrame:
    """Periodic snapshots at ``used`` and (``snapshots.at_creation``) creation snapshots, each with its slice;
    snapshots ``slice_of`` leaves out (embargoed, censored) are dropped, and so are leads lost at their cutoff."""
    h = params.snapshots.horizon_days
    snaps = build_snapshots(leads, used, h, until, spells=spells).assign(snapshot="periodic")
    snaps = snaps.assign(slice=slice_of(snaps["cutoff"]))
    if params.snapshots.at_creation:
        created = creation_snapshots(leads, h, until, skip=used, spells=spells)
        created = created.assign(snapshot="creation", slice=slice_of(created["cutoff"]))
        snaps = pd.concat([snaps, created.loc[created["slice"] != ""]], ignore_index=True)
    snaps = snaps.loc[snaps["slice"] != ""].reset_index(drop=True)
    check_amount(snaps[LEAD_ID].nunique(), snaps.loc[snaps["label"] == 1, LEAD_ID].nunique(), params.checks)
    return snaps


def _train_rolling(leads: pd.DataFrame, interactions: pd.DataFrame, params: Params, until: pd.Timestamp,
                   cadence: Cadence, source_hashes: dict[str, str], rules: LossRules | None,
                   spells: pd.DataFrame | None) -> TrainingResult:
    """The test slice is the newest cutoffs; the pool before it (labels observed before the test) feeds the
    rolling-origin folds, the final booster and the calibrator (modelling/select.py)."""
    splits = cadence.splits
    labelled = cutoff_dates(leads, until, params.snapshots.frequency)
    labelled = labelled[labelled + splits.horizon <= until]
    used = labelled[splits.slice_of(labelled, until) != ""]
    # Categories and channels are learned from what the last pool snapshot could see.
    before = splits.trained_through - splits.horizon
    check_identifiers(leads.loc[leads[CREATED_AT] < before], params.data.categorical, params.data.numeric)
    spec = fit_feature_spec(leads, interactions, params.features, params.data.categorical, params.data.numeric,
                            before=before, lifecycle=rules, events=params.events,
                            referrals=params.data.columns.referred_by is not None)
    snaps = _snapshots(leads, used, lambda t: splits.slice_of(t, until), params, until, spells)
    frame = build_training_frame(snaps, leads, interactions, spec)
    parts, leakage, notes = _slices(frame, leads, spec, params, names=("train", "test"))
    notes += vocabulary_notes(interactions, params.features, params.events, leads)
    pool = parts["train"]
    period = pool["cutoff"].where(pool["snapshot"] == "periodic").to_numpy()  # within-cutoff: the periodic rows
    scorer, selection = fit_scorer_rolling(pool, splits.fold_masks(pool["cutoff"]), period, spec, params, {
        "trained_through": str(splits.trained_through), "observed_until": str(until), "splits": splits.describe(),
        "missing_share": _missing_share(parts["train"], spec),
        "cadence": {"horizon_days": cadence.horizon_days, "frequency": cadence.frequency,
                    "test_cutoffs": cadence.test_cutoffs, "fold_cutoffs": cadence.fold_cutoffs}})
    when_notes = []
    if params.when.horizons_days:  # when, not only if: a booster per other horizon, on the same rows and rules
        fresher = _short_horizon_rows(leads, interactions, spec, params, splits, until, spells)
        fitted = fit_horizons(pd.concat([pool, fresher, parts["test"]], ignore_index=True), leads, splits, until, spec,
                              params, selection, params.when.horizons_days)
        scorer.timing_days, scorer.horizon_models, when_notes = fitted.horizons, fitted.models, fitted.notes
        scorer.meta["when"] = {str(h): f for h, f in fitted.facts.items()}
    test, metrics = _evaluate(scorer, parts)
    metrics.update(selection.metrics)
    if scorer.timing_days:
        curve = timing(scorer.horizon_models, scorer.horizon_days, scorer.timing_days, test, spec,
                       test["probability"].to_numpy())
        test = pd.concat([test, curve], axis=1)
        metrics.update(horizon_metrics(test, leads, curve, scorer.timing_days, until))
    buckets = bucket_table(test["label"], test["bucket"])
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics, buckets=buckets,
        fingerprint=fingerprint(leads, interactions, frame, until, source_hashes),
        leakage=leakage, warnings=[*cadence.notes, *selection.notes, *notes, *when_notes],
        gates=ship_gates(test, metrics, buckets, scorer, params.retrain.bootstrap, params.model.seed,
                         params.retrain.max_ece) + fold_gates(metrics),
    )


def _short_horizon_rows(leads: pd.DataFrame, interactions: pd.DataFrame, spec: FeatureSpec, params: Params,
                        splits, until: pd.Timestamp, spells: pd.DataFrame | None) -> pd.DataFrame:
    """Snapshots only the horizons shorter than the main one may learn from: taken after the main pool's last
    cutoff (whose main label ends by the first test cutoff) and whose shortest-horizon label still ends by it.

    Without them a 7-day booster under a 90-day main horizon would learn nothing from the last 83 days before
    the test; ``fit_horizons`` keeps, per horizon, those whose label window ends by the first test cutoff.
    """
    short = [h for h in params.when.horizons_days if h < splits.horizon_days]
    if not short:
        return pd.DataFrame()
    h, test_from = min(short), splits.test.min()
    after = test_from - splits.horizon

    def inside(times) -> np.ndarray:
        t = pd.DatetimeIndex(times)
        return np.asarray((t > after) & (t + pd.Timedelta(days=h) <= test_from))

    cutoffs = cutoff_dates(leads, until, params.snapshots.frequency)
    cutoffs = cutoffs[inside(cutoffs)]
    snaps = build_snapshots(leads, cutoffs, h, until, spells=spells).assign(snapshot="periodic")
    if params.snapshots.at_creation:
        created = creation_snapshots(leads, h, until, skip=cutoffs, spells=spells).assign(snapshot="creation")
        snaps = pd.concat([snaps, created.loc[inside(created["cutoff"])]], ignore_index=True)
    if snaps.empty:
        return pd.DataFrame()
    return build_training_frame(snaps.assign(slice="train"), leads, interactions, spec)


LABEL_TABLE_HORIZON = 90  # days: a label-table model's "current for" window (period warnings at scoring)
LOGISTIC_TOLERANCE = 0.01  # within-cutoff ROC-AUC a plain logistic regression may lead by on the folds (noise)


def fold_gates(metrics: dict[str, float]) -> list[Gate]:
    """Gates measured on the rolling-origin folds, evidence independent of the test slice: the model ranks better
    than chance there too (a model of noise passes the test slice's gate one time in forty; both at once, far
    more rarely), and at least as well as a plain logistic regression on the same features (the family choice
    makes this a safety net, rarely hit)."""
    mine, logistic = metrics["folds_roc_auc"], metrics["folds_logistic_roc_auc"]
    low, high = metrics["folds_auc_low"], metrics["folds_auc_high"]
    return [Gate("ranks better than chance on the folds", low > 0.5,
                 f"out-of-fold ROC-AUC 95% interval {low:.3f}..{high:.3f} on {int(metrics['folds'])} fold(s)"
                 + ("" if low > 0.5 else ": the folds show no evidence the model ranks leads; more conversions or "
                                        "more informative attributes would help")),
            Gate("no worse than a logistic regression", mine >= logistic - LOGISTIC_TOLERANCE,
                 f"within-cutoff ROC-AUC on the {int(metrics['folds'])} fold(s): {mine:.3f} vs logistic regression "
                 f"{logistic:.3f}" + ("" if mine >= logistic - LOGISTIC_TOLERANCE else
                                      ": the boosted model loses to a linear one; more history would help"))]


def _train_chain(leads: pd.DataFrame, interactions: pd.DataFrame, params: Params, until: pd.Timestamp,
                 source_hashes: dict[str, str], rules: LossRules | None, spells: pd.DataFrame | None) -> TrainingResult:
    """``splits.method: chain``: train < validation < calibration < test, two embargoes of one horizon."""
    s = params.snapshots
    labelled = [c for c in cutoff_dates(leads, until, s.frequency) if c + pd.Timedelta(days=s.horizon_days) <= until]
    splits = split_cutoffs(pd.DatetimeIndex(labelled), s.horizon_days, params.splits.test_cutoffs,
                           params.splits.calibration_cutoffs, params.splits.validation_cutoffs)
    # The categories are learned from the leads created before the last validation cutoff: judged there.
    check_identifiers(leads.loc[leads[CREATED_AT] < splits.validation.max()], params.data.categorical,
                      params.data.numeric)
    spec = fit_feature_spec(leads, interactions, params.features, params.data.categorical,
                            params.data.numeric, before=splits.validation.max(), lifecycle=rules, events=params.events,
                            referrals=params.data.columns.referred_by is not None)
    used = splits.train.append([splits.validation, splits.calibration, splits.test])

    def slice_of(times: pd.Series) -> np.ndarray:
        """A periodic cutoff's slice is the one it was split into; any other time's, the one its range falls in."""
        periodic = np.select([times.isin(getattr(splits, n)) for n in SLICES], SLICES, "")
        return np.where(times.isin(used), periodic, slices_of_times(times, splits, s.horizon_days, until))

    snaps = _snapshots(leads, used, slice_of, params, until, spells)
    frame = build_training_frame(snaps, leads, interactions, spec)
    parts, leakage, notes = _slices(frame, leads, spec, params)
    notes += vocabulary_notes(interactions, params.features, params.events, leads)

    if params.when.horizons_days:
        notes.append("when.horizons_days: p_<h>d and expected_days are fitted with splits.method rolling only; "
                     "this model scores without them")
    scorer = fit_scorer(parts, spec, params, {
        "trained_through": str(splits.calibration.max() + pd.Timedelta(days=s.horizon_days)),
        "observed_until": str(until), "splits": splits.describe(), "missing_share": _missing_share(parts["train"], spec)})
    test, metrics = _evaluate(scorer, parts)
    buckets = bucket_table(test["label"], test["bucket"])
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics, buckets=buckets,
        fingerprint=fingerprint(leads, interactions, frame, until, source_hashes),
        leakage=leakage, warnings=notes,
        gates=ship_gates(test, metrics, buckets, scorer, params.retrain.bootstrap, params.model.seed, params.retrain.max_ece),
    )


NO_TIME_WARNING = (
    "NO OUT-OF-TIME CHECK: the table has no time column, so the slices are stratified random samples. "
    "The test metrics say how well the model fits leads like the ones it was trained on, not how it will do "
    "on next quarter's leads. Add a creation time (data.columns.created_at) to measure that."
)


def row_slices(leads: pd.DataFrame, params: Params, holdout: np.ndarray | None = None) -> tuple[np.ndarray, RowSplits]:
    """Slice name per row of a labelled one-row-per-lead table.

    With time: rows in time order (ties keep the file's row order), the newest ``test_fraction`` is
    the test slice, the calibration slice just before it, validation before that, training first;
    every slice used to fit something precedes the rows it is applied to. Without time: a stratified
    random split, seeded by ``model.seed``.
    """
    sp, n = params.splits, len(leads)
    names = np.full(n, "", dtype=object)
    test = np.zeros(n, dtype=bool)
    if holdout is not None:
        test = np.asarray(holdout, dtype=bool)
        if test.shape != (n,) or not test.any() or test.all():
            raise ValueError("holdout must be a boolean mask over the rows with some rows on each side")
    scale = n * (1 - (test.mean() if holdout is not None else sp.test_fraction)) / (1 - sp.test_fraction)
    n_cal = max(1, int(round(sp.calibration_fraction * scale)))
    n_val = max(1, int(round(sp.validation_fraction * scale)))
    if params.data.timed:
        order = np.argsort(leads[CREATED_AT].to_numpy(), kind="stable")
        if holdout is None:
            test[order[n - int(round(sp.test_fraction * n)):]] = True
        rest = order[~test[order]]
        names[rest[: len(rest) - n_cal - n_val]] = "train"
        names[rest[len(rest) - n_cal - n_val: len(rest) - n_cal]] = "validation"
        names[rest[len(rest) - n_cal:]] = "calibration"
        names[test] = "test"
        times = leads[CREATED_AT]
        slices = {k: f"{times[names == k].min():%Y-%m-%d}..{times[names == k].max():%Y-%m-%d} "
                     f"({(names == k).sum()} rows)" for k in SLICES}
        return names, RowSplits("time-ordered", slices)
    from sklearn.model_selection import train_test_split

    y = leads[LABEL].to_numpy(dtype=int)
    seed = params.model.seed
    idx = np.arange(n)
    if holdout is None:
        rest, test_idx = train_test_split(idx, test_size=sp.test_fraction, stratify=y, random_state=seed)
        test[test_idx] = True
    rest = idx[~test]
    fit, cal = train_test_split(rest, test_size=n_cal, stratify=y[rest], random_state=seed)
    train_idx, val = train_test_split(fit, test_size=n_val, stratify=y[fit], random_state=seed + 1)
    names[train_idx], names[val], names[cal], names[test] = "train", "validation", "calibration", "test"
    return names, RowSplits("stratified random", {k: f"stratified random ({(names == k).sum()} rows)" for k in SLICES})


def _train_label_table(leads: pd.DataFrame, params: Params, source_hashes: dict[str, str],
                    holdout: np.ndarray | None) -> TrainingResult:
    """One row per lead with a final 0/1 label: attributes only, sliced by time or stratified at random."""
    if LABEL not in leads.columns:
        raise TrainingDataError("data.columns.label is set but the leads were read without it")
    if params.snapshots.horizon_days == AUTO:
        # A final label has no horizon; the scorer keeps 90 days as how long after its data it stays current.
        params = params.replace(snapshots={"horizon_days": LABEL_TABLE_HORIZON})
    labelled = leads[LABEL].notna().to_numpy()
    notes = []
    if (~labelled).any():
        notes.append(f"{int((~labelled).sum())} leads have no outcome yet (empty label): not used for training")
    if holdout is not None:
        holdout = np.asarray(holdout, dtype=bool)[labelled]
    table = leads.loc[labelled].reset_index(drop=True)
    y = table[LABEL].to_numpy(dtype=int)
    check_amount(len(table), int(y.sum()), params.checks)
    names, splits = row_slices(table, params, holdout)
    if splits.kind != "time-ordered":
        notes.insert(0, NO_TIME_WARNING)
    d = params.data
    rolling = splits.kind == "time-ordered" and params.splits.method == "rolling"
    # Categories come from every row the final booster learns from: the whole pool before the test (rolling, and the
    # cross-fitted table without time), the train slice (+ validation when it is refitted on it) of the time chain. A
    # category first seen in the newest pool rows is still one (a fold booster that never saw it treats it as unseen).
    chain = splits.kind == "time-ordered" and not rolling
    learned = (np.isin(names, ("train", "validation") if params.model.refit_with_validation else ("train",))
               if chain else names != "test")
    check_identifiers(table.loc[learned], d.categorical, d.numeric)
    spec = fit_feature_spec(table.loc[learned], empty_interactions(), params.features, d.categorical,
                            d.numeric, before=None, mode="labels", timed=d.timed)
    frame = attribute_features(table, None, spec)
    frame["label"] = y
    frame[CREATED_AT] = table[CREATED_AT].to_numpy()
    frame["slice"] = names
    until = table[CREATED_AT].max()
    folds = label_folds(frame, params) if rolling else None
    if folds is not None:  # rolling origin over the rows before the test, by creation time
        frame["slice"] = np.where(names == "test", "test", "train")
        parts, leakage, more = _slices(frame, leads, spec, params, names=("train", "test"))
        pool = parts["train"]
        through = pool[CREATED_AT].max()
        period = pool[CREATED_AT].dt.to_period("M").astype(str).to_numpy()  # within-month ROC-AUC on the folds
        scorer, selection = fit_scorer_rolling(pool, folds, period, spec, params, {
            "trained_through": str(through), "splits": splits.describe(), "split": splits.kind,
            "missing_share": _missing_share(pool, spec), "observed_until": str(until)})
        notes += more + selection.notes
    else:
        parts, leakage, more = _slices(frame, leads, spec, params)
        notes += more
        through = table.loc[names == "calibration", CREATED_AT].max()
        fit = fit_scorer if splits.kind == "time-ordered" else fit_scorer_cross_fitted
        scorer = fit(parts, spec, params, {
            "trained_through": str(through) if pd.notna(through) else "no time", "splits": splits.describe(),
            "split": splits.kind, "missing_share": _missing_share(parts["train"], spec),
            **({"observed_until": str(until)} if pd.notna(until) else {})})
        selection = None
    test, metrics = _evaluate(scorer, parts)
    buckets = bucket_table(test["label"], test["bucket"])
    gates = ship_gates(test, metrics, buckets, scorer, params.retrain.bootstrap, params.model.seed, params.retrain.max_ece)
    if selection is not None:
        metrics.update(selection.metrics)
        gates += fold_gates(metrics)
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics, buckets=buckets,
        fingerprint=fingerprint(leads, empty_interactions(), frame, until, source_hashes),
        leakage=leakage, warnings=notes, gates=gates,
    )


def label_folds(frame: pd.DataFrame, params: Params) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Rolling-origin folds over a timed label table's rows before the test: the newest ``splits.folds`` blocks
    of ``validation_fraction`` of the rows each, every fold trained on the rows created before its block.

    Folds whose training rows or block hold fewer than ``MIN_CONVERSIONS`` conversions are dropped (oldest
    first); None when none is left (the fixed chain is used instead).
    """
    pool = frame.loc[frame["slice"] != "test"]
    order = np.argsort(pool[CREATED_AT].to_numpy(), kind="stable")
    y = pool["label"].to_numpy()[order]
    n, block = len(pool), max(1, int(round(params.splits.validation_fraction * len(frame))))
    folds = []
    for k in range(params.splits.folds, 0, -1):
        start = n - k * block
        if start <= 0:
            continue
        end = start + block if k > 1 else n
        fit, valid = np.zeros(n, bool), np.zeros(n, bool)
        fit[order[:start]] = True
        valid[order[start:end]] = True
        if min(y[:start].sum(), y[start:end].sum()) >= MIN_CONVERSIONS:
            folds.append((fit, valid))
    return folds or None
