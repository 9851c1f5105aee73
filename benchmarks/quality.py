"""Prediction quality against what a user would otherwise pick, on the same splits, in one run.

Datasets (real ones from ../shared/data/external, read through leadtemp's own example params):
  bank-marketing     out of time: train on the first 80% of rows, test on the last 20%
  x-education        5-fold stratified (the table has no time), sales-team columns dropped
  x-education+sales  the same with the sales-team columns kept (leaky; reported separately, labelled)
  simulated          leadtemp's simulator, out of time (its test cutoffs), with the thermometer rule

Models: logistic regression (one-hot + scaling), LightGBM with default settings, FLAML AutoML
(optional: `pip install -e '.[bench]'`; skipped with a notice if missing), the thermometer rule where
there are interactions, and leadtemp's default pipeline. The baselines are fitted on every row
before the test slice; leadtemp splits the same rows into its own train / validation / calibration.

Writes benchmarks/results/quality.md and quality.json and logs one MLflow run per dataset and model
(experiment "leadtemp-quality-benchmark", local sqlite:///mlflow.db unless MLFLOW_TRACKING_URI).

Usage: python benchmarks/quality.py [--flaml-seconds 60] [--no-flaml] [--sim-leads 20000]
                                    [--datasets bank-marketing,x-education,...] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from leadtemp.adapters.files import load_data
from leadtemp.core.config import load_params
from leadtemp.core.metrics import classification_metrics, ranking_metrics
from leadtemp.core.schema import LEAD_ID, empty_interactions
from leadtemp.workflows.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METRICS = ("roc_auc", "pr_auc", "brier", "ece", "lift_at_10", "top_half_capture")
HEADLINE = ("bank-marketing", "x-education", "simulated")
SALES_TEAM_CATEGORICAL = ["Tags", "Lead Quality", "Lead Profile", "Last Notable Activity", "Last Activity",
                          "Asymmetrique Activity Index", "Asymmetrique Profile Index"]
SALES_TEAM_NUMERIC = ["Asymmetrique Activity Score", "Asymmetrique Profile Score"]
THREADS = 2


# -- baselines --------------------------------------------------------------------------------------
def _frame(table: pd.DataFrame, cats: list[str], nums: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=table.index)
    for c in cats:
        out[c] = table[c].astype("string").astype(object).where(table[c].notna(), None)
    for c in nums:
        out[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
    return out


def logistic_regression(X: pd.DataFrame, y: np.ndarray, cats: list[str], nums: list[str]):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value="(missing)"),
                              OneHotEncoder(handle_unknown="ignore")), cats),
        ("num", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), nums),
    ])
    model = make_pipeline(pre, LogisticRegression(max_iter=5000))
    model.fit(X, y)
    return lambda Z: model.predict_proba(Z)[:, 1]


def lightgbm_default(X: pd.DataFrame, y: np.ndarray, cats: list[str], nums: list[str]):
    import lightgbm as lgb

    levels = {c: sorted(X[c].dropna().unique()) for c in cats}
    model = lgb.LGBMClassifier(random_state=0, n_jobs=THREADS, verbose=-1).fit(_categories(X, levels), y)
    return lambda Z: model.predict_proba(_categories(Z, levels))[:, 1]


def _categories(Z: pd.DataFrame, levels: dict[str, list]) -> pd.DataFrame:
    """Categoricals with the training levels; a level never seen in training becomes missing."""
    return Z.assign(**{c: pd.Categorical(Z[c].where(Z[c].isin(v)), categories=v) for c, v in levels.items()})


def flaml_automl(seconds: float):
    def fit(X: pd.DataFrame, y: np.ndarray, cats: list[str], nums: list[str]):
        from flaml import AutoML

        automl = AutoML()
        levels = {c: sorted(X[c].dropna().unique()) for c in cats}
        automl.fit(_categories(X, levels), y, task="classification", metric="roc_auc", time_budget=seconds,
                   seed=0, n_jobs=THREADS, verbose=0)
        return lambda Z: automl.predict_proba(_categories(Z, levels))[:, 1]
    return fit


def baselines(flaml_seconds: float | None) -> dict:
    out = {"logistic regression": logistic_regression, "LightGBM default": lightgbm_default}
    if flaml_seconds:
        out["FLAML 60 s" if flaml_seconds == 60 else f"FLAML {flaml_seconds:g} s"] = flaml_automl(flaml_seconds)
    return out


def fit_predict(fit, X_train, y_train, X_test, cats, nums) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    predict = fit(X_train, y_train, cats, nums)
    seconds = time.perf_counter() - start
    return np.asarray(predict(X_test), dtype=float), seconds


def metrics(y: np.ndarray, p: np.ndarray, probability: bool = True) -> dict[str, float]:
    if not probability:  # a rule score: ranking metrics only, on the score as it is
        m = ranking_metrics(y, p)
        return {k: float(m.get(k, float("nan"))) for k in METRICS}
    m = classification_metrics(y, p)
    return {k: float(m[k]) for k in METRICS}


# -- datasets ---------------------------------------------------------------------------------------
def _labelled(params_file: Path, shared: Path, **changes):
    params = load_params(params_file)
    relative = Path(params.data.leads)
    leads_path = shared / relative.relative_to("../shared") if str(relative).startswith("../shared") else relative
    params = params.replace(data={"leads": str(leads_path), **changes.pop("data", {})}, **changes)
    leads, _ = load_data(params)
    return params, leads


def within_period_auc(y: np.ndarray, p: np.ndarray, period: np.ndarray) -> float:
    """ROC-AUC inside each period (leads a team would rank against each other), weighted by rows."""
    frame = pd.DataFrame({"y": y, "p": p, "period": period})
    parts = [(len(g), ranking_metrics(g["y"], g["p"])["roc_auc"])
             for _, g in frame.groupby("period") if 0 < g["y"].sum() < len(g)]
    return float(sum(n * auc for n, auc in parts) / sum(n for n, _ in parts))


def _label_table_rows(name, params, leads, folds, models, notes, pooled: dict,
                      within: dict | None = None) -> list[dict]:
    """leadtemp and baselines on the same folds of a one-row-per-lead table; metrics averaged over folds.

    ``pooled[name]``: every test row's label and each model's prediction of it (for paired intervals).
    ``within``: filled with each model's within-month ROC-AUC (first fold) when the table has time.
    """
    period = leads["created_at"].dt.to_period("M").to_numpy()
    tested = np.zeros(len(leads), dtype=bool)
    fold_of = np.full(len(leads), -1)
    predictions: dict[str, np.ndarray] = {}

    def keep(model: str, test: np.ndarray, p: np.ndarray) -> None:
        predictions.setdefault(model, np.full(len(leads), np.nan))[test] = p
    d = params.data
    cats, nums = list(d.categorical), list(d.numeric)
    X = _frame(leads, cats, nums)
    y = leads["label"].to_numpy(dtype=int)
    per_model: dict[str, list[dict]] = {}
    for k, test in enumerate(folds):
        start = time.perf_counter()
        result = train(leads, empty_interactions(), params, holdout=test)
        seconds = time.perf_counter() - start
        scored = result.test.set_index(LEAD_ID).loc[leads.loc[test, LEAD_ID], "probability"].to_numpy()
        per_model.setdefault("leadtemp", []).append({**metrics(y[test], scored), "train_seconds": seconds})
        tested |= test
        fold_of[test] = k
        keep("leadtemp", test, scored)
        if within is not None and k == 0:
            within["leadtemp"] = within_period_auc(y[test], scored, period[test])
        if k == 0:
            notes.extend(f"{name}: {w}" for w in result.warnings if not w.startswith("NO OUT-OF-TIME"))
            notes.append(f"{name}: leadtemp rounds {int(result.metrics['best_iteration'])}, split "
                         f"{result.splits.describe()}")
        for model, fit in models.items():
            p, secs = fit_predict(fit, X.loc[~test], y[~test], X.loc[test], cats, nums)
            per_model.setdefault(model, []).append({**metrics(y[test], p), "train_seconds": secs})
            keep(model, test, p)
            if within is not None and k == 0:
                within[model] = within_period_auc(y[test], p, period[test])
        print(f"  {name} fold {k + 1}/{len(folds)} done", flush=True)
    pooled[name] = (y[tested], {m: p[tested] for m, p in predictions.items()}, fold_of[tested])
    return [{"dataset": name, "model": model,
             **{m: float(np.mean([r[m] for r in runs])) for m in (*METRICS, "train_seconds")}}
            for model, runs in per_model.items()]


def bank_marketing(shared: Path, models: dict, notes: list[str], pooled: dict) -> tuple[list[dict], list[dict], dict]:
    params, leads = _labelled(ROOT / "examples" / "bank-marketing.yaml", shared)
    n = len(leads)
    test = np.arange(n) >= n - int(round(0.2 * n))
    within: dict[str, float] = {}
    rows = _label_table_rows("bank-marketing", params, leads, [test], models, notes, pooled, within)
    # How much does the out-of-time result depend on where the training window ends?
    sensitivity = []
    y = leads["label"].to_numpy(dtype=int)
    cats, nums = list(params.data.categorical), list(params.data.numeric)
    X = _frame(leads, cats, nums)
    for end in (0.64, 0.72, 0.80):
        keep = (np.arange(n) < int(end * n)) | test
        window = leads.loc[keep].reset_index(drop=True)
        result = train(window, empty_interactions(), params, holdout=test[keep])
        lr, _ = fit_predict(logistic_regression, X.loc[np.arange(n) < int(end * n)],
                            y[np.arange(n) < int(end * n)], X.loc[test], cats, nums)
        sensitivity.append({"train_rows_until": f"{end:.0%}",
                            "leadtemp": classification_metrics(result.test["label"], result.test["probability"])["roc_auc"],
                            "logistic regression": classification_metrics(y[test], lr)["roc_auc"]})
    return rows, sensitivity, within


def x_education(shared: Path, models: dict, notes: list[str], pooled: dict, with_sales_team: bool) -> list[dict]:
    from sklearn.model_selection import StratifiedKFold

    changes = {}
    if with_sales_team:
        base = load_params(ROOT / "examples" / "x-education.yaml").data
        changes = {
            "data": {"categorical": (*base.categorical, *SALES_TEAM_CATEGORICAL),
                     "numeric": (*base.numeric, *SALES_TEAM_NUMERIC), "excluded": ("Lead Number",)},
            "checks": {"allow_leaky": ("Tags",)},
        }
    params, leads = _labelled(ROOT / "examples" / "x-education.yaml", shared, **changes)
    y = leads["label"].to_numpy(dtype=int)
    folds = []
    for _, test_idx in StratifiedKFold(5, shuffle=True, random_state=0).split(leads, y):
        mask = np.zeros(len(leads), dtype=bool)
        mask[test_idx] = True
        folds.append(mask)
    name = "x-education+sales (leaky)" if with_sales_team else "x-education"
    return _label_table_rows(name, params, leads, folds, models, notes, pooled)


def simulated(n_leads: int, models: dict, notes: list[str], pooled: dict) -> list[dict]:
    """Event data: baselines learn from leadtemp's own point-in-time features of every pre-test snapshot."""
    from leadtemp.core.features import build_training_frame
    from leadtemp.core.snapshots import build_snapshots, observed_until
    from leadtemp.simulate import simulate

    params = load_params(ROOT / "params.yaml")
    sim = simulate(n_leads, seed=7)
    start = time.perf_counter()
    result = train(sim.leads, sim.interactions, params)
    seconds = time.perf_counter() - start
    test = result.test
    y_test = test["label"].to_numpy()
    rows = [{"dataset": "simulated", "model": "leadtemp", **metrics(y_test, test["probability"].to_numpy()),
             "train_seconds": seconds},
            {"dataset": "simulated", "model": "thermometer rule",
             **metrics(y_test, test["thermometer_score"].to_numpy(), probability=False), "train_seconds": 0.0}]
    spec, splits = result.scorer.spec, result.splits
    until = observed_until(sim.leads, sim.interactions, params.snapshots.observed_until)
    before = splits.train.append([splits.validation, splits.calibration])
    frame = build_training_frame(build_snapshots(sim.leads, before, params.snapshots.horizon_days, until),
                                 sim.leads, sim.interactions, spec)
    cats = list(spec.categorical)
    nums = [c for c in spec.columns if c not in spec.categorical]
    X_train, X_test = _frame(frame, cats, nums), _frame(test, cats, nums)
    predictions = {"leadtemp": test["probability"].to_numpy(), "thermometer rule": test["thermometer_score"].to_numpy()}
    for model, fit in models.items():
        p, secs = fit_predict(fit, X_train, frame["label"].to_numpy(), X_test, cats, nums)
        predictions[model] = p
        rows.append({"dataset": "simulated", "model": model, **metrics(y_test, p), "train_seconds": secs})
        print(f"  simulated {model} done", flush=True)
    notes.append(f"simulated: {n_leads} leads (seed 7), test {splits.describe()['test']}, {len(test)} snapshots; "
                 f"baselines trained on leadtemp's features of all {len(frame)} pre-test snapshots; leadtemp's "
                 "train_seconds include building those features")
    pooled["simulated"] = (y_test, predictions, np.zeros(len(y_test), dtype=int))
    return rows


# -- report -----------------------------------------------------------------------------------------
def auc_difference(y: np.ndarray, ours: np.ndarray, theirs: np.ndarray, fold: np.ndarray, draws: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """Mean per-fold ROC-AUC(ours) - ROC-AUC(theirs) on the same rows, with a paired bootstrap 95% interval.

    Each draw resamples rows within every fold, so the interval is about the same quantity as the
    table's fold-averaged AUC (pooling predictions of different folds' models would not be).
    """
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(fold == f) for f in np.unique(fold)]

    def diff(index_sets) -> float:
        return float(np.mean([roc_auc_score(y[i], ours[i]) - roc_auc_score(y[i], theirs[i]) for i in index_sets]))

    point = diff(groups)
    draws_ = [diff([rng.choice(g, len(g)) for g in groups]) for _ in range(draws)]
    low, high = np.percentile(draws_, [2.5, 97.5])
    return point, float(low), float(high)


def verdicts(rows: list[dict], pooled: dict) -> list[dict]:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ours = next(r for r in rows if r["dataset"] == dataset and r["model"] == "leadtemp")
        base = [r for r in rows if r["dataset"] == dataset and r["model"] != "leadtemp"]
        best_auc = max(base, key=lambda r: r["roc_auc"])
        calibrated = [r for r in base if not np.isnan(r["ece"])]
        best_ece = min(calibrated, key=lambda r: r["ece"])
        out.append({
            "dataset": dataset, "leadtemp_roc_auc": ours["roc_auc"], "best_baseline_roc_auc": best_auc["roc_auc"],
            "best_auc_model": best_auc["model"], "leadtemp_ece": ours["ece"], "best_baseline_ece": best_ece["ece"],
            "best_ece_model": best_ece["model"], "auc_met": ours["roc_auc"] >= best_auc["roc_auc"],
            "ece_met": ours["ece"] <= best_ece["ece"],
        })
        if dataset in pooled:
            y, predictions, fold = pooled[dataset]
            out[-1]["auc_difference"] = auc_difference(y, predictions["leadtemp"], predictions[best_auc["model"]], fold)
    return out


def markdown(rows, verdict, sensitivity, within, notes, skipped, elapsed) -> str:
    lines = ["# Quality benchmark: leadtemp against baselines", "",
             f"Written by `python benchmarks/quality.py` on {pd.Timestamp.now():%Y-%m-%d %H:%M} in {elapsed / 60:.1f} min "
             f"({THREADS} threads per model). Same test rows for every model of a dataset. "
             "ECE: 10 equal-frequency bins. Brier and ECE are blank for the thermometer rule (a score, not a probability).",
             "", "| dataset | model | ROC-AUC | PR-AUC | Brier | ECE | lift@10% | top-half capture | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    fmt = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"  # noqa: E731
    for r in rows:
        name = f"**{r['model']}**" if r["model"] == "leadtemp" else r["model"]
        lines.append(f"| {r['dataset']} | {name} | " + " | ".join(fmt(r[m]) for m in METRICS) + f" | {r['train_seconds']:.1f} |")
    lines += ["", "## Target: leadtemp ≥ the best baseline's ROC-AUC and ≤ the best baseline's ECE", "",
              "AUC difference: leadtemp minus the best baseline on the same test rows (mean over the 5 folds for "
              "X Education), with a paired bootstrap 95% interval (1,000 draws, rows resampled within each fold).", "",
              "| dataset | leadtemp AUC | best baseline AUC | AUC met | AUC difference [95% CI] | leadtemp ECE | "
              "best baseline ECE | ECE met |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for v in verdict:
        d = v.get("auc_difference")
        diff = f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}]" if d else ""
        lines.append(f"| {v['dataset']} | {v['leadtemp_roc_auc']:.3f} | {v['best_baseline_roc_auc']:.3f} "
                     f"({v['best_auc_model']}) | {'yes' if v['auc_met'] else '**no**'} | {diff} | {v['leadtemp_ece']:.3f} | "
                     f"{v['best_baseline_ece']:.3f} ({v['best_ece_model']}) | {'yes' if v['ece_met'] else '**no**'} |")
    if sensitivity:
        lines += ["", "## bank-marketing: the same test slice, training windows ending earlier", "",
                  "ROC-AUC on the last 20% of rows when the training rows stop at the given share of the file.", "",
                  "| training rows until | leadtemp | logistic regression |", "| --- | --- | --- |"]
        lines += [f"| {s['train_rows_until']} | {s['leadtemp']:.3f} | {s['logistic regression']:.3f} |" for s in sensitivity]
    if within:
        lines += ["", "## bank-marketing: ranking inside each month of the test slice", "",
                  "ROC-AUC computed within each calendar month of the test slice (the leads a team ranks against each "
                  "other on one day), averaged with row weights. The pooled AUC above also rewards telling months apart.",
                  "", "| model | within-month ROC-AUC |", "| --- | --- |"]
        lines += [f"| {m} | {v:.3f} |" for m, v in within.items()]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in notes + skipped]
    return "\n".join(lines) + "\n"


def _metric_key(text: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / : and spaces."""
    import re

    return re.sub(r"[^0-9A-Za-z_\-./: ]+", "_", text).strip("_")


def log_to_mlflow(rows, verdict, md_path: Path, json_path: Path) -> None:
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_experiment("leadtemp-quality-benchmark")
    with mlflow.start_run(run_name="quality benchmark"):
        mlflow.log_artifact(str(md_path))
        mlflow.log_artifact(str(json_path))
        for v in verdict:
            key = _metric_key(v["dataset"])
            mlflow.log_metrics({f"{key}.auc_met": float(v["auc_met"]), f"{key}.ece_met": float(v["ece_met"])})
        for r in rows:
            with mlflow.start_run(run_name=f"{r['dataset']} / {r['model']}", nested=True):
                mlflow.set_tags({"dataset": r["dataset"], "model": r["model"]})
                mlflow.log_metrics({k: v for k, v in r.items() if isinstance(v, float) and not np.isnan(v)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--flaml-seconds", type=float, default=60.0)
    parser.add_argument("--no-flaml", action="store_true")
    parser.add_argument("--sim-leads", type=int, default=20000)
    parser.add_argument("--datasets", default="bank-marketing,x-education,x-education+sales,simulated")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    skipped = []
    flaml_seconds = None if args.no_flaml else args.flaml_seconds
    if flaml_seconds:
        try:
            import flaml  # noqa: F401
        except ImportError:
            flaml_seconds = None
            skipped.append("FLAML is not installed (pip install -e '.[bench]'): its rows are missing from this run.")
            print("notice:", skipped[-1])
    if args.no_flaml:
        skipped.append("FLAML skipped (--no-flaml).")
    models = baselines(flaml_seconds)
    chosen = args.datasets.split(",")
    start = time.perf_counter()
    rows, notes, sensitivity, within, pooled = [], [], [], {}, {}
    if "bank-marketing" in chosen:
        print("bank-marketing ...", flush=True)
        bank_rows, sensitivity, within = bank_marketing(args.shared, models, notes, pooled)
        rows += bank_rows
    if "x-education" in chosen:
        print("x-education ...", flush=True)
        rows += x_education(args.shared, models, notes, pooled, with_sales_team=False)
    if "x-education+sales" in chosen:
        print("x-education with sales-team columns ...", flush=True)
        rows += x_education(args.shared, models, notes, pooled, with_sales_team=True)
    if "simulated" in chosen:
        print("simulated ...", flush=True)
        rows += simulated(args.sim_leads, models, notes, pooled)
    elapsed = time.perf_counter() - start
    verdict = verdicts(rows, pooled)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "quality.json", args.out / "quality.md"
    json_path.write_text(json.dumps([{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
                                     for r in rows], indent=1) + "\n")
    md_path.write_text(markdown(rows, verdict, sensitivity, within, notes, skipped, elapsed))
    log_to_mlflow(rows, verdict, md_path, json_path)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
