"""The LightGBM booster: parameters, early stopping on a later slice, refits with a fixed number of rounds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from leadtemp.core.config import AUTO, Params
from leadtemp.core.features import FeatureSpec
from leadtemp.core.metrics import ranking_metrics
from leadtemp.core.schema import LEAD_ID


def leaf_size(params: Params, rows: int) -> int:
    """``model.min_data_in_leaf``, or with ``auto`` the training rows / 1000, between 20 and 200: a status a
    few hundred rows carry can still make a leaf in a small history, and a big one is not split finely."""
    m = params.model.min_data_in_leaf
    return int(m) if m != AUTO else int(np.clip(rows // 1000, 20, 200))


def lightgbm_params(params: Params, rows: int) -> dict:
    """LightGBM parameters for fitting on ``rows`` training rows."""
    m = params.model
    return {
        "objective": "binary", "num_leaves": m.num_leaves, "learning_rate": m.learning_rate,
        "min_data_in_leaf": leaf_size(params, rows), "feature_fraction": m.feature_fraction,
        "lambda_l2": m.lambda_l2, "seed": m.seed, "num_threads": m.num_threads,
        "deterministic": True, "force_col_wise": True, "verbosity": -1, "metric": params.model.early_stopping_metric,
    }


def reads_spec_codes(booster, spec: FeatureSpec) -> bool:
    """Whether ``booster`` codes categories as ``spec`` does (it was trained on them), so the spec's feature matrix
    can be given to it directly instead of a frame LightGBM would recode."""
    trained = booster.pandas_categorical or []
    return [list(c) for c in trained] == [list(c) for c in spec.categorical.values()]


def lead_weights(frame: pd.DataFrame) -> np.ndarray:
    """1/n for each of a lead's n rows: every lead counts once in the loss, however many snapshots it has."""
    return 1.0 / frame.groupby(LEAD_ID, sort=False)[LEAD_ID].transform("size").to_numpy(dtype=float)


def dataset(frame: pd.DataFrame, spec: FeatureSpec, reference=None, weighted: bool = False):
    import lightgbm as lgb

    weight = lead_weights(frame) if weighted and LEAD_ID in frame.columns else None
    return lgb.Dataset(frame[spec.columns], frame["label"], weight=weight, categorical_feature=list(spec.categorical),
                       reference=reference, free_raw_data=False)


def fit_booster(train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, params: Params):
    """LightGBM with native categoricals; early stopping on the later validation slice (unweighted: rows as scored)."""
    import lightgbm as lgb

    dtrain = dataset(train, spec, weighted=params.snapshots.weight_per_lead)
    booster = lgb.train(
        lightgbm_params(params, len(train)), dtrain, num_boost_round=params.model.max_rounds,
        valid_sets=[dataset(valid, spec, reference=dtrain)],
        callbacks=[lgb.early_stopping(params.model.early_stopping_rounds, verbose=False)],
    )
    # Keep exactly the best trees, so every later predict and pred_contrib agree.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


def fit_rounds(frame: pd.DataFrame, spec: FeatureSpec, params: Params, rounds: int, overrides: dict | None = None):
    """LightGBM with a number of rounds chosen earlier (early stopping, or the rolling-origin folds)."""
    import lightgbm as lgb

    return lgb.train({**lightgbm_params(params, len(frame)), **(overrides or {})},
                     dataset(frame, spec, weighted=params.snapshots.weight_per_lead), num_boost_round=rounds)



def margin_roc_auc(booster, frame: pd.DataFrame, spec: FeatureSpec) -> float:
    """ROC-AUC of the booster's raw margin on ``frame`` (the early-stopping booster's, on validation)."""
    return ranking_metrics(frame["label"], booster.predict(frame[spec.columns], raw_score=True))["roc_auc"]

