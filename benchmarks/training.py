"""Training at scale: the time of each stage of the default pipeline against bare `lightgbm.train`.

Simulates --leads leads over --months months (not timed), then runs the default pipeline exactly as
`leadtemp train` does — `workflows.train.train` with params.yaml, then `adapters.tracking.log_run` into a
temporary SQLite MLflow store — and times its stages by wrapping the functions the pipeline calls (the
wrappers only measure: arguments and results pass through untouched, nothing in src changes):

  cadence          resolve_cadence: auto horizon/frequency, builds the snapshots once to check the folds
  lifecycle        loss_spells (lost leads are not at risk)
  feature spec     fit_feature_spec (categories, channels)
  snapshots        the training snapshots (periodic + at creation, sliced)
  features         build_training_frame
  slices, checks   slicing, leakage report, context columns, vocabulary notes
  fold datasets    LightGBM datasets of each rolling-origin fold (binned once, shared by the families)
  fold boosters    early-stopped boosters of each fold, one row per family (trees, additive)
  calibration choice, logistic baseline, fold bootstrap   the rest of modelling/select.py
  final booster    fit_rounds on the whole pool with the chosen rounds and family
  calibration + buckets   assemble_scorer: calibrator, cut-offs, drift profile, category rates
  test evaluation  test-slice metrics, bucket table, fingerprint, ship and fold gates
  shap summary     TreeSHAP driver plot (plot_shap_summary) and the report's driver table
  mlflow           log_run without the SHAP summary: params, metrics, plots, pyfunc model, registry, report

The reference is bare `lightgbm.train` on the final pool's feature matrix (numpy, prepared untimed) with
the final booster's parameters and rounds; its Dataset construction (binning) is timed, as the pipeline's
is. ratio = stage seconds / bare seconds; the `pipeline` row is train + log_run (what `leadtemp train`
costs), `train` the workflow alone. The issue's target: pipeline <= 2x bare.

The machine is shared: every row records the 1-minute load average when its stage ended, and the run
records OMP_WAIT_POLICY (set to PASSIVE here unless given: spin-waiting OpenMP threads on a busy machine
made one training 30x slower) and LightGBM's num_threads.

Usage: python benchmarks/training.py [--leads 200000] [--months 24] [--seed 7] [--bare-repeat 2]
Writes benchmarks/results/training.json and training.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before LightGBM (OpenMP) loads
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent


class Stopwatch:
    """Seconds per stage, accumulated over calls, with the load average when the stage last ended."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.load: dict[str, float] = {}
        self.captured: dict[str, tuple] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.calls[stage] = self.calls.get(stage, 0) + 1
        self.load[stage] = os.getloadavg()[0]

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def wrap(self, module, attribute: str, stage, capture: bool = False) -> None:
        """Replace ``module.attribute`` by a timed pass-through; ``stage``: a name or a function of the arguments."""
        inner = getattr(module, attribute)

        @functools.wraps(inner)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(stage(*args, **kwargs) if callable(stage) else stage, time.perf_counter() - start)
                if capture:
                    self.captured[attribute] = (args, kwargs)

        setattr(module, attribute, timed)


def instrument(watch: Stopwatch) -> None:
    """Timers around the functions train() and log_run() call, in the namespaces they are called from."""
    from leadtemp.adapters import report, tracking
    from leadtemp.modelling import fit, select
    from leadtemp.workflows import train

    for attribute, stage in [("resolve_cadence", "cadence"), ("loss_spells", "lifecycle"),
                             ("fit_feature_spec", "feature spec"), ("_snapshots", "snapshots"),
                             ("build_training_frame", "features"), ("_slices", "slices, checks"),
                             ("vocabulary_notes", "slices, checks"), ("_evaluate", "test evaluation"),
                             ("bucket_table", "test evaluation"), ("fingerprint", "test evaluation"),
                             ("ship_gates", "test evaluation"), ("fold_gates", "test evaluation")]:
        watch.wrap(train, attribute, stage)
    watch.wrap(fit, "select", "selection (total)")
    watch.wrap(select, "fold_datasets", "fold datasets")
    watch.wrap(select, "evaluate_family", lambda family, *a, **k: f"fold boosters: {family}")
    inner_curves = select._curves

    def curves(datasets, lgb_params, params):  # the rounds each fold booster trained (early stopping included)
        boosters, found = inner_curves(datasets, lgb_params, params)
        family = "additive" if lgb_params.get("num_leaves") == 2 else "trees"
        watch.captured.setdefault("fold_rounds", {})[family] = [len(c) for c in found]
        return boosters, found

    select._curves = curves
    watch.wrap(select, "choose_calibration", "calibration choice")
    watch.wrap(select, "logistic_fold_auc", "logistic baseline")
    watch.wrap(select, "lead_auc_interval", "fold bootstrap")
    watch.wrap(fit, "fit_rounds", "final booster", capture=True)
    watch.wrap(fit, "assemble_scorer", "calibration + buckets")
    watch.wrap(tracking, "plot_shap_summary", "shap: plot")
    watch.wrap(report, "drivers", "shap: drivers")
    watch.wrap(tracking, "use_experiment", "mlflow: store + experiment")
    watch.wrap(tracking, "_log_plots", "mlflow: plots (total)")
    watch.wrap(tracking, "log_report_data", "mlflow: report data (total)")
    watch.wrap(tracking, "log_report", "mlflow: report.html")
    import mlflow.pyfunc

    watch.wrap(mlflow.pyfunc, "log_model", "mlflow: pyfunc model")


def bare_lightgbm(args: tuple, kwargs: dict, repeat: int) -> dict:
    """Best of ``repeat`` bare `lightgbm.train` runs on the final pool's matrix, same parameters and rounds,
    alternating with as many reruns of the pipeline's own final-booster call (``fit_rounds``, same arguments), so
    the two are compared at the same moment's load; both boosters must predict the same."""
    import lightgbm as lgb
    import numpy as np

    from leadtemp.core.features import feature_matrix
    from leadtemp.modelling.booster import fit_rounds, lead_weights, lightgbm_params

    frame, spec, params, rounds, *rest = args
    overrides = rest[0] if rest else kwargs.get("overrides")
    lgb_params = {**lightgbm_params(params, len(frame)), **(overrides or {})}
    X, y = feature_matrix(frame, spec), frame["label"].to_numpy()
    weight = lead_weights(frame) if params.snapshots.weight_per_lead else None
    categorical = [spec.columns.index(c) for c in spec.categorical]
    bare, ours, loads = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        booster = lgb.train(lgb_params, lgb.Dataset(X, y, weight=weight, categorical_feature=categorical),
                            num_boost_round=rounds)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        pipeline_booster = fit_rounds(*args, **kwargs)
        ours.append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    difference = float(np.abs(booster.predict(X, raw_score=True) - pipeline_booster.predict(X, raw_score=True)).max())
    return {"seconds": min(bare), "runs": bare, "final_booster_reruns": ours, "loads": loads, "params": lgb_params,
            "rounds": rounds, "max_abs_margin_difference": difference}


LEAVES = ["cadence", "lifecycle", "feature spec", "snapshots", "features", "slices, checks", "fold datasets",
          "fold boosters: trees", "fold boosters: additive", "calibration choice", "logistic baseline", "fold bootstrap",
          "selection: other", "final booster", "calibration + buckets", "test evaluation", "train: other",
          "shap summary", "mlflow: store + experiment", "mlflow: plots", "mlflow: report data", "mlflow: pyfunc model",
          "mlflow: report.html", "mlflow: other"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=200_000, help="simulated leads (the issue: 200k over 2 years)")
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bare-repeat", type=int, default=3, help="bare lightgbm.train runs (the best is kept)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for training.json and .md")
    args = parser.parse_args()

    from leadtemp.adapters import tracking
    from leadtemp.core.config import load_params
    from leadtemp.simulate import simulate
    from leadtemp.workflows import train as train_module

    watch = Stopwatch()
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    sim = simulate(args.leads, seed=args.seed, months=args.months)
    simulate_s = time.perf_counter() - t0
    print(f"simulated {args.leads:,} leads, {len(sim.interactions):,} interactions over {args.months} months in "
          f"{simulate_s:.1f} s (not counted); load {os.getloadavg()[0]:.2f}", flush=True)
    params = load_params(HERE.parent / "params.yaml")
    instrument(watch)

    with tempfile.TemporaryDirectory(prefix="leadtemp-trainbench-") as tmp:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_registry_uri(f"sqlite:///{tmp}/mlflow.db")
        with watch.stage("train"):
            result = train_module.train(sim.leads, sim.interactions, params)
        print(f"train {watch.seconds['train']:.1f} s; load {watch.load['train']:.2f}", flush=True)
        with watch.stage("log_run"):
            tracking.log_run(result, params, register=True)
        print(f"log_run {watch.seconds['log_run']:.1f} s; load {watch.load['log_run']:.2f}", flush=True)
        mlflow.set_tracking_uri("")  # forget the temporary store before it is deleted

    bare = bare_lightgbm(*watch.captured["fit_rounds"], repeat=args.bare_repeat)
    bare_s, lgb_params, rounds = bare["seconds"], bare["params"], bare["rounds"]
    watch.seconds["bare lightgbm.train"], watch.load["bare lightgbm.train"] = bare_s, max(bare["loads"])
    watch.seconds["final booster, rerun beside bare"] = min(bare["final_booster_reruns"])
    watch.load["final booster, rerun beside bare"] = max(bare["loads"])
    print(f"bare lightgbm.train {bare_s:.1f} s ({rounds} rounds), the pipeline's final booster rerun beside it "
          f"{min(bare['final_booster_reruns']):.1f} s; loads {bare['loads']}; max |margin difference| "
          f"{bare['max_abs_margin_difference']:.2g}", flush=True)

    s = watch.seconds
    inner = ["fold datasets", "fold boosters: trees", "fold boosters: additive", "calibration choice",
             "logistic baseline", "fold bootstrap"]
    s["selection: other"] = s.get("selection (total)", 0.0) - sum(s.get(k, 0.0) for k in inner)
    watch.load["selection: other"] = watch.load.get("selection (total)")
    counted = LEAVES[:LEAVES.index("train: other")]  # the stages inside train()
    s["train: other"] = s["train"] - sum(s.get(k, 0.0) for k in counted)
    watch.load["train: other"] = watch.load["train"]
    s["shap summary"] = s.get("shap: plot", 0.0) + s.get("shap: drivers", 0.0)
    watch.load["shap summary"] = watch.load.get("shap: plot")
    s["mlflow: plots"] = s.get("mlflow: plots (total)", 0.0) - s.get("shap: plot", 0.0)
    s["mlflow: report data"] = s.get("mlflow: report data (total)", 0.0) - s.get("shap: drivers", 0.0)
    for k in ("mlflow: plots", "mlflow: report data"):
        watch.load[k] = watch.load.get(k + " (total)")
    mlflow_parts = ["mlflow: store + experiment", "mlflow: plots", "mlflow: report data", "mlflow: pyfunc model",
                    "mlflow: report.html"]
    s["mlflow: other"] = s["log_run"] - s["shap summary"] - sum(s.get(k, 0.0) for k in mlflow_parts)
    watch.load["mlflow: other"] = watch.load["log_run"]
    s["mlflow"] = s["log_run"] - s["shap summary"]
    watch.load["mlflow"] = watch.load["log_run"]
    s["pipeline"] = s["train"] + s["log_run"]
    watch.load["pipeline"] = watch.load["log_run"]

    pool = watch.captured["fit_rounds"][0][0]
    spec = result.scorer.spec
    rows = [{"stage": k, "seconds": round(s[k], 3), "ratio": round(s[k] / bare_s, 3), "calls": watch.calls.get(k),
             "load_1min": round(watch.load[k], 2) if watch.load.get(k) is not None else None}
            for k in [*LEAVES, "mlflow", "train", "pipeline", "bare lightgbm.train", "final booster, rerun beside bare"]
            if k in s]
    report = {
        "rows": rows,
        "scale": {"leads": args.leads, "months": args.months, "interactions": len(sim.interactions),
                  "snapshots": int(result.fingerprint["snapshots"]), "pool_snapshots": len(pool),
                  "features": len(spec.columns), "rounds": rounds, "family": result.scorer.meta["selection"]["family"],
                  "folds": int(result.metrics["folds"]), "horizon_days": result.scorer.horizon_days,
                  "frequency": result.scorer.meta["cadence"]["frequency"]},
        "fold_rounds_trained": watch.captured.get("fold_rounds"),
        "lightgbm_params": lgb_params,
        "bare": {k: v for k, v in bare.items() if k != "params"},
        "simulate_seconds": round(simulate_s, 2),
        "load_average": {"start": [round(v, 2) for v in load_start], "end": [round(v, 2) for v in os.getloadavg()]},
        "environment": {"cpus": os.cpu_count(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
                        "num_threads": lgb_params.get("num_threads"), "python": sys.version.split()[0]},
        "versions": {n: version(n) for n in ("lightgbm", "numpy", "pandas", "scikit-learn", "mlflow", "shap")},
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": "python benchmarks/training.py " + " ".join(sys.argv[1:]),
        "test_roc_auc": result.metrics["roc_auc"],
    }
    print(table(report))
    write(report, args.out)


def table(report: dict) -> str:
    lines = ["| stage | seconds | ratio to bare | calls | load (1 min) |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        bold = "**" if r["stage"] in ("pipeline", "train", "bare lightgbm.train") else ""
        lines.append(f"| {bold}{r['stage']}{bold} | {r['seconds']:,.1f} | {r['ratio']:.2f} | {r['calls'] or ''} "
                     f"| {r['load_1min'] if r['load_1min'] is not None else ''} |")
    return "\n".join(lines)


def write(report: dict, out: Path) -> None:
    """Results for several scales accumulate in one file, keyed by the number of leads (the newest run wins)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "training.json"
    runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    runs = [r for r in runs if r["scale"]["leads"] != report["scale"]["leads"]] + [report]
    runs.sort(key=lambda r: r["scale"]["leads"])
    path.write_text(json.dumps({"rows": runs[-1]["rows"], "scale": runs[-1]["scale"], "runs": runs}, indent=1) + "\n")
    md = ["# Training benchmark", "",
          "Each stage of the default pipeline (`train` + `log_run`) against bare `lightgbm.train` on the final pool's "
          "matrix with the same parameters and rounds (ratio = stage seconds / bare seconds; target: pipeline <= 2). "
          "`python benchmarks/training.py --leads N`; the machine is shared, so every row has the 1-minute load "
          "average when it ended.", ""]
    for r in runs:
        sc, env = r["scale"], r["environment"]
        md += [f"## {sc['leads']:,} leads, {sc['months']} months ({r['date']})", "",
               f"{sc['interactions']:,} interactions; {sc['snapshots']:,} snapshots ({sc['pool_snapshots']:,} in the "
               f"pool the final booster learns from) x {sc['features']} features; {sc['folds']} folds; horizon "
               f"{sc['horizon_days']} days, frequency {sc['frequency']}; final family {sc['family']}, {sc['rounds']} "
               f"rounds; rounds each fold booster trained (early stopping included): {r.get('fold_rounds_trained')}. "
               f"{env['cpus']} cores, LightGBM num_threads {env['num_threads']}, OMP_WAIT_POLICY "
               f"{env['OMP_WAIT_POLICY']}; load average at start {r['load_average']['start']}, at end "
               f"{r['load_average']['end']}. Simulation (not counted): {r['simulate_seconds']:.0f} s. "
               f"Test ROC-AUC {r['test_roc_auc']:.3f}.", "", table(r), ""]
    md.append("Versions: " + ", ".join(f"{k} {v}" for k, v in runs[-1]["versions"].items()) + ".")
    (out / "training.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
