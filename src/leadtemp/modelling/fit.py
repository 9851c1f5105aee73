"""Fit a scorer: booster, then calibrator and bucket cut-offs on rows the booster never saw."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadtemp.core.config import Params
from leadtemp.core.drift import profile
from leadtemp.core.features import FeatureSpec, feature_matrix
from leadtemp.core.metrics import bucket_shares
from leadtemp.core.reasons import category_rates
from leadtemp.modelling.booster import fit_booster, fit_rounds, margin_roc_auc
from leadtemp.modelling.buckets import fit_buckets
from leadtemp.modelling.calibration import Calibrator, fit_calibrator, with_ceiling
from leadtemp.modelling.scorer import LeadScorer
from leadtemp.modelling.select import Selection, calibrator_for, family_params, select


def fit_scorer(parts: dict[str, pd.DataFrame], spec: FeatureSpec, params: Params, meta: dict) -> LeadScorer:
    """Booster, then calibrator and bucket cut-offs on the calibration slice it never saw.

    Early stopping on the validation slice fixes the number of rounds R. With
    ``model.refit_with_validation`` (default) the final booster is then refitted with R rounds on
    train + validation, so the newer validation rows are in the model too; the calibration slice,
    later still, stays unseen by it and calibrates exactly the booster that scores.
    """
    booster = fit_booster(parts["train"], parts["validation"], spec, params)
    valid, cal = parts["validation"], parts["calibration"]
    meta = {**meta, "validation_roc_auc": margin_roc_auc(booster, valid, spec)}
    fitted = parts["train"]
    if params.model.refit_with_validation:
        fitted = pd.concat([parts["train"], valid], ignore_index=True)
        booster = fit_rounds(fitted, spec, params, booster.current_iteration())
    return assemble_scorer(booster, booster.predict(cal[spec.columns], raw_score=True), cal["label"], spec, params, meta,
                     fitted)


def fit_scorer_rolling(pool: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]], period: np.ndarray,
                       spec: FeatureSpec, params: Params, meta: dict) -> tuple[LeadScorer, Selection]:
    """The rolling-origin folds choose rounds, family and calibration (modelling/select.py); the final booster
    learns from the whole pool; the calibrator and bucket cut-offs from the newest blocks' out-of-fold margins."""
    selection, cal_margin, cal_label = select(pool, folds, period, spec, params)
    booster = fit_rounds(pool, spec, params, selection.rounds, family_params(selection.family, params, len(pool)))
    calibrator = calibrator_for(selection, cal_margin, cal_label)
    meta = {**meta, "validation_roc_auc": selection.metrics["folds_roc_auc"],
            "selection": {"family": selection.family, "rounds": selection.rounds, "calibration": selection.calibration,
                          "min_data_in_leaf": selection.min_data_in_leaf, **selection.metrics}}
    scorer = assemble_scorer(booster, cal_margin, cal_label, spec, params, meta, pool, calibrator)
    return scorer, selection


def assemble_scorer(booster, cal_margin: np.ndarray, cal_label: pd.Series, spec: FeatureSpec, params: Params,
              meta: dict, fitted: pd.DataFrame, calibrator: Calibrator | None = None) -> LeadScorer:
    """The scorer around a fitted booster; ``fitted``: the rows the booster learned from (profiled for drift,
    and the source of the coded categoricals' conversion rates in reasons: never a test row).

    ``calibrator``: already chosen; by default fitted here on ``cal_margin`` with ``calibration.method``. Either way
    it is capped at the top at what the calibration rows support (``with_ceiling``).
    """
    calibrator = calibrator or fit_calibrator(cal_margin, cal_label, params.calibration.method)
    calibrator = with_ceiling(calibrator, cal_margin, cal_label)
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
        category_rates=category_rates(fitted, spec),
    )


CROSS_FIT_FOLDS = 5


def fit_scorer_cross_fitted(parts: dict[str, pd.DataFrame], spec: FeatureSpec, params: Params,
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
    meta = {**meta, "validation_roc_auc": margin_roc_auc(first, valid, spec), "calibration": "cross-fitted"}
    pool = pd.concat([parts["train"], valid, parts["calibration"]], ignore_index=True)
    oof = np.empty(len(pool))
    folds = StratifiedKFold(CROSS_FIT_FOLDS, shuffle=True, random_state=params.model.seed)
    for fit_rows, held_out in folds.split(pool, pool["label"]):
        oof[held_out] = fit_rounds(pool.iloc[fit_rows], spec, params, rounds).predict(
            pool.iloc[held_out][spec.columns], raw_score=True)
    booster = fit_rounds(pool, spec, params, rounds)
    return assemble_scorer(booster, oof, pool["label"], spec, params, meta, pool)



def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in ("lightgbm", "pandas", "numpy", "scikit-learn", "mlflow", "shap")}
