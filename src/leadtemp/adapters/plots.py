"""Plots written to PNG files: reliability, gains, the drivers (grouped SHAP), one lead's waterfall.

Each plot of a slice takes ``about`` (its period, rows and conversions: :func:`slice_caption`) for its title;
the ``*_figure`` functions return the figure unsaved, for tests and reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from leadtemp.core.metrics import equal_frequency_bins, expected_calibration_error, tie_groups
from leadtemp.core.reasons import group_contributions, group_name
from leadtemp.modelling.scorer import LeadScorer


def slice_caption(test: pd.DataFrame, name: str = "test") -> str:
    """The slice a plot is drawn on, for its title: its period, its size and its conversions,
    e.g. "test 2024-11-01…2025-01-30, 3,412 rows of 2,980 leads, 298 conversions".

    The period is the slice's cutoffs (snapshots), else its creation dates (a timed label table); a
    stratified random slice has none. Rows are snapshots, so a lead may count at several cutoffs.
    """
    when = next((test[c] for c in ("cutoff", "created_at") if c in test.columns and test[c].notna().any()), None)
    period = "" if when is None else f" {when.min():%Y-%m-%d}\u2026{when.max():%Y-%m-%d}"
    rows = len(test)
    leads = test["lead_id"].nunique() if "lead_id" in test.columns else rows
    size = f"{rows:,} leads" if leads == rows else f"{rows:,} rows of {leads:,} leads"
    converted = int(test["label"].sum()) if "label" in test.columns else None
    conversions = "" if converted is None else f", {converted:,} conversion" + ("" if converted == 1 else "s")
    return f"{name}{period}, {size}{conversions}"


def _title(kind: str, about: str | None) -> str:
    """The plot's title: what it shows, and on a second line the slice (so a long caption is not cut off)."""
    return f"{kind}\n{about}" if about else f"{kind} (test slice)"


def _finish(fig, ax, path: str | Path, legend: bool = True) -> Path:
    """Save and close; the title is also written into the PNG (its "Title" text), so a reader can check it."""
    import matplotlib.pyplot as plt

    if legend:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Title": ax.get_title().replace("\n", " \u2014 ")})
    plt.close(fig)
    return Path(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_figure(y: np.ndarray, curves: dict[str, np.ndarray], n_bins: int = 10, *, about: str | None = None):
    """The reliability diagram as a matplotlib figure (see :func:`plot_reliability`)."""
    plt = _pyplot()
    y = np.asarray(y, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    top = 0.0
    for name, p in curves.items():
        _, xs, ys = equal_frequency_bins(y, np.asarray(p, dtype=float), n_bins)
        top = max(top, *xs, *ys)
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {expected_calibration_error(y, p, n_bins):.3f})")
    ax.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="predicted probability", ylabel="observed conversion rate")
    ax.set_title(_title("Reliability", about), fontsize=9)
    return fig, ax


def plot_reliability(y: np.ndarray, curves: dict[str, np.ndarray], path: str | Path, n_bins: int = 10, *,
                     about: str | None = None) -> Path:
    """Reliability diagram: mean predicted vs observed rate per equal-frequency bin.

    ``about``: the slice in the title, e.g. :func:`slice_caption` (period, rows, conversions).
    """
    fig, ax = reliability_figure(y, curves, n_bins, about=about)
    return _finish(fig, ax, path)


GAINS_MARKS = (0.10, 0.20)  # shares of leads contacted where the gains plot says how many conversions were found


def _captured(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of leads contacted, share of conversions captured) from 0 to 1, best score first; tied scores
    count at their mean rate, so the order inside a tie does not matter."""
    y = np.asarray(y, dtype=float)
    rows, hits, _ = tie_groups(y, np.asarray(p, dtype=float), best_first=True)
    ends, found = np.concatenate([[0], np.cumsum(rows)]), np.concatenate([[0.0], np.cumsum(hits)])
    x = np.arange(0, len(y) + 1) / len(y)
    return x, np.interp(np.arange(0, len(y) + 1), ends, found) / y.sum()


def gains_at(y: np.ndarray, p: np.ndarray, shares: tuple[float, ...] = GAINS_MARKS) -> dict[float, float]:
    """Share of all conversions among the best-scored ``share`` of leads, for each share."""
    x, captured = _captured(y, p)
    return {s: float(np.interp(s, x, captured)) for s in shares}


def gains_figure(y: np.ndarray, curves: dict[str, np.ndarray], *, about: str | None = None):
    """The cumulative gains plot as a matplotlib figure, each curve annotated at :data:`GAINS_MARKS`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for i, (name, p) in enumerate(curves.items()):
        x, captured = _captured(y, p)
        (line,) = ax.plot(x, captured, label=name)
        for share, found in gains_at(y, p).items():
            ax.plot([share], [found], marker="o", color=line.get_color())
            ax.annotate(f"{found:.0%} at {share:.0%}", (share, found), xytext=(6, -12 if i else 4),
                        textcoords="offset points", fontsize=7, color=line.get_color())
    for share in GAINS_MARKS:
        ax.axvline(share, color="lightgrey", linewidth=0.8, zorder=0)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random")
    ax.set(xlabel="share of leads contacted, best score first\n(dots: share of all conversions found by 10% and 20%)",
           ylabel="share of conversions captured")
    ax.set_title(_title("Cumulative gains", about), fontsize=9)
    return fig, ax


def plot_gains(y: np.ndarray, curves: dict[str, np.ndarray], path: str | Path, *, about: str | None = None) -> Path:
    """Cumulative gains: share of converters captured vs share of leads called, best first; each curve
    annotated with the share of conversions found at 10% and 20% of leads contacted.

    ``about``: the slice in the title, e.g. :func:`slice_caption` (period, rows, conversions).
    """
    fig, ax = gains_figure(y, curves, about=about)
    return _finish(fig, ax, path)


DRIVER_AXIS = ("average change in the chance to convert, percentage points\n"
               "(each lead's calibrated chance with this factor's contribution vs. without it)")


def driver_table(scorer: LeadScorer, test: pd.DataFrame, sample: int = 2000) -> pd.DataFrame:
    """What moves the score, grouped as the reasons group features and named in their words.

    Per group (:func:`~leadtemp.core.reasons.feature_groups`): ``effect_pp``, the mean over a sample of
    the slice of |calibrated chance − calibrated chance without the group's summed TreeSHAP
    contribution|, in percentage points; and ``log_odds``, the mean |summed contribution| (the
    booster's scale). Largest effect first.
    """
    rows = test.sample(min(sample, len(test)), random_state=0)
    contrib = scorer.contributions(rows)
    grouped = group_contributions(contrib, scorer.spec)
    margin = contrib.sum(axis=1)
    chance = scorer.calibrator(margin)
    effect = {k: float(np.mean(np.abs(chance - scorer.calibrator(margin - grouped[k].to_numpy())))) * 100
              for k in grouped.columns}
    table = pd.DataFrame({"group": grouped.columns,
                          "name": [group_name(k, scorer.spec, scorer.labels) for k in grouped.columns],
                          "effect_pp": [effect[k] for k in grouped.columns],
                          "log_odds": grouped.abs().mean().to_numpy()})
    return table.sort_values(["effect_pp", "log_odds"], ascending=False, kind="stable").reset_index(drop=True)


def driver_figure(table: pd.DataFrame, *, about: str | None = None, max_display: int = 20):
    """Horizontal bars of :func:`driver_table`, largest on top, one colour (no colouring by category code)."""
    plt = _pyplot()
    shown = table.head(max_display).iloc[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(shown) + 2))
    ax.barh(shown["name"], shown["effect_pp"], color="tab:blue")
    for y_, value in enumerate(shown["effect_pp"]):
        ax.annotate(f"{value:.1f}", (value, y_), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_xlabel(DRIVER_AXIS, fontsize=8)
    ax.set_title(_title("What moves the score", about), fontsize=9)
    return fig, ax


def plot_shap_summary(scorer: LeadScorer, test: pd.DataFrame, path: Path, sample: int = 2000, *,
                      about: str | None = None) -> Path:
    """The driver plot: one bar per reason group (TreeSHAP contributions summed as the reasons sum them), labelled
    in the reasons' words, sized by the average change in the calibrated chance (:func:`driver_table`).

    ``about``: the slice in the title, e.g. :func:`slice_caption` (period, rows, conversions).
    """
    fig, ax = driver_figure(driver_table(scorer, test, sample), about=about)
    return _finish(fig, ax, path, legend=False)


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
