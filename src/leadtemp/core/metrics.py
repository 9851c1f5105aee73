"""Metrics and bucket tables: pure functions of labels and scores."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

BUCKETS = ("hot", "warm", "cold")


def tie_groups(y: np.ndarray, score: np.ndarray, best_first: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of equal ``score`` in order: the rows in each group, the sum of ``y`` and of ``score`` in it.

    The metrics below never order the rows inside a group: a group that a cut (top 10%, a bin edge)
    goes through counts with the share of its rows on each side, at the group's own mean outcome,
    which is what a random order of the ties gives on average. So no metric depends on row order.
    """
    _, group = np.unique(-score if best_first else score, return_inverse=True)
    group = group.ravel()
    return np.bincount(group), np.bincount(group, weights=y), np.bincount(group, weights=score)


def expected_in_top(y: np.ndarray, score: np.ndarray, k: Fraction | int) -> Fraction:
    """Sum of ``y`` over the ``k`` highest scores (``k`` may be fractional), a tie group on the cut shared."""
    rows, hits, _ = tie_groups(y, score, best_first=True)
    ends = np.cumsum(rows)
    j = min(int(np.searchsorted(ends, float(k))), len(rows) - 1)  # the group the cut falls in
    start = int(ends[j - 1]) if j else 0
    return Fraction(float(hits[:j].sum())) + (Fraction(k) - start) * Fraction(float(hits[j])) / int(rows[j])


def equal_frequency_bins(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, mean p and mean y of ``n_bins`` equal-frequency bins, lowest p first (sizes as ``np.array_split``).

    A group of tied probabilities that a bin edge goes through is shared between the two bins by
    rows, at the group's mean outcome, never split by row order.
    """
    rows, hits, total_p = tie_groups(y, p, best_first=False)
    knots = np.concatenate([[0], np.cumsum(rows)])
    sizes = np.full(n_bins, len(y) // n_bins)
    sizes[: len(y) % n_bins] += 1
    edges = np.concatenate([[0], np.cumsum(sizes[sizes > 0])])
    in_bin = np.diff(edges).astype(float)
    mean_p = np.diff(np.interp(edges, knots, np.concatenate([[0.0], np.cumsum(total_p)]))) / in_bin
    mean_y = np.diff(np.interp(edges, knots, np.concatenate([[0.0], np.cumsum(hits)]))) / in_bin
    return in_bin, mean_p, mean_y


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE over ``n_bins`` equal-frequency bins: sum of |mean(p) - mean(y)| weighted by bin size.

    Equal-frequency bins keep the measure informative when most probabilities are small, as they
    are for lead conversion; equal-width bins would put nearly every lead in the first bin. Tied
    probabilities on a bin edge are shared between the bins at their group's mean outcome, so the
    result does not depend on row order; a constant ``p`` gets |p - base rate|.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    in_bin, mean_p, mean_y = equal_frequency_bins(y, p, n_bins)
    return float(np.sum(in_bin * np.abs(mean_p - mean_y)) / len(y))


def lift_at(y: np.ndarray, p: np.ndarray, share: float = 0.10) -> float:
    """Conversion rate among the top ``share`` by probability, divided by the overall rate.

    Leads tied with the last one in count by the share of their group that fits, at the group's
    rate (the expected rate of a random tie-break): a constant score gets exactly 1.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    k = max(1, int(round(share * len(p))))
    return float(expected_in_top(y, p, k) * len(p) / (k * Fraction(float(y.sum())))) if y.mean() > 0 else float("nan")


def top_half_capture(y: np.ndarray, p: np.ndarray) -> float:
    """Share of all converters found in the top half of leads by probability.

    The half is exactly n/2 leads (with an odd n the middle lead counts half), ties shared as in
    ``lift_at``: a constant score gets exactly 0.5.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    return float(expected_in_top(y, p, Fraction(len(p), 2)) / Fraction(float(y.sum()))) if y.sum() > 0 else float("nan")


def auc_interval(auc: float, positives: int, negatives: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of a ROC-AUC from its standard error (Hanley & McNeil 1982): no resampling needed."""
    if positives == 0 or negatives == 0:
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = np.sqrt((auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2))
                 / (positives * negatives))
    z = norm.ppf(0.5 + confidence / 2)
    return float(auc - z * se), float(auc + z * se)


def _weighted_auc(group: np.ndarray, n_groups: int, y: np.ndarray, weight: np.ndarray) -> float:
    """ROC-AUC with row weights, from each row's tie group of the score (lowest score first).

    A tied positive/negative pair counts one half, as in ``roc_auc_score(..., sample_weight=weight)``.
    """
    pos = np.bincount(group, weights=weight * y, minlength=n_groups)
    neg = np.bincount(group, weights=weight * (1 - y), minlength=n_groups)
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (pos.sum() * neg.sum()))


def lead_bootstrap_aucs(y: np.ndarray, scores: list[np.ndarray], leads: np.ndarray, n: int, seed: int) -> np.ndarray:
    """ROC-AUC of each score on ``n`` bootstrap resamples of leads, not rows: shape (kept resamples, len(scores)).

    A lead's rows (its snapshots at several cutoffs) are drawn together, so the spread is that of a
    sample of leads; counting a lead's correlated snapshots as independent rows would make it too
    narrow. Every score sees the same resamples (paired). A resample with one label only is skipped.
    The tie groups of each score are found once; a resample then costs two ``bincount`` over the rows.
    """
    y = np.asarray(y, dtype=float)
    codes, uniques = pd.factorize(np.asarray(leads))
    ties = []
    for score in scores:
        _, group = np.unique(np.asarray(score, dtype=float), return_inverse=True)
        ties.append((group.ravel(), int(group.max()) + 1))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        weight = np.bincount(rng.integers(len(uniques), size=len(uniques)), minlength=len(uniques))[codes]
        drawn = y[weight > 0]
        if drawn.min() != drawn.max():
            out.append([_weighted_auc(group, size, y, weight) for group, size in ties])
    return np.array(out, dtype=float).reshape(-1, len(scores))


def lead_auc_interval(y: np.ndarray, score: np.ndarray, leads: np.ndarray, n: int, seed: int,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a ROC-AUC by :func:`lead_bootstrap_aucs`: honest when a lead has many rows.

    A table of one row per lead gives each row its own lead, i.e. the ordinary bootstrap.
    NaN when no resample holds both labels (or ``n`` is 0).
    """
    aucs = lead_bootstrap_aucs(y, [score], leads, n, seed)[:, 0]
    if aucs.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(aucs, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


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


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Metrics of the order of ``score`` only: ROC-AUC, PR-AUC, lift@10%, top-half capture.

    For any score: a raw margin, a rule score such as the thermometer's, a probability. The score
    is used as it is, never clipped (clipping to [0, 1] would tie every negative margin).
    """
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError("metrics need both converted and not-converted leads in the slice")
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "lift_at_10": lift_at(y, score, 0.10),
        "top_half_capture": top_half_capture(y, score),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
    }


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """``ranking_metrics`` of the probabilities ``p``, plus log loss, Brier score and ECE.

    Only log loss clips ``p`` (to [1e-12, 1 - 1e-12], so a 0 or 1 is not infinite). Scores outside
    [0, 1] are not probabilities: their log loss, Brier score and ECE are NaN (margins and rule
    scores belong in ``ranking_metrics``).
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    ranking = ranking_metrics(y, p)
    probability = bool(np.all((p >= 0) & (p <= 1)))
    return {
        "roc_auc": ranking["roc_auc"],
        "pr_auc": ranking["pr_auc"],
        "log_loss": float(log_loss(y, np.clip(p, 1e-12, 1 - 1e-12))) if probability else float("nan"),
        "brier": float(brier_score_loss(y, p)) if probability else float("nan"),
        "ece": expected_calibration_error(y, p) if probability else float("nan"),
        "lift_at_10": ranking["lift_at_10"],
        "top_half_capture": ranking["top_half_capture"],
        "positive_rate": ranking["positive_rate"],
        "rows": ranking["rows"],
    }


def chance_ece(p: np.ndarray, draws: int = 100, seed: int = 0, quantile: float = 0.95) -> float:
    """The ECE that perfectly calibrated probabilities ``p`` still reach by chance in ``quantile`` of ``draws`` label
    sets drawn from ``p``: ten bins of a few hundred rows each are noisy, so an ECE of 0.01-0.02 on a few
    thousand rows is no evidence of miscalibration."""
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    return float(np.quantile([expected_calibration_error((rng.random(p.size) < p).astype(float), p)
                              for _ in range(draws)], quantile))


def within_period_auc(y: np.ndarray, score: np.ndarray, period: np.ndarray) -> float:
    """ROC-AUC inside each period (leads a team ranks against each other on one day), averaged with row weights.

    Periods whose leads all share one label are left out; NaN when none has both.
    """
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "s": np.asarray(score, dtype=float), "period": period})
    parts = [(len(g), float(roc_auc_score(g["y"], g["s"])))
             for _, g in frame.groupby("period", sort=False) if 0 < g["y"].sum() < len(g)]
    if not parts:
        return float("nan")
    return float(sum(n * auc for n, auc in parts) / sum(n for n, _ in parts))
