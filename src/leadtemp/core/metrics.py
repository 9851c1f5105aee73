"""Metrics and bucket tables: pure functions of labels and scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

BUCKETS = ("hot", "warm", "cold")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-frequency bins: sum of |mean(p) - mean(y)| weighted by bin size.

    Equal-frequency bins keep the measure informative when most probabilities are small, as they
    are for lead conversion; equal-width bins would put nearly every lead in the first bin.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, n_bins)
    return float(sum(len(b) * abs(p[b].mean() - y[b].mean()) for b in bins if len(b)) / len(y))


def lift_at(y: np.ndarray, p: np.ndarray, share: float = 0.10) -> float:
    """Conversion rate among the top ``share`` by probability, divided by the overall rate."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    top = np.argsort(-p, kind="stable")[: max(1, int(round(share * len(p))))]
    return float(y[top].mean() / y.mean()) if y.mean() > 0 else float("nan")


def top_half_capture(y: np.ndarray, p: np.ndarray) -> float:
    """Share of all converters found in the top half of leads by probability."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    top = np.argsort(-p, kind="stable")[: len(p) // 2]
    return float(y[top].sum() / y.sum()) if y.sum() > 0 else float("nan")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    z = norm.ppf(0.5 + confidence / 2)
    phat = successes / n
    denom = 1 + z**2 / n
    centre = (phat + z**2 / (2 * n)) / denom
    half = z * np.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2)) / denom
    return float(centre - half), float(centre + half)


def bucket_table(y: np.ndarray, bucket: np.ndarray) -> pd.DataFrame:
    """Per bucket: leads, converters, conversion rate and its 95% Wilson interval."""
    rows = []
    for name in BUCKETS:
        mask = np.asarray(bucket) == name
        n, k = int(mask.sum()), int(np.asarray(y)[mask].sum())
        low, high = wilson_interval(k, n)
        rows.append({"bucket": name, "leads": n, "converted": k,
                     "rate": k / n if n else float("nan"), "rate_low": low, "rate_high": high})
    return pd.DataFrame(rows)


def bucket_shares(bucket: np.ndarray) -> dict[str, float]:
    """Share of the leads in each bucket."""
    bucket = np.asarray(bucket)
    return {name: float(np.mean(bucket == name)) if len(bucket) else 0.0 for name in BUCKETS}


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    if len(np.unique(y)) < 2:
        raise ValueError("metrics need both converted and not-converted leads in the slice")
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_at_10": lift_at(y, p, 0.10),
        "top_half_capture": top_half_capture(y, p),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }
