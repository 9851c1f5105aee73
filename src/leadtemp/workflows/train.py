"""Train: checks, slices, features, then a fitted scorer and its test metrics. No I/O: MLflow is adapters/tracking.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadtemp.core.checks import check_amount, check_identifiers, check_leakage, leakage_report
from leadtemp.core.config import Params
from leadtemp.core.errors import TrainingDataError
from leadtemp.core.features import FeatureSpec, attribute_features, build_training_frame, fit_feature_spec
from leadtemp.core.metrics import (
    BUCKETS,
    auc_interval,
    bucket_table,
    classification_metrics,
    ranking_metrics,
    within_period_auc,
)
from leadtemp.core.schema import CONVERTED_AT, CREATED_AT, LABEL, LEAD_ID, empty_interactions
from leadtemp.core.snapshots import (
    build_snapshots,
    creation_snapshots,
    cutoff_dates,
    observed_until,
    slices_of_times,
    split_cutoffs,
)
from leadtemp.core.vocabulary import thermometer_not_applicable, vocabulary_notes
from leadtemp.modelling.fit import fit_scorer, fit_scorer_cross_fitted
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
    known = {LEAD_ID, CREATED_AT, CONVERTED_AT, LABEL, *d.categorical, *d.numeric, *d.excluded,
             *(c for c in vars(d.columns).values() if c)}
    if d.created_from_row_order is not None:
        known.add(d.created_from_row_order.month_column)
    return [str(c) for c in leads.columns if c not in known]


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
    metrics["best_iteration"] = float(scorer.booster.current_iteration())
    metrics["validation_roc_auc"] = scorer.meta["validation_roc_auc"]
    scorer.meta["test_roc_auc"] = metrics["roc_auc"]
    return test, metrics


def ship_gates(test: pd.DataFrame, metrics: dict[str, float], buckets: pd.DataFrame) -> list[Gate]:
    """What a newly trained model must show on its test slice before it may become champion.

    A model that fails is still logged and registered (so it can be inspected), never given the
    alias: a constant model, one that ranks no better than chance, one that loses to the
    thermometer rule the sales team already has, or buckets that do not separate.
    """
    y = test["label"].to_numpy()
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    distinct = np.unique(test["margin"].to_numpy()).size
    gates = [Gate("not a constant model", distinct > 1,
                  f"{distinct} distinct score(s) on {len(y):,} test rows" + ("" if distinct > 1 else
                  ": the booster learned nothing; give more conversions (or more history) to learn from"))]
    low, high = auc_interval(metrics["roc_auc"], positives, negatives)
    gates.append(Gate("ranks better than chance", low > 0.5,
                      f"test ROC-AUC {metrics['roc_auc']:.3f} (95% interval {low:.3f}..{high:.3f}, "
                      f"{positives:,} conversions)" + ("" if low > 0.5 else
                      ": no evidence the model ranks leads; more conversions or more informative attributes would help")))
    if "thermometer_score" in test.columns:
        gates.append(thermometer_gate(test["thermometer_score"], metrics, "test"))
    rows = buckets.set_index("bucket")
    empty = [b for b in BUCKETS if rows.loc[b, "leads"] == 0]
    hot, cold = rows.loc[BUCKETS[0], "rate"], rows.loc[BUCKETS[-1], "rate"]
    gates.append(Gate("buckets separate", not empty and hot > cold,
                      f"empty on the test slice: {empty}" if empty else
                      f"test conversion hot {hot:.1%} vs cold {cold:.1%}"))
    return gates


def thermometer_gate(scores: pd.Series, metrics: dict[str, float], where: str) -> Gate:
    """The model against the thermometer rule, or "not applicable (why)" when the rule ranks nobody here."""
    if (why := thermometer_not_applicable(scores, f"{where} rows")) is not None or "thermometer_roc_auc" not in metrics:
        return Gate("thermometer", True, why or "not applicable (no thermometer score)", applicable=False)
    return Gate("beats the thermometer", metrics["roc_auc"] > metrics["thermometer_roc_auc"],
                f"{where} ROC-AUC {metrics['roc_auc']:.3f} vs thermometer rule {metrics['thermometer_roc_auc']:.3f}")


def _slices(frame: pd.DataFrame, leads: pd.DataFrame, spec: FeatureSpec,
            params: Params) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, list[str]]:
    """The frame cut by its ``slice`` column, each slice checked, the training slice checked for leakage.

    Returns the slices, the leakage report and the notes the user must hear (allowed leaky columns,
    columns in no role).
    """
    parts = {name: frame.loc[frame["slice"] == name].reset_index(drop=True) for name in SLICES}
    for name, part in parts.items():
        _check_slice(name, part)
    leakage = leakage_report(parts["train"], [*spec.categorical, *spec.numeric], seed=params.model.seed)
    allowed = check_leakage(leakage, params.checks)
    notes = [f"column '{c}' alone predicts the label with AUC {a:.3f} on the training slice; "
             "used only because checks.allow_leaky lists it"
             for c, a in leakage.loc[leakage["column"].isin(allowed)].itertuples(index=False)]
    if unused := unused_columns(leads, params):
        notes.append(f"columns in no role (not categorical, numeric or excluded), not used: {unused}")
    return parts, leakage, notes


def train(leads: pd.DataFrame, interactions: pd.DataFrame, params: Params,
          source_hashes: dict[str, str] | None = None, holdout: np.ndarray | None = None) -> TrainingResult:
    """Checks → slices → features → booster → calibrator → bucket cut-offs → test metrics.

    Tables with conversion times are cut into point-in-time snapshots; tables with a final label
    (``data.columns.label``) are one row per lead. ``holdout`` (label tables only): a boolean mask
    of the rows to use as the test slice, e.g. one fold of a cross-validation.
    """
    if params.data.mode == "labels":
        return _train_label_table(leads, params, source_hashes or {}, holdout)
    if holdout is not None:
        raise ValueError("holdout applies to tables with a label column; snapshots are split by time")
    s = params.snapshots
    until = observed_until(leads, interactions, s.observed_until)
    labelled = [c for c in cutoff_dates(leads, until, s.frequency) if c + pd.Timedelta(days=s.horizon_days) <= until]
    splits = split_cutoffs(pd.DatetimeIndex(labelled), s.horizon_days, params.splits.test_cutoffs,
                           params.splits.calibration_cutoffs, params.splits.validation_cutoffs)
    # The categories are learned from the leads created before the last validation cutoff: judged there.
    check_identifiers(leads.loc[leads[CREATED_AT] < splits.validation.max()], params.data.categorical)
    spec = fit_feature_spec(leads, interactions, params.features, params.data.categorical,
                            params.data.numeric, before=splits.validation.max(), events=params.events)
    used = splits.train.append([splits.validation, splits.calibration, splits.test])
    snaps = build_snapshots(leads, used, s.horizon_days, until).assign(snapshot="periodic")
    periodic_slice = np.select([snaps["cutoff"].isin(getattr(splits, n)) for n in SLICES], SLICES, "")
    snaps = snaps.assign(slice=periodic_slice)
    if s.at_creation:
        created = creation_snapshots(leads, s.horizon_days, until, skip=used)
        created = created.assign(snapshot="creation",
                                 slice=slices_of_times(created["cutoff"], splits, s.horizon_days, until))
        snaps = pd.concat([snaps, created.loc[created["slice"] != ""]], ignore_index=True)
    converters = snaps.loc[snaps["label"] == 1, LEAD_ID].nunique()
    check_amount(snaps[LEAD_ID].nunique(), converters, params.checks)
    frame = build_training_frame(snaps, leads, interactions, spec)
    parts, leakage, notes = _slices(frame, leads, spec, params)
    notes += vocabulary_notes(interactions, params.features, params.events)

    scorer = fit_scorer(parts, spec, params, {
        "trained_through": str(splits.calibration.max() + pd.Timedelta(days=s.horizon_days)),
        "observed_until": str(until), "splits": splits.describe(), "missing_share": _missing_share(parts["train"], spec)})
    test, metrics = _evaluate(scorer, parts)
    buckets = bucket_table(test["label"], test["bucket"])
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics, buckets=buckets,
        fingerprint=fingerprint(leads, interactions, frame, until, source_hashes or {}),
        leakage=leakage, warnings=notes, gates=ship_gates(test, metrics, buckets),
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
    check_identifiers(table.loc[names == "train"], d.categorical)
    spec = fit_feature_spec(table.loc[names == "train"], empty_interactions(), params.features, d.categorical,
                            d.numeric, before=None, mode="labels", timed=d.timed)
    frame = attribute_features(table, None, spec)
    frame["label"] = y
    frame[CREATED_AT] = table[CREATED_AT].to_numpy()
    frame["slice"] = names
    parts, leakage, more = _slices(frame, leads, spec, params)
    notes += more
    through = table.loc[names == "calibration", CREATED_AT].max()
    fit = fit_scorer if splits.kind == "time-ordered" else fit_scorer_cross_fitted
    until = table[CREATED_AT].max()
    scorer = fit(parts, spec, params, {
        "trained_through": str(through) if pd.notna(through) else "no time", "splits": splits.describe(),
        "split": splits.kind, "missing_share": _missing_share(parts["train"], spec),
        **({"observed_until": str(until)} if pd.notna(until) else {})})
    test, metrics = _evaluate(scorer, parts)
    buckets = bucket_table(test["label"], test["bucket"])
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics, buckets=buckets,
        fingerprint=fingerprint(leads, empty_interactions(), frame, until, source_hashes),
        leakage=leakage, warnings=notes, gates=ship_gates(test, metrics, buckets),
    )
