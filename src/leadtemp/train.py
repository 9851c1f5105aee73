"""Fit, calibrate and derive buckets; the only module that opens MLflow runs."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from leadtemp.config import Params
from leadtemp.evaluate import bucket_table, classification_metrics, plot_gains, plot_reliability
from leadtemp.features import FeatureSpec, build_training_frame, fit_feature_spec
from leadtemp.predict import LeadScorer, fit_buckets, fit_calibrator
from leadtemp.snapshots import (
    SplitCutoffs,
    TrainingDataError,
    build_snapshots,
    cutoff_dates,
    observed_until,
    split_cutoffs,
)

SLICES = ("train", "validation", "calibration", "test")


@dataclass
class TrainingResult:
    scorer: LeadScorer
    splits: SplitCutoffs
    test: pd.DataFrame          # test slice: features, label, margin, raw and calibrated probability
    metrics: dict[str, float]
    buckets: pd.DataFrame       # per-bucket conversion on the test slice
    fingerprint: dict


def lightgbm_params(params: Params) -> dict:
    m = params.model
    return {
        "objective": "binary", "num_leaves": m.num_leaves, "learning_rate": m.learning_rate,
        "min_data_in_leaf": m.min_data_in_leaf, "feature_fraction": m.feature_fraction,
        "lambda_l2": m.lambda_l2, "seed": m.seed, "num_threads": m.num_threads,
        "deterministic": True, "force_col_wise": True, "verbosity": -1,
    }


def fit_booster(train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, params: Params):
    """LightGBM with native categoricals; early stopping on the later validation slice."""
    import lightgbm as lgb

    cats = list(spec.categorical)
    dtrain = lgb.Dataset(train[spec.columns], train["label"], categorical_feature=cats, free_raw_data=False)
    dvalid = lgb.Dataset(valid[spec.columns], valid["label"], categorical_feature=cats, reference=dtrain)
    booster = lgb.train(
        lightgbm_params(params), dtrain, num_boost_round=params.model.max_rounds, valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(params.model.early_stopping_rounds, verbose=False)],
    )
    # Keep exactly the best trees, so every later predict and pred_contrib agree.
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))


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
                until: pd.Timestamp, sources: dict[str, str]) -> dict:
    """What the run was trained on, without personal data: counts, time range, rates, hashes."""
    out = {
        "leads": len(leads), "interactions": len(interactions),
        "created_from": str(leads["created_at"].min()), "observed_until": str(until),
        "lead_conversion_rate": float(leads["converted_at"].notna().mean()),
        "snapshots": len(frame), "snapshot_positive_rate": float(frame["label"].mean()),
        "lead_columns": sorted(map(str, leads.columns)),
    }
    for name, group in frame.groupby("slice", sort=False):
        out[f"{name}_snapshots"] = len(group)
        out[f"{name}_positive_rate"] = float(group["label"].mean())
    out.update({f"sha256_{k}": sha256(v) for k, v in sources.items() if v and Path(v).is_file()})
    return out


def train(leads: pd.DataFrame, interactions: pd.DataFrame, params: Params,
          sources: dict[str, str] | None = None) -> TrainingResult:
    """Snapshots → features → booster → calibrator → bucket cut-offs → test metrics."""
    s = params.snapshots
    until = observed_until(leads, interactions, s.observed_until)
    labelled = [c for c in cutoff_dates(leads, until, s.frequency) if c + pd.Timedelta(days=s.horizon_days) <= until]
    splits = split_cutoffs(pd.DatetimeIndex(labelled), s.horizon_days, params.splits.test_cutoffs,
                           params.splits.calibration_cutoffs, params.splits.validation_cutoffs)
    spec = fit_feature_spec(leads, interactions, params.features, params.data.categorical,
                            params.data.numeric, before=splits.validation.max())
    used = splits.train.append([splits.validation, splits.calibration, splits.test])
    snaps = build_snapshots(leads, used, s.horizon_days, until)
    frame = build_training_frame(snaps, leads, interactions, spec)
    frame["slice"] = np.select([frame["cutoff"].isin(getattr(splits, n)) for n in SLICES], SLICES, "")
    parts = {name: frame.loc[frame["slice"] == name].reset_index(drop=True) for name in SLICES}
    for name, part in parts.items():
        _check_slice(name, part)

    booster = fit_booster(parts["train"], parts["validation"], spec, params)
    cal = parts["calibration"]
    cal_margin = booster.predict(cal[spec.columns], raw_score=True)
    calibrator = fit_calibrator(cal_margin, cal["label"], params.calibration.method)
    b = params.buckets
    buckets = fit_buckets(calibrator(cal_margin), b.method, b.hot_share, b.warm_share,
                          b.hot_probability, b.warm_probability)
    scorer = LeadScorer(
        booster=booster, spec=spec, calibrator=calibrator, buckets=buckets, horizon_days=s.horizon_days,
        labels=dict(params.data.labels),
        meta={"trained_through": str(splits.calibration.max() + pd.Timedelta(days=s.horizon_days)),
              "splits": splits.describe(), "best_iteration": booster.current_iteration(),
              "versions": library_versions()},
    )

    test = parts["test"]
    margin = scorer.margin(test)
    test = test.assign(margin=margin, raw_probability=1 / (1 + np.exp(-margin)),
                       probability=scorer.calibrator(margin))
    test["bucket"] = scorer.buckets.assign(test["probability"])
    metrics = classification_metrics(test["label"], test["probability"])
    raw = classification_metrics(test["label"], test["raw_probability"])
    metrics.update({f"raw_{k}": raw[k] for k in ("roc_auc", "ece", "brier", "log_loss")})
    metrics["thermometer_roc_auc"] = classification_metrics(test["label"], test["thermometer_score"])["roc_auc"]
    metrics["best_iteration"] = float(booster.current_iteration())
    valid = parts["validation"]
    metrics["validation_roc_auc"] = classification_metrics(valid["label"], calibrator(scorer.margin(valid)))["roc_auc"]
    return TrainingResult(
        scorer=scorer, splits=splits, test=test, metrics=metrics,
        buckets=bucket_table(test["label"], test["bucket"]),
        fingerprint=fingerprint(leads, interactions, frame, until, sources or {}),
    )


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in ("lightgbm", "pandas", "numpy", "scikit-learn", "mlflow", "shap")}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    model_uri: str
    version: str
    champion: bool
    export_path: Path | None


def _shap_summary(result: TrainingResult, path: Path, sample: int = 2000) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    spec = result.scorer.spec
    rows = result.test.sample(min(sample, len(result.test)), random_state=0)
    contrib = result.scorer.contributions(rows)[:, :-1]
    shown = rows[spec.columns].apply(lambda c: c.cat.codes.replace(-1, np.nan) if isinstance(c.dtype, pd.CategoricalDtype) else c)
    shap.summary_plot(contrib, shown.astype(float), max_display=20, show=False)
    plt.gcf().savefig(path, dpi=100, bbox_inches="tight")
    plt.close("all")


def log_run(result: TrainingResult, params: Params, export_dir: str | Path | None = None) -> LoggedModel:
    """One MLflow run: params, fingerprint, metrics, plots and the registered pyfunc model."""
    import mlflow
    from mlflow import MlflowClient

    from leadtemp.model import pyfunc_arguments

    mlflow.set_experiment(params.mlflow.experiment)
    name = params.mlflow.registered_model
    with mlflow.start_run(run_name=f"train through {result.scorer.meta['trained_through'][:10]}") as run:
        mlflow.log_params(params.flat())
        mlflow.log_params({f"fingerprint.{k}": v for k, v in result.fingerprint.items() if k != "lead_columns"})
        mlflow.set_tags({"git_commit": git_commit() or "unknown",
                         **{f"version.{k}": v for k, v in library_versions().items()}})
        mlflow.log_dict(result.fingerprint, "data_fingerprint.json")
        mlflow.log_dict(result.splits.describe(), "splits.json")
        mlflow.log_metrics({f"test_{k}" if not k.startswith(("validation", "best")) else k: v
                            for k, v in result.metrics.items()})
        for row in result.buckets.itertuples():
            mlflow.log_metrics({f"test_{row.bucket}_{k}": getattr(row, k)
                                for k in ("leads", "converted", "rate", "rate_low", "rate_high")})
        mlflow.log_table(result.buckets, "bucket_table.json")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            y = result.test["label"].to_numpy()
            curves = {"calibrated": result.test["probability"].to_numpy(), "raw booster": result.test["raw_probability"].to_numpy()}
            plot_reliability(y, curves, tmp / "reliability.png")
            plot_gains(y, {"leadtemp": curves["calibrated"], "thermometer": result.test["thermometer_score"].to_numpy()}, tmp / "gains.png")
            _shap_summary(result, tmp / "shap_summary.png")
            for png in ("reliability.png", "gains.png", "shap_summary.png"):
                mlflow.log_artifact(str(tmp / png), "plots")
            scorer_dir = result.scorer.save(tmp / "scorer")
            example = (_input_example(result), {"as_of": str(result.test["cutoff"].max().date())})
            info = mlflow.pyfunc.log_model(name="model", registered_model_name=name,
                                           **pyfunc_arguments(result.scorer, scorer_dir, example))
            version = str(info.registered_model_version)
            client = MlflowClient()
            champion = "champion" not in client.get_registered_model(name).aliases
            if champion:
                client.set_registered_model_alias(name, "champion", version)
            mlflow.set_tag("registered_version", version)
            export = None
            if export_dir is not None:
                export = _export(result.scorer, version, run.info.run_id, Path(export_dir), tmp, example)
    return LoggedModel(run.info.run_id, info.model_uri, version, champion, export)


def _input_example(result: TrainingResult) -> pd.DataFrame:
    """Three synthetic leads shaped like the real input: no real ids, no personal columns."""
    from leadtemp.model import nest

    spec = result.scorer.spec
    cutoff = result.test["cutoff"].max()
    leads = pd.DataFrame({
        "lead_id": ["example-1", "example-2", "example-3"],
        "created_at": [cutoff - pd.Timedelta(days=d) for d in (40, 100, 10)],
        "converted_at": pd.Series([pd.NaT] * 3, dtype="datetime64[ns]"),
        **{c: [cats[0] if cats else None] * 3 for c, cats in spec.categorical.items()},
        **{c: [0.0] * 3 for c in spec.numeric},
    })
    channel = spec.channels[0] if spec.channels else None
    events = pd.DataFrame({
        "lead_id": ["example-1", "example-1"] if channel else [],
        "timestamp": [cutoff - pd.Timedelta(days=d) for d in (3, 20)] if channel else [],
        "type": [channel.type] * 2 if channel else [], "direction": [channel.direction] * 2 if channel else [],
    })
    events["timestamp"] = pd.to_datetime(events["timestamp"])
    return nest(leads, events, result.scorer)


def _export(scorer: LeadScorer, version: str, run_id: str, export_dir: Path, tmp: Path, example) -> Path:
    """Save the model as an MLflow folder models/vN and refresh models/latest (atomically)."""
    import mlflow

    from leadtemp.io import replace_dir
    from leadtemp.model import pyfunc_arguments

    # The export knows its registry version; the caller's scorer is left as it was.
    exported = dataclasses.replace(scorer, meta={**scorer.meta, "model_version": version, "run_id": run_id})
    staging = tmp / f"v{version}"
    mlflow.pyfunc.save_model(str(staging), metadata={"model_version": version, "run_id": run_id},
                             **pyfunc_arguments(exported, exported.save(tmp / "scorer_export"), example))
    export_dir.mkdir(parents=True, exist_ok=True)
    replace_dir(staging, export_dir / f"v{version}")
    replace_dir(staging, export_dir / "latest")
    return export_dir / f"v{version}"
