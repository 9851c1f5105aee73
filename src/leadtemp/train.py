"""Fit, calibrate and derive buckets: data in, a scorer and its test metrics out (MLflow: tracking.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leadtemp.config import Params
from leadtemp.drift import profile
from leadtemp.evaluate import bucket_shares, bucket_table, classification_metrics
from leadtemp.checks import check_amount, check_leakage, leakage_report
from leadtemp.features import FeatureSpec, attribute_features, build_training_frame, fit_feature_spec
from leadtemp.predict import LeadScorer, feature_matrix, fit_buckets, fit_calibrator
from leadtemp.schema import CONVERTED_AT, CREATED_AT, LABEL, LEAD_ID, empty_interactions
from leadtemp.snapshots import (
    SplitCutoffs,
    TrainingDataError,
    build_snapshots,
    cutoff_dates,
    observed_until,
    split_cutoffs,
)

SLICES = ("train", "validation", "calibration", "test")


@dataclass(frozen=True)
class RowSplits:
    """Slices of a one-row-per-lead table: by time when it has time, else stratified random."""

    kind: str                   # "time-ordered" | "stratified random"
    slices: dict[str, str]

    def describe(self) -> dict[str, str]:
        return dict(self.slices)


@dataclass
class TrainingResult:
    scorer: LeadScorer
    splits: SplitCutoffs | RowSplits
    test: pd.DataFrame          # test slice: features, label, margin, raw and calibrated probability
    metrics: dict[str, float]
    buckets: pd.DataFrame       # per-bucket conversion on the test slice
    fingerprint: dict
    leakage: pd.DataFrame       # single-column AUC of each attribute on the training slice
    warnings: list[str]         # things the user must hear about (printed and logged)

    @property
    def out_of_time(self) -> bool:
        return not (isinstance(self.splits, RowSplits) and self.splits.kind != "time-ordered")

    @property
    def prediction_sha256(self) -> str:
        """Hash of the raw predictions on the test slice: equal data and params give an equal hash."""
        return hashlib.sha256(np.ascontiguousarray(self.test["margin"].to_numpy(dtype=np.float64)).tobytes()).hexdigest()


def lightgbm_params(params: Params) -> dict:
    m = params.model
    return {
        "objective": "binary", "num_leaves": m.num_leaves, "learning_rate": m.learning_rate,
        "min_data_in_leaf": m.min_data_in_leaf, "feature_fraction": m.feature_fraction,
        "lambda_l2": m.lambda_l2, "seed": m.seed, "num_threads": m.num_threads,
        "deterministic": True, "force_col_wise": True, "verbosity": -1, "metric": params.model.early_stopping_metric,
    }


def _dataset(frame: pd.DataFrame, spec: FeatureSpec, reference=None):
    import lightgbm as lgb

    return lgb.Dataset(frame[spec.columns], frame["label"], categorical_feature=list(spec.categorical),
                       reference=reference, free_raw_data=False)


def fit_booster(train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, params: Params):
    """LightGBM with native categoricals; early stopping on the later validation slice."""
    import lightgbm as lgb

    dtrain = _dataset(train, spec)
    booster = lgb.train(
        lightgbm_params(params), dtrain, num_boost_round=params.model.max_rounds,
        valid_sets=[_dataset(valid, spec, reference=dtrain)],
        callbacks=[lgb.early_stopping(params.model.early_stopping_rounds, verbose=False)],
    )
    # Keep exactly the best trees, so every later predict and pred_contrib agree.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


def fit_rounds(frame: pd.DataFrame, spec: FeatureSpec, params: Params, rounds: int):
    """LightGBM with a number of rounds chosen earlier by early stopping."""
    import lightgbm as lgb

    return lgb.train(lightgbm_params(params), _dataset(frame, spec), num_boost_round=rounds)


def _check_slice(name: str, frame: pd.DataFrame) -> None:
    positives = int(frame["label"].sum())
    if len(frame) == 0 or positives in (0, len(frame)):
        raise TrainingDataError(
            f"the {name} slice ({len(frame)} snapshots, {positives} converted) needs both converted and "
            "not-converted leads; give more history or change splits in params.yaml"
        )


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(leads: pd.DataFrame, interactions: pd.DataFrame, frame: pd.DataFrame,
                until: pd.Timestamp | None, sources: dict[str, str]) -> dict:
    """What the run was trained on, without personal data: counts, time range, rates, hashes."""
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
    out.update({f"sha256_{k}": sha256(v) for k, v in sources.items() if v and Path(v).is_file()})
    return out


def unused_columns(leads: pd.DataFrame, params: Params) -> list[str]:
    """Input columns in no role at all: said out loud, so a forgotten attribute is noticed."""
    d = params.data
    known = {LEAD_ID, CREATED_AT, CONVERTED_AT, LABEL, *d.categorical, *d.numeric, *d.excluded,
             *(c for c in vars(d.columns).values() if c)}
    if d.created_from_row_order is not None:
        known.add(d.created_from_row_order.month_column)
    return [str(c) for c in leads.columns if c not in known]


def _roc_auc(booster, frame: pd.DataFrame, spec: FeatureSpec) -> float:
    """ROC-AUC of the booster's raw margin on ``frame`` (the early-stopping booster's, on validation)."""
    return classification_metrics(frame["label"], booster.predict(frame[spec.columns], raw_score=True))["roc_auc"]


def _fit_scorer(parts: dict[str, pd.DataFrame], spec: FeatureSpec, params: Params, meta: dict) -> LeadScorer:
    """Booster, then calibrator and bucket cut-offs on the calibration slice it never saw.

    Early stopping on the validation slice fixes the number of rounds R. With
    ``model.refit_with_validation`` (default) the final booster is then refitted with R rounds on
    train + validation, so the newer validation rows are in the model too; the calibration slice,
    later still, stays unseen by it and calibrates exactly the booster that scores.
    """
    booster = fit_booster(parts["train"], parts["validation"], spec, params)
    valid, cal = parts["validation"], parts["calibration"]
    meta = {**meta, "validation_roc_auc": _roc_auc(booster, valid, spec)}
    fitted = parts["train"]
    if params.model.refit_with_validation:
        fitted = pd.concat([parts["train"], valid], ignore_index=True)
        booster = fit_rounds(fitted, spec, params, booster.current_iteration())
    return _assemble(booster, booster.predict(cal[spec.columns], raw_score=True), cal["label"], spec, params, meta,
                     fitted)


def _assemble(booster, cal_margin: np.ndarray, cal_label: pd.Series, spec: FeatureSpec, params: Params,
              meta: dict, fitted: pd.DataFrame) -> LeadScorer:
    """The scorer around a fitted booster; ``fitted``: the rows the booster learned from (profiled for drift)."""
    calibrator = fit_calibrator(cal_margin, cal_label, params.calibration.method)
    cal_probability = calibrator(cal_margin)
    b = params.buckets
    buckets = fit_buckets(cal_probability, b.method, b.hot_share, b.warm_share, b.hot_probability, b.warm_probability)
    training_profile = profile(feature_matrix(fitted, spec), spec.columns, set(spec.categorical),
                               fitted["label"].to_numpy(), bucket_shares(buckets.assign(cal_probability)))
    return LeadScorer(
        booster=booster, spec=spec, calibrator=calibrator, buckets=buckets,
        horizon_days=params.snapshots.horizon_days, labels=dict(params.data.labels),
        meta={**meta, "best_iteration": booster.current_iteration(), "versions": library_versions(),
              "profile": training_profile},
    )


CROSS_FIT_FOLDS = 5


def _fit_scorer_cross_fitted(parts: dict[str, pd.DataFrame], spec: FeatureSpec, params: Params,
                             meta: dict) -> LeadScorer:
    """For tables without time, where slices are random samples of one population anyway.

    Early stopping on the validation slice fixes the number of rounds R. The calibrator and bucket
    cut-offs are then fitted on out-of-fold margins of all non-test rows (5 boosters of R rounds,
    each scoring the fold it did not see), and the final booster has R rounds on all non-test rows:
    the model and the calibrator each learn from every row instead of a 10% slice. This is
    scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` recipe. It would leak the future into
    calibration on data with time, so timed tables never use it.
    """
    from sklearn.model_selection import StratifiedKFold

    first = fit_booster(parts["train"], parts["validation"], spec, params)
    rounds = first.current_iteration()
    valid = parts["validation"]
    meta = {**meta, "validation_roc_auc": _roc_auc(first, valid, spec), "calibration": "cross-fitted"}
    pool = pd.concat([parts["train"], valid, parts["calibration"]], ignore_index=True)
    oof = np.empty(len(pool))
    folds = StratifiedKFold(CROSS_FIT_FOLDS, shuffle=True, random_state=params.model.seed)
    for fit_rows, held_out in folds.split(pool, pool["label"]):
        oof[held_out] = fit_rounds(pool.iloc[fit_rows], spec, params, rounds).predict(
            pool.iloc[held_out][spec.columns], raw_score=True)
    booster = fit_rounds(pool, spec, params, rounds)
    return _assemble(booster, oof, pool["label"], spec, params, meta, pool)


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
    if "thermometer_score" in test.columns:
        metrics["thermometer_roc_auc"] = classification_metrics(test["label"], test["thermometer_score"])["roc_auc"]
    metrics["best_iteration"] = float(scorer.booster.current_iteration())
    metrics["validation_roc_auc"] = scorer.meta["validation_roc_auc"]
    scorer.meta["test_roc_auc"] = metrics["roc_auc"]
    return test, metrics


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
          sources: dict[str, str] | None = None, holdout: np.ndarray | None = None) -> TrainingResult:
    """Checks → slices → features → booster → calibrator → bucket cut-offs → test metrics.

    Tables with conversion times are cut into point-in-time snapshots; tables with a final label
    (``data.columns.label``) are one row per lead. ``holdout`` (label tables only): a boolean mask
    of the rows to use as the test slice, e.g. one fold of a cross-validation.
    """
    if params.data.mode == "outcomes":
        return _train_outcomes(leads, params, sources or {}, holdout)
    if holdout is not None:
        raise ValueError("holdout applies to tables with a label column; snapshots are split by time")
    s = params.snapshots
    until = observed_until(leads, interactions, s.observed_until)
    labelled = [c for c in cutoff_dates(leads, until, s.frequency) if c + pd.Timedelta(days=s.horizon_days) <= until]
    splits = split_cutoffs(pd.DatetimeIndex(labelled), s.horizon_days, params.splits.test_cutoffs,
                           params.splits.calibration_cutoffs, params.splits.validation_cutoffs)
    spec = fit_feature_spec(leads, interactions, params.features, params.data.categorical,
                            params.data.numeric, before=splits.validation.max())
    used = splits.train.append([splits.validation, splits.calibration, splits.test])
    snaps = build_snapshots(leads, used, s.horizon_days, until)
    converters = snaps.loc[snaps["label"] == 1, LEAD_ID].nunique()
    check_amount(snaps[LEAD_ID].nunique(), converters, params.checks)
    frame = build_training_frame(snaps, leads, interactions, spec)
    frame["slice"] = np.select([frame["cutoff"].isin(getattr(splits, n)) for n in SLICES], SLICES, "")
    parts, leakage, notes = _slices(frame, leads, spec, params)

    scorer = _fit_scorer(parts, spec, params, {
        "trained_through": str(splits.calibration.max() + pd.Timedelta(days=s.horizon_days)),
        "observed_until": str(until), "splits": splits.describe()})
    test, metrics = _evaluate(scorer, parts)
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics,
        buckets=bucket_table(test["label"], test["bucket"]),
        fingerprint=fingerprint(leads, interactions, frame, until, sources or {}),
        leakage=leakage, warnings=notes,
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


def _train_outcomes(leads: pd.DataFrame, params: Params, sources: dict[str, str],
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
    spec = fit_feature_spec(table.loc[names == "train"], empty_interactions(), params.features, d.categorical,
                            d.numeric, before=None, mode="outcomes", timed=d.timed)
    frame = attribute_features(table, None, spec)
    frame["label"] = y
    frame[CREATED_AT] = table[CREATED_AT].to_numpy()
    frame["slice"] = names
    parts, leakage, more = _slices(frame, leads, spec, params)
    notes += more
    through = table.loc[names == "calibration", CREATED_AT].max()
    fit = _fit_scorer if splits.kind == "time-ordered" else _fit_scorer_cross_fitted
    scorer = fit(parts, spec, params, {
        "trained_through": str(through) if pd.notna(through) else "no time", "splits": splits.describe(),
        "split": splits.kind})
    test, metrics = _evaluate(scorer, parts)
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics,
        buckets=bucket_table(test["label"], test["bucket"]),
        fingerprint=fingerprint(leads, empty_interactions(), frame, table[CREATED_AT].max(), sources),
        leakage=leakage, warnings=notes,
    )


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in ("lightgbm", "pandas", "numpy", "scikit-learn", "mlflow", "shap")}
