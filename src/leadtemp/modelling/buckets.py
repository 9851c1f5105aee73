"""Hot / warm / cold cut-offs on the calibrated probability, fixed at training time and stored with the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leadtemp.core.metrics import BUCKETS

# `score` warns when one bucket holds at least this share of the leads it scored. With the default
# shares (10% hot, 30% warm, 60% cold on the calibration slice) the biggest bucket is meant to hold
# 60%; at 90% the other two hold a quarter of what they were fitted to hold (10% instead of 40%),
# far more than a quarter's ordinary drift moves them, so the buckets no longer sort this population.
MOSTLY_ONE_BUCKET = 0.90
# Below this many scored leads, no bucket warning: an empty hot bucket (10% expected) then happens by
# chance alone (0.9 ** 50 = 0.5% of batches of 50 leads; a third of batches of 10).
MIN_LEADS_FOR_BUCKET_WARNINGS = 50


@dataclass(frozen=True)
class BucketCutoffs:
    hot: float
    warm: float
    method: str

    def assign(self, probability: np.ndarray) -> np.ndarray:
        p = np.asarray(probability)
        hot, warm, cold = BUCKETS
        return np.where(p >= self.hot, hot, np.where(p >= self.warm, warm, cold))


def fit_buckets(calibrated: np.ndarray, method: str, hot_share: float, warm_share: float,
                hot_probability: float, warm_probability: float) -> BucketCutoffs:
    """Cut-offs from the calibration slice (``share``) or fixed (``probability``).

    ``share``: the top ``hot_share`` of the slice is hot, the next ``warm_share`` warm, but leads with
    the same calibrated probability always share a bucket. An isotonic calibrator gives one
    probability to whole blocks of leads, the floor (``PROBABILITY_FLOOR``) to the largest: a cut-off
    inside such a block (a quantile that *is* the floor) would leave the bucket below it empty for
    every lead ever scored. So each cut-off goes to the edge of a tie block, the edge whose share is
    nearest the one asked, halfway between the two distinct probabilities on either side; the
    realised shares (``bucket_shares(cutoffs.assign(calibrated))``, kept in the model's profile) can
    differ from the asked ones. With three or more distinct probabilities every bucket holds leads
    of the slice; with fewer, one stays empty and the ship gate "buckets separate" says so.
    """
    if method == "probability":
        return BucketCutoffs(hot=hot_probability, warm=warm_probability, method=method)
    p = np.asarray(calibrated, dtype=float)
    values, counts = np.unique(p, return_counts=True)
    values, counts = values[::-1], counts[::-1]  # highest first
    if values.size == 1:  # one probability for everybody: no cut separates anyone
        return BucketCutoffs(hot=float(values[0]), warm=float(values[0]), method=method)
    above = np.cumsum(counts)[:-1]  # leads above each boundary between two distinct probabilities
    middle = values[1:] + (values[:-1] - values[1:]) / 2
    cuts = np.where(middle > values[1:], middle, values[:-1])  # strictly above the lower block, even for neighbouring floats
    hot, warm = _boundaries(above, hot_share * len(p), (hot_share + warm_share) * len(p))
    return BucketCutoffs(hot=float(cuts[hot]), warm=float(cuts[warm]), method=method)


def _boundaries(above: np.ndarray, hot_target: float, warm_target: float) -> tuple[int, int]:
    """Boundary indices (into ``above``, increasing) for hot and hot + warm, nearest their targets.

    Distinct when there are two boundaries or more, so warm holds someone; on a tie of distances the
    boundary with fewer leads above wins (a smaller, purer hot bucket).
    """
    def nearest(target: float) -> int:
        k = int(np.searchsorted(above, target))
        return min((c for c in (k - 1, k) if 0 <= c < len(above)), key=lambda c: (abs(above[c] - target), c))

    hot, warm = nearest(hot_target), nearest(warm_target)
    if hot == warm and len(above) > 1:
        options = [(h, w) for h, w in ((hot, warm + 1), (hot - 1, warm)) if h >= 0 and w < len(above)]
        hot, warm = min(options, key=lambda o: (abs(above[o[0]] - hot_target) + abs(above[o[1]] - warm_target), o))
    return hot, warm


def bucket_warnings(counts: dict[str, int]) -> list[str]:
    """What `score` says when the leads it scored do not spread over the buckets: one empty, or one holding nearly all."""
    total = sum(counts.get(b, 0) for b in BUCKETS)
    if total < MIN_LEADS_FOR_BUCKET_WARNINGS:
        return []
    spread = ", ".join(f"{b} {counts.get(b, 0) / total:.0%}" for b in BUCKETS)
    warnings = []
    if empty := [b for b in BUCKETS if counts.get(b, 0) == 0]:
        warnings.append(f"no lead is {' or '.join(empty)}: {total:,} leads scored, {spread}; the model's cut-offs do "
                        "not sort this population (check the training gate 'buckets separate', or retrain)")
    elif crowded := [b for b in BUCKETS if counts.get(b, 0) >= MOSTLY_ONE_BUCKET * total]:
        warnings.append(f"{counts[crowded[0]] / total:.0%} of the {total:,} leads scored are {crowded[0]} ({spread}); "
                        f"at {MOSTLY_ONE_BUCKET:.0%} or more in one bucket the buckets hardly sort them: the leads (or "
                        "the data feeding them) differ from the training population, or the model needs retraining")
    return warnings
