"""The sales floor in numbers (issue 14): call plans at three capacities, and "when" against the oracle.

One simulated world; for each of the last ``--quarters`` quarters, leadtemp is trained with the data known at its
start (what ``leadtemp backtest`` does, in process) and every lead open at each of the quarter's monthly cutoffs is
scored. Then, per capacity (reps x calls per rep a day):

* **the plan of the first cutoff** (what ``leadtemp calls`` builds: cooldown, just-turned-active first within a
  score): its expected conversions (sum of calibrated probabilities) against the thermometer's plan and a random
  plan of the same size, and what the planned leads really did (converted within the horizon);
* **backtested reach**: the share of the quarter's conversions a team of that capacity would have reached calling
  at each cutoff in leadtemp's order, the thermometer's, or the newest leads first (``calls_reached``, with the
  cooldown on our own earlier calls).

And per horizon of ``when.horizons_days`` (7 / 30 / 90 days): ROC-AUC and ECE of ``p_<h>d`` against what happened
on the rows whose days are observed, beside the simulator's exact chance (``truth.parquet``'s ``p_convert_<h>d``)
on the same rows.

Usage: python benchmarks/sales_floor.py [--leads 8000] [--seed 7] [--quarters 2]
Writes benchmarks/results/sales_floor.md and sales_floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from leadtemp.core.config import load_params
from leadtemp.core.metrics import expected_calibration_error
from leadtemp.core.schema import LEAD_ID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CAPACITIES = ((2, 10), (5, 20), (10, 40))   # reps, calls per rep a day


def plan_numbers(scorer, leads, interactions, cutoff, reps, per_rep, cooldown, horizon_days) -> dict:
    """``leadtemp calls`` at ``cutoff`` (the same rows and plan as api.calls), and what its leads did in the next horizon."""
    from leadtemp.workflows.calls import day_rows, plan_calls

    plan = plan_calls(day_rows(scorer, leads, interactions, cutoff), reps, per_rep, cooldown)
    converted = leads.set_index(LEAD_ID)["converted_at"]
    end = cutoff + pd.Timedelta(days=horizon_days)
    did = converted.reindex(plan.calls[LEAD_ID]).between(cutoff, end, inclusive="left")
    return {"calls": int(len(plan.calls)), "eligible": plan.eligible, "cooled": plan.cooled,
            "expected": plan.expected, "thermometer_expected": plan.thermometer_expected,
            "random_expected": plan.random_expected, "converted": int(did.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quarters", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from sklearn.metrics import roc_auc_score

    from leadtemp.core.cadence import resolve_cadence
    from leadtemp.core.snapshots import cutoff_dates, observed_until
    from leadtemp.modelling.horizons import horizon_labels, p_column, timing
    from leadtemp.simulate import simulate
    from leadtemp.simulate.observable import observable_truth
    from leadtemp.simulate.world import TRUTH_HORIZONS
    from leadtemp.workflows.quarterly import QUARTER, backtest_quarters, calls_reached, known_at, score_window
    from leadtemp.workflows.train import train

    started = time.perf_counter()
    params = load_params(ROOT / "params.yaml")
    sim = simulate(args.leads, seed=args.seed)
    sim_truth = sim.truth.merge(observable_truth(sim, horizons=TRUTH_HORIZONS), on=[LEAD_ID, "cutoff"],
                                validate="one_to_one")
    leads, interactions = sim.leads, sim.interactions
    until = observed_until(leads, interactions, params.snapshots.observed_until)
    params = resolve_cadence(leads, until, params).apply(params)
    h_main, cooldown = params.snapshots.horizon_days, params.calls.cooldown_days
    cutoffs = cutoff_dates(leads, until, params.snapshots.frequency)
    plans, reach, when = [], [], []
    for start in backtest_quarters(cutoffs, until, params, args.quarters):
        quarter = f"{start.year}Q{(start.month - 1) // 3 + 1}"
        result = train(*known_at(leads, interactions, start), params.replace(snapshots={"observed_until": str(start)}))
        scorer = result.scorer
        window = cutoffs[(cutoffs >= start) & (cutoffs < start + QUARTER)]
        frame = score_window(scorer, leads, interactions, window, until)
        for reps, per_rep in CAPACITIES:
            plans.append({"quarter": quarter, "cutoff": f"{window[0]:%Y-%m-%d}", "reps": reps, "per_rep": per_rep,
                          **plan_numbers(scorer, leads, interactions, window[0], reps, per_rep, cooldown, h_main)})
            reach.append({"quarter": quarter, "reps": reps, "per_rep": per_rep, "cutoffs": len(window),
                          "conversions": int(frame["label"].sum()),
                          **calls_reached(frame, reps * per_rep, cooldown)})
        curve = timing(scorer.horizon_models, scorer.horizon_days, scorer.timing_days, frame, scorer.spec,
                       frame["probability"].to_numpy())
        truth = frame[[LEAD_ID, "cutoff"]].merge(sim_truth, on=[LEAD_ID, "cutoff"], how="left", validate="many_to_one")
        for h in scorer.timing_days:
            rows = (frame["cutoff"] + pd.Timedelta(days=h) <= until).to_numpy() & truth[f"p_convert_{h}d"].notna().to_numpy()
            y = horizon_labels(frame, leads, h)[rows]
            ours, oracle = curve[p_column(h)].to_numpy()[rows], truth[f"p_convert_{h}d"].to_numpy()[rows]
            ceiling = truth[f"p_observable_{h}d"].to_numpy()[rows]
            when.append({"quarter": quarter, "horizon_days": int(h), "rows": int(rows.sum()), "rate": float(y.mean()),
                         "roc_auc": float(roc_auc_score(y, ours)), "oracle_roc_auc": float(roc_auc_score(y, oracle)),
                         "observable_roc_auc": float(roc_auc_score(y, ceiling)),
                         "ece": expected_calibration_error(y, ours), "oracle_ece": expected_calibration_error(y, oracle),
                         "observable_ece": expected_calibration_error(y, ceiling)})
        print(f"{quarter} done ({time.perf_counter() - started:.0f} s)", flush=True)
    elapsed = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sales_floor.json").write_text(json.dumps({
        "leads": args.leads, "seed": args.seed, "horizon_days": h_main, "cooldown_days": cooldown,
        "plans": plans, "reach": reach, "when": when, "seconds": elapsed}, indent=1) + "\n")
    (args.out / "sales_floor.md").write_text(markdown(args, h_main, cooldown, plans, reach, when, elapsed))
    print(f"wrote {args.out / 'sales_floor.md'} in {elapsed / 60:.1f} min")


def markdown(args, h_main, cooldown, plans, reach, when, elapsed) -> str:
    lines = ["# The sales floor: call plans and \"when\" on simulated data", "",
             f"Written by `python benchmarks/sales_floor.py --leads {args.leads} --seed {args.seed} --quarters "
             f"{args.quarters}` on {pd.Timestamp.now():%Y-%m-%d %H:%M} in {elapsed / 60:.1f} min. Each quarter's model "
             f"learns from the data known at the quarter's start (as `leadtemp backtest`); horizon {h_main} days, "
             f"cooldown {cooldown:g} days, capacities reps x calls per rep a day.", "",
             "## The plan of the quarter's first day (`leadtemp calls`)", "",
             "Expected conversions: the sum of the planned leads' calibrated probabilities; the thermometer's and a "
             "random plan of the same size, by the same model's probabilities; converted: planned leads that "
             f"converted within {h_main} days.", "",
             "| quarter | day | reps x per rep | calls | open leads | cooled | expected: leadtemp / thermometer / random | "
             "converted |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in plans:
        thermo = "n/a" if p["thermometer_expected"] is None else f"{p['thermometer_expected']:.1f}"
        lines.append(f"| {p['quarter']} | {p['cutoff']} | {p['reps']} x {p['per_rep']} | {p['calls']} | {p['eligible']:,} | "
                     f"{p['cooled']:,} | {p['expected']:.1f} / {thermo} / {p['random_expected']:.1f} | {p['converted']} |")
    lines += ["", "## Backtested reach (`leadtemp backtest --reps --per-rep`)", "",
              "Share of the quarter's conversions (within the horizon of each monthly cutoff) a team with that capacity "
              "reaches calling at each cutoff in each order.", "",
              "| quarter | reps x per rep | conversions | leadtemp | thermometer | newest first |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in reach:
        lines.append(f"| {r['quarter']} | {r['reps']} x {r['per_rep']} | {r['conversions']:,} | "
                     f"{r.get('calls_reached_leadtemp', float('nan')):.1%} | {r.get('calls_reached_thermometer', float('nan')):.1%} | "
                     f"{r.get('calls_reached_newest_first', float('nan')):.1%} |")
    lines += ["", "## When: each horizon against the oracle", "",
              "`p_<h>d` against what happened, on the rows whose h days are observed; oracle: the simulator's exact "
              "chance from the hidden state (no model can see it); ceiling: the exact Bayes filter of that state from "
              "what a model can see (`leadtemp.simulate.observable`), the best possible on observed data. ECE: 10 "
              "equal-frequency bins.", "",
              "| quarter | horizon | rows | converting | ROC-AUC leadtemp / ceiling / oracle | ECE leadtemp / ceiling / oracle |",
              "| --- | --- | --- | --- | --- | --- |"]
    for w in when:
        lines.append(f"| {w['quarter']} | {w['horizon_days']} d | {w['rows']:,} | {w['rate']:.1%} | "
                     f"{w['roc_auc']:.3f} / {w['observable_roc_auc']:.3f} / {w['oracle_roc_auc']:.3f} | "
                     f"{w['ece']:.4f} / {w['observable_ece']:.4f} / {w['oracle_ece']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
