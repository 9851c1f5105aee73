"""Plots written to PNG files: reliability, gains, SHAP summary, one lead's waterfall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leadtemp.core.features import feature_matrix
from leadtemp.core.metrics import equal_frequency_bins, expected_calibration_error, tie_groups
from leadtemp.modelling.scorer import LeadScorer


def _finish(fig, ax, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_reliability(y: np.ndarray, curves: dict[str, np.ndarray], path: str | Path, n_bins: int = 10) -> Path:
    """Reliability diagram: mean predicted vs observed rate per equal-frequency bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, p in curves.items():
        _, xs, ys = equal_frequency_bins(y, np.asarray(p, dtype=float), n_bins)
        top = max(top, *xs, *ys)
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {expected_calibration_error(y, p, n_bins):.3f})")
    ax.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="predicted probability", ylabel="observed conversion rate", title="Reliability (test slice)")
    return _finish(fig, ax, path)


def plot_gains(y: np.ndarray, curves: dict[str, np.ndarray], path: str | Path) -> Path:
    """Cumulative gains: share of converters captured vs share of leads called, best first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 5))
    x = np.arange(1, len(y) + 1) / len(y)
    for name, p in curves.items():
        rows, hits, _ = tie_groups(y, np.asarray(p, dtype=float), best_first=True)  # ties: their mean rate
        ends, found = np.concatenate([[0], np.cumsum(rows)]), np.concatenate([[0.0], np.cumsum(hits)])
        captured = np.interp(np.arange(1, len(y) + 1), ends, found) / y.sum()
        ax.plot(x, captured, label=name)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(xlabel="share of leads contacted", ylabel="share of conversions captured", title="Cumulative gains (test slice)")
    return _finish(fig, ax, path)


def plot_shap_summary(scorer: LeadScorer, test: pd.DataFrame, path: Path, sample: int = 2000) -> None:
    """SHAP summary of the scorer's contributions on a sample of the test slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    spec = scorer.spec
    rows = test.sample(min(sample, len(test)), random_state=0)
    contrib = scorer.contributions(rows)[:, :-1]
    shown = pd.DataFrame(feature_matrix(rows, spec), columns=spec.columns)
    shap.summary_plot(contrib, shown, max_display=20, show=False)
    plt.gcf().savefig(path, dpi=100, bbox_inches="tight")
    plt.close("all")


def plot_waterfall(table: pd.DataFrame, base_value: float, path: str, max_display: int = 10) -> None:
    """SHAP waterfall of one lead's grouped factors (log-odds), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    explanation = shap.Explanation(
        values=table["effect"].to_numpy(), base_values=base_value, feature_names=list(table["factor"]),
    )
    shap.plots.waterfall(explanation, max_display=max_display, show=False)
    plt.gcf().savefig(path, dpi=100, bbox_inches="tight")
    plt.close("all")
