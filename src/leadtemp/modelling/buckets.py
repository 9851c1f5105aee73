"""Hot / warm / cold cut-offs on the calibrated probability, fixed at training time and stored with the model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leadtemp.core.metrics import BUCKETS


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
    """Cut-offs from the calibration slice (``share``) or fixed (``probability``)."""
    if method == "probability":
        return BucketCutoffs(hot=hot_probability, warm=warm_probability, method=method)
    p = np.asarray(calibrated, dtype=float)
    return BucketCutoffs(hot=float(np.quantile(p, 1 - hot_share)),
                         warm=float(np.quantile(p, 1 - hot_share - warm_share)), method=method)

