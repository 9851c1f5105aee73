"""Rolling-origin selection: the folds choose the rounds, the model family and the calibration; then the final fit.

Each fold's booster learns from labels observed before its validation block and is early-stopped
on it. One number of rounds is chosen for all folds (the best mean validation curve), and the
family, ``trees`` or ``additive`` (one split per tree: a boosted additive model, steadier when the
periods drift), by the within-cutoff ROC-AUC of the folds at those rounds: how well leads are
ranked against each other on one date, which is what a team does; the level is the calibrator's
job. A plain logistic regression on the same features is measured on the same folds, for the
ship gates. The final booster learns from the whole pool with the chosen rounds and family.

Calibration: the fold boosters' out-of-fold margins of the newest validation block(s) are the
newest labelled data; the calibrator is fitted there (scikit-learn's ``ensemble=False`` recipe:
fitted on out-of-fold margins, applied to the final booster). Before that the folds test it:
fitted on one block and applied to the next, it must not make ECE worse than the raw booster's
probabilities; when it would, the raw probabilities are kept and the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadtemp.core.config import AUTO, Params
from leadtemp.core.features import FeatureSpec, feature_matrix
from leadtemp.core.metrics import expected_calibration_error, lead_auc_interval, ranking_metrics, within_period_auc
from leadtemp.core.schema import LEAD_ID
from leadtemp.modelling.booster import dataset, leaf_size, lightgbm_params
from leadtemp.modelling.calibration import MIN_END_BLOCK, Calibrator, fit_calibrator

# additive: stumps learn one feature at a time, so they get twice the learning rate (fewer rounds to converge)
FAMILIES = {"trees": {}, "additive": {"num_leaves": 2, "max_depth": 1}}
ADDITIVE_RATE = 2.0
RAW = Calibrator("sigmoid", slope=1.0, intercept=0.0)  # the booster's own probability: 1 / (1 + e^-margin)
LOGISTIC_ROWS = 30_000  # rows a fold's logistic regression learns from at most (a seeded sample)
MIN_CALIBRATION_CONVERSIONS = 50  # the calibrator's rows reach back over older blocks until they hold this many


@dataclass
class Candidate:
    """One family on the folds: rounds, each fold's validation margins, and the selection score."""

    family: str
    rounds: int
    margins: list[np.ndarray]
    fold_auc: list[float]
    score: float


@dataclass
class Selection:
    """What the folds chose, and everything measured on the way (logged with the run)."""

    family: str
    rounds: int
    min_data_in_leaf: int
    calibration: str                 # raw, sigmoid or the calibration method: the lowest ECE on the folds
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def family_params(family: str, params: Params, rows: int) -> dict:
    base = lightgbm_params(params, rows)
    rate = base["learning_rate"] * (ADDITIVE_RATE if family == "additive" else 1.0)
    return {**base, **FAMILIES[family], "learning_rate": rate}


def _score(y: np.ndarray, margin: np.ndarray, period: np.ndarray) -> float:
    """ROC-AUC within each period (rows without one left out); pooled ROC-AUC when no period holds both labels."""
    known = pd.notna(period)
    within = within_period_auc(y[known], margin[known], period[known]) if known.any() else float("nan")
    return within if np.isfinite(within) else ranking_metrics(y, margin)["roc_auc"]


def fold_datasets(pool: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]], spec: FeatureSpec,
                  params: Params) -> list[tuple]:
    """LightGBM datasets (training, validation) of each fold, binned once and shared by every family."""
    out = []
    for fit, valid in folds:
        dtrain = dataset(pool.loc[fit], spec, weighted=params.snapshots.weight_per_lead)
        out.append((dtrain, dataset(pool.loc[valid], spec, reference=dtrain)))
    return out


def _curves(datasets: list[tuple], lgb_params: dict, params: Params) -> tuple[list, list[np.ndarray]]:
    """Each fold's early-stopped booster and its validation curve (one value per round)."""
    import lightgbm as lgb

    metric = params.model.early_stopping_metric
    boosters, curves = [], []
    for dtrain, dvalid in datasets:
        record: dict = {}
        booster = lgb.train(lgb_params, dtrain, num_boost_round=params.model.max_rounds,
                            valid_sets=[dvalid], valid_names=["fold"],
                            callbacks=[lgb.early_stopping(params.model.early_stopping_rounds, verbose=False),
                                       lgb.record_evaluation(record)])
        boosters.append(booster)
        curves.append(np.asarray(record["fold"][metric], dtype=float))
    return boosters, curves


def _rounds(curves: list[np.ndarray], metric: str) -> int:
    """The number of rounds with the best mean validation curve (a fold that stopped early keeps its last value)."""
    longest = max(len(c) for c in curves)
    mean = np.mean([np.pad(c, (0, longest - len(c)), mode="edge") for c in curves], axis=0)
    return int((np.argmin(mean) if metric == "binary_logloss" else np.argmax(mean)) + 1)


def evaluate_family(family: str, pool: pd.DataFrame, folds, datasets: list[tuple], period: np.ndarray,
                    spec: FeatureSpec, params: Params) -> Candidate:
    # One leaf size for every fold and family: LightGBM bins (and pre-filters) a dataset for it once.
    lgb_params = family_params(family, params, int(np.mean([f.sum() for f, _ in folds])))
    boosters, curves = _curves(datasets, lgb_params, params)
    rounds = _rounds(curves, params.model.early_stopping_metric)
    margins, aucs, weights = [], [], []
    for booster, (_, valid) in zip(boosters, folds):
        rows = pool.loc[valid]
        margin = booster.predict(rows[spec.columns], raw_score=True, num_iteration=min(rounds, booster.current_iteration()))
        margins.append(margin)
        aucs.append(_score(rows["label"].to_numpy(), margin, period[valid]))
        weights.append(len(rows))
    return Candidate(family, rounds, margins, aucs, float(np.average(aucs, weights=weights)))


def logistic_fold_auc(pool: pd.DataFrame, folds, period: np.ndarray, spec: FeatureSpec, seed: int = 0) -> list[float]:
    """A plain logistic regression on the same features (one-hot categories, standardised numbers with a
    missing flag), fitted and scored like the boosters on each fold: the baseline the ship gates compare with."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in spec.columns if c not in spec.categorical]
    codes = list(spec.categorical)
    aucs = []
    for fit, valid in folds:
        steps = []
        if numeric:
            steps.append(("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                                                 keep_empty_features=True), StandardScaler()), numeric))
        if codes:
            steps.append(("codes", make_pipeline(SimpleImputer(strategy="constant", fill_value=-1.0),
                                                 OneHotEncoder(handle_unknown="ignore", min_frequency=20)), codes))
        model = make_pipeline(ColumnTransformer(steps), LogisticRegression(C=1.0, max_iter=200, tol=1e-3))
        rows = np.flatnonzero(fit)
        if len(rows) > LOGISTIC_ROWS:  # a linear baseline is settled long before this many rows
            rows = np.sort(np.random.default_rng(seed).choice(rows, LOGISTIC_ROWS, replace=False))
        x_fit, x_valid = _matrix(pool.iloc[rows], spec), _matrix(pool.loc[valid], spec)
        model.fit(x_fit, pool["label"].to_numpy()[rows])
        aucs.append(_score(pool.loc[valid, "label"].to_numpy(), model.decision_function(x_valid), period[valid]))
    return aucs


def _matrix(rows: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    return pd.DataFrame(feature_matrix(rows, spec), columns=spec.columns)


def choose_calibration(candidate: Candidate, labels: list[np.ndarray], method: str) -> tuple[str, dict[str, float]]:
    """``method`` (calibration.method) or the booster's own probabilities (``raw``), whichever has the lower ECE when
    fitted on one block and applied to the next fold's margins (a later booster, trained on more, as the final
    booster is); a tie keeps ``raw``, the simpler. With one fold there is nothing to test it on, so the simpler
    one is kept too: ``raw``. Measured on three one-fold histories (test ECE of ``method`` → ``raw``): 4 months of the
    simulated world 0.0066 → 0.0053, the short funnel with a 60-day horizon 0.187 → 0.006, the process log of
    benchmarks/process_log.py with a 30-day horizon 0.057 → 0.040. The one fold's booster learns from the oldest
    labels only, so a calibrator fitted on its margins misreads the final booster's.

    (Platt scaling as a third option was tried on the small simulated world: best on the folds, 0.0281 against
    isotonic 0.0310 and raw 0.0327, but worse on the test, ECE 0.039 against 0.030; not kept without more evidence.)
    """
    if len(labels) < 2:
        return "raw", {}
    options = list(dict.fromkeys(["raw", method]))  # simplest first
    error = dict.fromkeys(options, 0.0)
    rows = 0
    for k in range(1, len(labels)):
        n = len(labels[k])
        rows += n
        for option in options:
            fitted = RAW if option == "raw" else fit_calibrator(candidate.margins[k - 1], labels[k - 1], option)
            error[option] += n * expected_calibration_error(labels[k], fitted(candidate.margins[k]))
    scores = {f"folds_{option}_ece": total / rows for option, total in error.items()}
    best = min(options, key=lambda option: (error[option], options.index(option)))
    return best, scores


def calibration_rows(labels: list[np.ndarray]) -> int:
    """How many of the newest blocks the calibrator learns from: the newest, and older ones until
    they hold ``MIN_CALIBRATION_CONVERSIONS`` conversions (or ``MIN_END_BLOCK`` rows per end step)."""
    total, count = 0, 0
    for y in reversed(labels):
        total += int(y.sum())
        count += 1
        if total >= MIN_CALIBRATION_CONVERSIONS and sum(len(v) for v in labels[-count:]) >= 4 * MIN_END_BLOCK:
            break
    return count


def select(pool: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]], period: np.ndarray, spec: FeatureSpec,
           params: Params) -> tuple[Selection, np.ndarray, np.ndarray]:
    """Choose family, rounds and calibration on the folds; ``period``: each pool row's date for the within-period
    ROC-AUC (its cutoff for periodic snapshots, its month for label tables; missing: pooled only).

    Returns the selection and the calibration rows' out-of-fold margins and labels (the newest blocks).
    """
    families = list(FAMILIES) if params.model.family == AUTO else [params.model.family]
    datasets = fold_datasets(pool, folds, spec, params)
    candidates = [evaluate_family(f, pool, folds, datasets, period, spec, params) for f in families]
    best = max(candidates, key=lambda c: c.score)
    labels = [pool.loc[valid, "label"].to_numpy() for _, valid in folds]
    calibration, scores = choose_calibration(best, labels, params.calibration.method)
    logistic = logistic_fold_auc(pool, folds, period, spec, params.model.seed)
    weights = [len(y) for y in labels]
    metrics = {f"folds_{c.family}_roc_auc": c.score for c in candidates}
    metrics.update(scores, folds=float(len(folds)), folds_roc_auc=best.score,
                   folds_logistic_roc_auc=float(np.average(logistic, weights=weights)), rounds=float(best.rounds))
    notes = []
    if len(candidates) > 1:
        notes.append("model family " + best.family + " (within-cutoff ROC-AUC on the folds: "
                     + ", ".join(f"{c.family} {c.score:.3f}" for c in candidates) + ")")
    if calibration != params.calibration.method and len(folds) < 2:
        notes.append(f"calibration: the booster's own probabilities instead of {params.calibration.method}: with one "
                     "fold nothing shows that a calibrator fitted on the fold booster's margins carries over to the final "
                     "booster (more history gives two folds to test it on)")
    elif calibration != params.calibration.method:
        notes.append(f"calibration: {calibration} instead of {params.calibration.method}, the lower ECE on the folds ("
                     + ", ".join(f"{k.split('_')[1]} {v:.4f}" for k, v in scores.items()) + ")"
                     + ("; the booster's own probabilities are kept" if calibration == "raw" else ""))
    # Evidence of ranking from the folds, independent of the test slice: each fold's margins centred (fold models
    # differ in level), pooled, with a bootstrap of leads (a lead's snapshots move together).
    centred = np.concatenate([m - m.mean() for m in best.margins])
    ids = np.concatenate([(pool.loc[valid, LEAD_ID] if LEAD_ID in pool.columns else pool.index[valid]).to_numpy()
                          for _, valid in folds])
    low, high = lead_auc_interval(np.concatenate(labels), centred, ids, params.retrain.bootstrap or 200, params.model.seed)
    metrics.update(folds_auc_low=low, folds_auc_high=high)
    newest = calibration_rows(labels)
    selection = Selection(best.family, best.rounds, leaf_size(params, len(pool)), calibration, metrics, notes)
    return selection, np.concatenate(best.margins[-newest:]), np.concatenate(labels[-newest:])


def calibrator_for(selection: Selection, margin: np.ndarray, y: np.ndarray) -> Calibrator:
    return RAW if selection.calibration == "raw" else fit_calibrator(margin, y, selection.calibration)


