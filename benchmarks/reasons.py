"""Exact reasons: leadtemp's table-driven TreeSHAP against shap.TreeExplainer on the same model and rows.

Trains the default pipeline on simulated leads, builds the features of every eligible lead on
several scoring dates, then times (best of --repeat):
  ours       LeadScorer.contributions (the fast exact path) + grouping + top-3 selection
  reference  shap.TreeExplainer(booster).shap_values on the same rows + the same grouping + top-3
and reports rows/s, the ratio, the largest absolute difference of the contributions and the share of
leads whose top-3 reasons are identical. Both use every core (LightGBM's OpenMP, numba's threads).

Usage: python benchmarks/reasons.py [--leads 20000] [--rows 50000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from leadtemp.core.config import load_params
from leadtemp.core.reasons import group_contributions
from leadtemp.modelling.scorer import feature_matrix
from leadtemp.simulate import simulate
from leadtemp.workflows.train import train


def top3(contributions: np.ndarray, spec) -> np.ndarray:
    grouped = group_contributions(contributions, spec).to_numpy()
    return np.argsort(-np.abs(grouped), axis=1, kind="stable")[:, :3]


def best_time(fn, repeat: int = 2):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import shap

    sim = simulate(args.leads, seed=7)
    result = train(sim.leads, sim.interactions, load_params("params.yaml"))
    scorer = result.scorer
    frames, when = [], pd.Timestamp(result.splits.test.max())
    while sum(map(len, frames)) < args.rows and when > sim.leads["created_at"].min():
        frames.append(scorer.features(sim.leads, sim.interactions, when))
        when -= pd.DateOffset(months=1)
    features = pd.concat(frames, ignore_index=True).head(args.rows)
    X = feature_matrix(features, scorer.spec)
    booster = scorer.booster
    dump = booster.dump_model()["tree_info"]
    print(f"model: {booster.num_trees()} trees, up to {max(t['num_leaves'] for t in dump)} leaves; "
          f"{len(features)} lead rows, {X.shape[1]} features")

    scorer.contributions(features.head(6000))  # compile the tables and the numba kernels once
    ours_s, ours = best_time(lambda: scorer.contributions(features), args.repeat)
    explainer = shap.TreeExplainer(booster)
    ref_s, ref = best_time(lambda: explainer.shap_values(X), args.repeat)
    ref = np.column_stack([ref if not isinstance(ref, list) else ref[1],
                           np.full(len(X), np.ravel(explainer.expected_value)[-1])])
    agree = (top3(ours, scorer.spec) == top3(ref, scorer.spec)).all(axis=1).mean()
    print(f"ours:      {len(X) / ours_s:,.0f} rows/s ({ours_s:.2f} s; fallback rows {scorer._fast.last_fallbacks})")
    print(f"reference: {len(X) / ref_s:,.0f} rows/s ({ref_s:.2f} s, shap {shap.__version__} TreeExplainer)")
    print(f"ratio ours/reference: {ref_s / ours_s:.1f}x")
    print(f"max |difference| of contributions: {np.abs(ours[:, :-1] - ref[:, :-1]).max():.2e}")
    print(f"top-3 reasons identical: {agree:.4%} of {len(X)} leads")


if __name__ == "__main__":
    main()
