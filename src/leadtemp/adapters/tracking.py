"""MLflow: every run, registry version and alias move (models are loaded from the registry in adapters/pyfunc.py).

A training run logs params, the data fingerprint, metrics, plots and the registered pyfunc model;
backtests log a parent run with one child run per quarter; a retrain logs its challenger with the
comparison, the drift report and the decision, and moves the registry aliases ``champion`` and
``previous``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from leadtemp.adapters.metric_names import logged_metrics, metric_name
from leadtemp.adapters.plots import plot_gains, plot_reliability, plot_shap_summary, slice_caption
from leadtemp.adapters.report import log_backtest_report, log_report, log_report_data
from leadtemp.core.config import CHAMPION, PREVIOUS, Params
from leadtemp.core.errors import ConfigError
from leadtemp.core.schema import CREATED_AT
from leadtemp.modelling.fit import library_versions
from leadtemp.modelling.results import Backtest, RetrainReport, TrainingResult
from leadtemp.modelling.scorer import LeadScorer


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
    version: str | None   # None: logged in the run only, not registered
    champion: bool
    export_path: Path | None
    champion_version: str | None = None  # the version with the alias champion after this run (this one, or another)


# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces: "No data available") and hides
# the runs; "custom_model_development" is the UI's own value for model training (mlflow.experimentKind).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def use_experiment(name: str) -> None:
    """Make ``name`` the active experiment (created if new), tagged so the MLflow UI opens on its runs."""
    import mlflow

    experiment = mlflow.set_experiment(name)
    if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        for key, value in EXPERIMENT_KIND.items():
            mlflow.set_experiment_tag(key, value)


def _log_metrics(result: TrainingResult) -> None:
    import mlflow

    on_test = {k: v for k, v in result.metrics.items() if not k.startswith(("validation", "best", "folds", "rounds"))}
    mlflow.log_metrics({**logged_metrics(on_test, "test_"),
                        **logged_metrics({k: v for k, v in result.metrics.items() if k not in on_test})})
    for row in result.buckets.itertuples():
        mlflow.log_metrics(logged_metrics({f"{row.bucket}_{k}": getattr(row, k)
                                           for k in ("leads", "converted", "rate", "rate_low", "rate_high")}, "test_"))
    mlflow.log_table(result.buckets, "bucket_table.json")


def _log_plots(result: TrainingResult, tmp: Path) -> None:
    """Reliability, gains and SHAP summary of the test slice, under the run's ``plots/``."""
    import mlflow

    y = result.test["label"].to_numpy()
    curves = {"calibrated": result.test["probability"].to_numpy(), "raw booster": result.test["raw_probability"].to_numpy()}
    about = slice_caption(result.test)  # every title: the test period, its rows and conversions
    plot_reliability(y, curves, tmp / "reliability.png", about=about)
    gains = {"leadtemp": curves["calibrated"]}
    if "thermometer_roc_auc" in result.metrics:  # not where it is not applicable (the same score for every lead)
        gains["thermometer"] = result.test["thermometer_score"].to_numpy()
    plot_gains(y, gains, tmp / "gains.png", about=about)
    plot_shap_summary(result.scorer, result.test, tmp / "shap_summary.png", about=about)
    for png in ("reliability.png", "gains.png", "shap_summary.png"):
        mlflow.log_artifact(str(tmp / png), "plots")


def params_in_force(params: Params) -> dict:
    """The flattened params without the settings this run does not use, so none is read as the model's: the
    bucket settings of the other method (``buckets.hot_probability`` when the cut-offs are shares), the splits of
    the other method or data shape, and ``simulate.*`` (the simulator's, not training's)."""
    flat = params.flat()
    unused = {"buckets.hot_probability", "buckets.warm_probability"} if params.buckets.method == "share" else \
        {"buckets.hot_share", "buckets.warm_share"}
    if params.data.mode == "labels":
        unused |= {"splits.test_cutoffs", "splits.fold_cutoffs", "splits.calibration_cutoffs", "splits.validation_cutoffs"}
        if params.splits.method == "chain":
            unused.add("splits.folds")
    else:
        unused |= {"splits.test_fraction", "splits.calibration_fraction", "splits.validation_fraction"}
        unused |= ({"splits.calibration_cutoffs", "splits.validation_cutoffs"} if params.splits.method == "rolling"
                   else {"splits.folds", "splits.fold_cutoffs"})
    return {k: v for k, v in flat.items() if k not in unused and not k.startswith("simulate.")}


def _day(value) -> str:
    """A date as YYYY-MM-DD, or "?" where there is none (NaT, "no time")."""
    when = pd.Timestamp(value) if value is not None and str(value) not in ("", "no time") else pd.NaT
    return "?" if pd.isna(when) else f"{when:%Y-%m-%d}"


def data_period(result: TrainingResult) -> str:
    """The data a model learned from: its first lead's creation to ``trained_through``, e.g. 2024-01-01…2025-01-30."""
    return f"{_day(result.fingerprint.get('created_from'))}\u2026{_day(result.scorer.meta.get('trained_through'))}"


def _start_run(experiment: str, run_name: str, started: float | None):
    """``mlflow.start_run`` in ``experiment`` (made active by :func:`use_experiment`), its start time set back to
    ``started`` when given."""
    import mlflow
    from mlflow import MlflowClient

    if started is None:
        return mlflow.start_run(run_name=run_name)
    experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    run = MlflowClient().create_run(experiment_id, start_time=int(started * 1000), run_name=run_name)
    return mlflow.start_run(run_id=run.info.run_id)


def log_run(result: TrainingResult, params: Params, export_dir: str | Path | None = None, *,
            register: bool = True, claim_champion: bool = True, run_name: str | None = None,
            extra: Callable[[], None] | None = None, started: float | None = None) -> LoggedModel:
    """One MLflow run: params, fingerprint, metrics, plots and the pyfunc model.

    ``started``: when the work began (``time.time()``), so the run's duration in the UI is the training's and not
    only the logging's.

    ``register``: add the model to the registry as a new version (it never replaces one);
    ``claim_champion``: give it the alias ``champion`` if no version has it yet and it passed every
    ship gate (:attr:`TrainingResult.fit_to_ship`); ``extra``: more to
    log inside the same run (a retrain's comparison and decision).
    """
    import mlflow
    from mlflow import MlflowClient

    from leadtemp.adapters.pyfunc import pyfunc_arguments

    use_experiment(params.mlflow.experiment)
    name = params.mlflow.registered_model
    run_name = run_name or f"train {data_period(result)}"
    with _start_run(params.mlflow.experiment, run_name, started) as run:
        mlflow.log_params(params_in_force(params))
        # What `auto` settings became, and what the rolling-origin folds chose (the params above say "auto").
        chosen = {**{f"chosen.{k}": v for k, v in result.scorer.meta.get("cadence", {}).items()},
                  **{f"chosen.{k}": result.scorer.meta["selection"][k] for k in ("family", "rounds", "calibration",
                                                                                  "min_data_in_leaf")
                     if k in result.scorer.meta.get("selection", {})}}
        if timing := getattr(result.scorer, "timing_days", ()):  # the horizons of p_<h>d the history could label
            chosen["chosen.when_horizons_days"] = ",".join(map(str, timing))
        if chosen:
            mlflow.log_params(chosen)
        mlflow.log_params({f"fingerprint.{k}": v for k, v in result.fingerprint.items() if k != "lead_columns"})
        mlflow.set_tags({"git_commit": git_commit() or "unknown", "data_mode": params.data.mode,
                         "split": getattr(result.splits, "kind", "time-ordered cutoffs"),
                         "out_of_time_check": str(result.out_of_time).lower(),
                         "prediction_sha256": result.prediction_sha256,
                         **{f"version.{k}": v for k, v in library_versions().items()}})
        mlflow.log_dict(result.fingerprint, "data_fingerprint.json")
        mlflow.log_dict(result.splits.describe(), "splits.json")
        mlflow.log_dict({"fit_to_ship": result.fit_to_ship, "gates": [dataclasses.asdict(g) for g in result.gates]},
                        "gates.json")
        mlflow.set_tag("fit_to_ship", str(result.fit_to_ship).lower())
        mlflow.set_tag("mlflow.note.content", model_summary(result))  # the run page's description
        # The bucket cut-offs in force (the buckets.* params above are settings, not the cut-offs of this model).
        mlflow.log_params({"chosen.hot_cutoff": round(result.scorer.buckets.hot, 6),
                           "chosen.warm_cutoff": round(result.scorer.buckets.warm, 6)})
        mlflow.log_table(result.leakage, "leakage_check.json")
        if result.warnings:
            mlflow.log_text("\n".join(result.warnings) + "\n", "warnings.txt")
        _log_metrics(result)
        log_report_data(result)  # the test slice's curves and the drivers, for report.html and `leadtemp report`
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _log_plots(result, tmp)
            scorer_dir = result.scorer.save(tmp / "scorer")
            example = (_input_example(result), {"as_of": str(_example_as_of(result).date())})
            if extra is not None:
                extra()
            info = mlflow.pyfunc.log_model(name=name, registered_model_name=name if register else None,
                                           **pyfunc_arguments(result.scorer, scorer_dir, example))
            if not register:
                log_report(run.info.run_id, name)
                return LoggedModel(run.info.run_id, info.model_uri, None, False, None)
            version = str(info.registered_model_version)
            client = MlflowClient()
            describe_version(client, name, version, result)
            # A model that failed a ship gate (constant, no better than chance, ...) is never champion.
            holder = client.get_registered_model(name).aliases.get(CHAMPION)
            champion = claim_champion and result.fit_to_ship and holder is None
            if champion:
                client.set_registered_model_alias(name, CHAMPION, version)
            mlflow.set_tag("registered_version", version)
            export = None
            if export_dir is not None:
                export = _export(result.scorer, version, run.info.run_id, Path(export_dir), tmp, example)
                if champion:
                    export_champion(Path(export_dir), version)
            log_report(run.info.run_id, name)  # last: it says whether the model became champion
    return LoggedModel(run.info.run_id, info.model_uri, version, champion, export,
                       version if champion else None if holder is None else str(holder))


def model_summary(result: TrainingResult) -> str:
    """The verdict in Markdown for the run, the registered version and the registry page: what hot, warm and cold
    mean with the cut-offs in force, how well it ranks, how its buckets converted, what it learned from.
    No personal data: counts, dates and rates only."""
    m, meta, cut = result.metrics, result.scorer.meta, result.scorer.buckets
    rows = result.buckets.set_index("bucket")
    test = result.splits.describe().get("test", "")

    def bucket(name: str) -> str:
        r = rows.loc[name]
        rate = "empty" if r["leads"] == 0 else f"{r['rate']:.1%} ({r['rate_low']:.1%}–{r['rate_high']:.1%})"
        return f"{int(r['leads']):,} test rows, converted {rate}"

    lines = [
        f"**{'Fit to ship' if result.fit_to_ship else 'NOT fit to ship'}** "
        + ("" if result.fit_to_ship else "(failed: " + ", ".join(g.name for g in result.gates if not g.passed) + ")"),
        "",
        f"- **hot**: calibrated chance ≥ {cut.hot:.3f}: {bucket('hot')}",
        f"- **warm**: ≥ {cut.warm:.3f}: {bucket('warm')}",
        f"- **cold**: below {cut.warm:.3f}: {bucket('cold')}",
        f"- test slice {test}: ROC-AUC {m['roc_auc']:.3f}"
        + (f", within a cutoff {m['within_cutoff_roc_auc']:.3f}" if "within_cutoff_roc_auc" in m else "")
        + (f", thermometer rule {m['thermometer_roc_auc']:.3f}" if "thermometer_roc_auc" in m else "")
        + f"; ECE {m['ece']:.3f}",
        f"- labels learned up to {str(meta.get('trained_through', ''))[:10]}; data up to "
        f"{str(meta.get('observed_until', ''))[:10]}",
    ]
    if "cadence" in meta:
        c = meta["cadence"]
        lines.append(f"- horizon {c['horizon_days']} days, cutoffs {c['frequency']}")
    return "\n".join(lines) + "\n"


def describe_version(client, name: str, version: str, result: TrainingResult) -> None:
    """Description and tags of a registered version (and of the registered model, once) for the registry pages."""
    summary = model_summary(result)
    client.update_model_version(name, version, description=summary)
    m, meta = result.metrics, result.scorer.meta
    tags = {"trained_through": str(meta.get("trained_through", ""))[:10], "fit_to_ship": str(result.fit_to_ship).lower(),
            "test_roc_auc": f"{m['roc_auc']:.3f}", "test_ece": f"{m['ece']:.4f}",
            "hot_cutoff": f"{result.scorer.buckets.hot:.4f}", "warm_cutoff": f"{result.scorer.buckets.warm:.4f}"}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=(
            "leadtemp lead scoring: the calibrated chance that a lead converts within the horizon, and its bucket "
            "(hot / warm / cold). Each version's description gives its cut-offs, test quality and data period; the "
            "alias `champion` is the version scoring uses."))


def export_champion(export_dir: Path, version: str) -> Path | None:
    """Make ``models/champion`` a copy of ``models/vN``: offline scoring follows the alias, not the newest model.

    Returns None when this machine has no ``models/vN`` (a version exported elsewhere).
    """
    from leadtemp.adapters.files import replace_dir

    source = Path(export_dir) / f"v{version}"
    if not source.is_dir():
        return None
    replace_dir(source, Path(export_dir) / CHAMPION)
    return Path(export_dir) / CHAMPION


def _example_as_of(result: TrainingResult) -> pd.Timestamp:
    """A scoring date for the logged example: after the newest test row, or a fixed date without time."""
    when = result.test["cutoff"].max() if "cutoff" in result.test.columns else result.test[CREATED_AT].max()
    return pd.Timestamp("2000-01-01") if pd.isna(when) else when.normalize() + pd.Timedelta(days=1)


def _input_example(result: TrainingResult) -> pd.DataFrame:
    """Three synthetic leads shaped like the real input: no real ids, no personal columns, no outcome, and
    no missing value (MLflow writes the example as JSON, where a missing value would be a bare NaN)."""
    from leadtemp.adapters.pyfunc import nest

    spec = result.scorer.spec
    cutoff = _example_as_of(result)
    leads = pd.DataFrame({
        "lead_id": ["example-1", "example-2", "example-3"],
        "created_at": [cutoff - pd.Timedelta(days=d) for d in (40, 100, 10)],
        **{c: [cats[i * (len(cats) - 1) // 2] if cats else "" for i in range(3)] for c, cats in spec.categorical.items()},
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

    from leadtemp.adapters.files import replace_dir
    from leadtemp.adapters.pyfunc import pyfunc_arguments

    # The export knows its registry version; the caller's scorer is left as it was.
    exported = dataclasses.replace(scorer, meta={**scorer.meta, "model_version": version, "run_id": run_id})
    staging = tmp / f"v{version}"
    mlflow.pyfunc.save_model(str(staging), metadata={"model_version": version, "run_id": run_id},
                             **pyfunc_arguments(exported, exported.save(tmp / "scorer_export"), example))
    export_dir.mkdir(parents=True, exist_ok=True)
    if (export_dir / f"v{version}").exists():  # a version folder is never replaced
        raise ConfigError(f"{export_dir / f'v{version}'} already exists, from another registry (was the MLflow store "
                          f"replaced?); version {version} is registered in MLflow, but move that folder away to export it")
    replace_dir(staging, export_dir / f"v{version}")
    replace_dir(staging, export_dir / "latest")
    return export_dir / f"v{version}"


# -- quarterly workflow ---------------------------------------------------------------------------

def load_champion(params: Params) -> tuple[LeadScorer, str] | None:
    """The registry's champion (scorer, version), or None when the model or the alias does not exist yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from leadtemp.adapters.pyfunc import load_scorer

    name = params.mlflow.registered_model
    try:
        MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    return load_scorer(f"models:/{name}@{CHAMPION}")


def backtest_run_name(backtest: Backtest) -> str:
    """The quarters tested and the data the first model learned from, e.g. "backtest 2024Q1…2024Q4, first model
    train 2023-01-01…2023-12-01"."""
    if not backtest.folds:
        return "backtest (no quarter)"
    first, last = backtest.folds[0], backtest.folds[-1]
    return f"backtest {first.quarter}\u2026{last.quarter}, first model train {data_period(first.result)}"


def retrain_run_name(report: RetrainReport) -> str:
    """The challenger's data period and the window both models are compared on, e.g. "retrain 2023-01-01…2024-11-01,
    compared on 2024-08-01…2024-10-01"; a retrain without a challenger names the date it was run through."""
    name = (f"retrain {data_period(report.challenger)}" if report.challenger is not None
            else f"retrain through {report.through:%Y-%m-%d} (no challenger)")
    if len(report.window):
        name += f", compared on {report.window.min():%Y-%m-%d}\u2026{report.window.max():%Y-%m-%d}"
    return name


def log_backtest(backtest: Backtest, params: Params) -> str:
    """One parent run with the table; a child run per quarter with its metrics. Returns the parent run id."""
    import mlflow

    use_experiment(params.mlflow.experiment)
    table = backtest.table()
    with mlflow.start_run(run_name=backtest_run_name(backtest)) as parent:
        mlflow.log_params(params_in_force(params))
        mlflow.set_tags({"kind": "backtest", "git_commit": git_commit() or "unknown"})
        mlflow.log_table(table, "backtest.json")
        mlflow.log_text(table.to_csv(index=False), "backtest.csv")
        for name in ("roc_auc", "pr_auc", "ece", "lift_at_10", "thermometer_roc_auc"):
            if name in table.columns and table[name].notna().any():  # the thermometer: not where it is not applicable
                mlflow.log_metric(f"mean_{metric_name(name)}", float(table[name].mean()))
        for fold in backtest.folds:
            with mlflow.start_run(run_name=f"backtest {fold.quarter}: train {data_period(fold.result)}", nested=True):
                mlflow.set_tags({"kind": "backtest quarter", "quarter": fold.quarter,
                                 "prediction_sha256": fold.result.prediction_sha256})
                mlflow.log_params({"quarter": fold.quarter, "trained_with_data_before": str(fold.start.date()),
                                   "trained_through": fold.result.scorer.meta["trained_through"][:10]})
                mlflow.log_params({f"fingerprint.{k}": v for k, v in fold.result.fingerprint.items()
                                   if k != "lead_columns"})
                mlflow.log_metrics(logged_metrics(fold.metrics))
    log_backtest_report(parent.info.run_id)
    return parent.info.run_id


def _log_retrain(report: RetrainReport, dry_run: bool) -> None:
    """Inside the retrain's run: both models' window metrics, the AUC difference, the drift report, every gate."""
    import mlflow

    mlflow.set_tags({"kind": "retrain", "decision": "promote" if report.promote else "keep",
                     "dry_run": str(dry_run).lower(), "champion_version": report.champion_version or "none"})
    mlflow.log_params({"retrain.through": str(report.through.date()),
                       "retrain.window": ", ".join(report.window.strftime("%Y-%m-%d"))})
    for who, metrics in (("challenger", report.challenger_metrics), ("champion", report.champion_metrics)):
        mlflow.log_metrics(logged_metrics(metrics, f"window_{who}_"))
    if report.auc_difference is not None:
        diff, low, high = report.auc_difference
        mlflow.log_metrics({k: v for k, v in (("window_auc_difference", diff), ("window_auc_difference_low", low),
                                              ("window_auc_difference_high", high)) if pd.notna(v)})
    mlflow.log_dict({"promote": report.promote, "verdict": report.verdict(), "notes": report.notes,
                     "gates": [dataclasses.asdict(g) for g in report.gates]}, "retrain_decision.json")
    if report.drift is not None:
        mlflow.log_dict(report.drift.to_dict(), "drift_report.json")
        mlflow.log_metrics({f"psi.{row.feature}": row.psi for row in report.drift.features.itertuples()})
        if report.drift.warnings:
            mlflow.log_text("\n".join(report.drift.warnings) + "\n", "drift_warnings.txt")


def log_retrain(report: RetrainReport, params: Params, export_dir: str | Path | None, dry_run: bool,
                started: float | None = None) -> LoggedModel | None:
    """Log the retrain; register the challenger as a new version (not on a dry run); move the aliases if promoted.

    Promotion: ``champion`` moves to the challenger, ``previous`` to the version it replaces, and the
    new version's tag ``replaced`` remembers that one, so rollbacks can go back more than one step.
    """
    import mlflow
    from mlflow import MlflowClient

    run_name = retrain_run_name(report)
    if report.challenger is None:  # nothing to log but the decision
        use_experiment(params.mlflow.experiment)
        with _start_run(params.mlflow.experiment, run_name, started):
            mlflow.log_params(params_in_force(params))
            _log_retrain(report, dry_run)
        return None
    logged = log_run(report.challenger, params, None if dry_run else export_dir, register=not dry_run,
                     claim_champion=False, run_name=run_name, extra=lambda: _log_retrain(report, dry_run),
                     started=started)
    if report.promote and not dry_run:
        client, name = MlflowClient(), params.mlflow.registered_model
        if report.champion_version is not None:
            client.set_registered_model_alias(name, PREVIOUS, report.champion_version)
            client.set_model_version_tag(name, logged.version, "replaced", report.champion_version)
        client.set_registered_model_alias(name, CHAMPION, logged.version)
        if export_dir is not None:
            export_champion(Path(export_dir), logged.version)
        log_report(logged.run_id, name)  # again: the report now says it is the champion
    return logged


def rollback(params: Params) -> tuple[str, str, Path | None]:
    """Move ``champion`` back to ``previous``; ``previous`` then moves one step further back, if known.

    Returns the version demoted, the version now champion and ``models/champion`` if refreshed.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client, name = MlflowClient(), params.mlflow.registered_model
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        previous = client.get_model_version_by_alias(name, PREVIOUS)
    except MlflowException as exc:
        raise ConfigError(f"nothing to roll back to: model {name!r} needs the aliases champion and previous ({exc})") from None
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    client.set_model_version_tag(name, current.version, "rolled_back_from", CHAMPION)
    before = previous.tags.get("replaced")
    if before:
        client.set_registered_model_alias(name, PREVIOUS, before)
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    return current.version, previous.version, export_champion(Path(params.mlflow.export_dir), previous.version)
