"""The calibrator: a monotone map from the booster's margin to a probability, fitted on a later slice."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from leadtemp.core.metrics import wilson_interval

PROBABILITY_FLOOR = 1e-4  # calibrated probabilities are kept inside [floor, 1 - floor]
SIGMOID_C = 1e6  # Platt scaling without regularisation: the margin is one well-determined feature
# The highest (and lowest) probability the isotonic calibrator gives must rest on at least this many
# calibration leads (or a 20th of them, for a small slice): a top block of 3 converted leads would
# otherwise promise 99.99% to every lead scored above them.
MIN_END_BLOCK = 50
CEILING_CONFIDENCE = 0.95  # the ceiling: the upper end of this interval of the top block's conversion rate


@dataclass(frozen=True)
class Calibrator:
    """Monotone map from the booster's raw margin to a probability.

    ``isotonic``: centred isotonic regression, i.e. linear interpolation between the centres of
    the isotonic blocks, so the map is strictly increasing inside the fitted range and the
    booster's ranking survives calibration. ``sigmoid``: Platt scaling on the margin.

    ``ceiling`` (None: only ``1 - floor``): the highest probability the calibration data supports
    (:func:`with_ceiling`). A sigmoid keeps rising past the last calibration lead; without it a lead
    beyond them would be shown 0.9999 while the best calibration leads converted at 60%. Leads above
    the ceiling tie on probability and keep their order by margin (the scorer's rank).
    """

    method: str
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0
    ceiling: float | None = None

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=float)
        if self.method == "isotonic":
            p = np.interp(margin, self.knots_x, self.knots_y)
        else:
            p = 1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept)))
        return np.clip(p, PROBABILITY_FLOOR, self._top())

    def _top(self) -> float:
        return 1 - PROBABILITY_FLOOR if self.ceiling is None else min(self.ceiling, 1 - PROBABILITY_FLOOR)

    def to_dict(self) -> dict:
        """As stored in scorer.json; without ``ceiling`` when there is none (a model saved before it had one)."""
        out = vars(self).copy()
        if self.ceiling is None:
            del out["ceiling"]
        return out

    def bounds(self) -> tuple[float, float]:
        """The lowest and highest probability this calibrator can give, whatever the margin.

        Isotonic: its end steps (often the floor: a bottom block without conversions); sigmoid: the
        floor and ceiling (``1 - floor``), or one value when the slope is 0. A bucket cut-off at or
        below the lowest leaves the cold bucket empty for every lead ever scored.
        """
        if self.method == "isotonic":
            ends = np.array([self.knots_y[0], self.knots_y[-1]])
        elif self.slope == 0:
            ends = np.full(2, 1.0 / (1.0 + np.exp(-self.intercept)))
        else:
            ends = np.array([0.0, 1.0])
        low, high = np.clip(ends, PROBABILITY_FLOOR, self._top())
        return float(low), float(high)


def end_block(n: int) -> int:
    """Calibration leads the highest (and lowest) probability must rest on: ``MIN_END_BLOCK``, a 20th of a small slice."""
    return min(MIN_END_BLOCK, max(1, n // 20))


def with_ceiling(calibrator: Calibrator, margin: np.ndarray, y: np.ndarray) -> Calibrator:
    """``calibrator`` capped at what its calibration data supports at the top: the upper end of the 95% Wilson
    interval of the conversion rate of the ``end_block`` calibration leads with the highest margins.

    An isotonic calibrator's top step already is such a block's pooled rate, so the cap changes nothing there;
    a sigmoid (Platt, or the booster's own probability) is capped where it promises more than the best-scored
    calibration leads delivered.
    """
    margin, y = np.asarray(margin, dtype=float), np.asarray(y, dtype=float)
    if len(y) == 0:
        return calibrator
    top = np.argsort(-margin, kind="stable")[:end_block(len(y))]
    _, high = wilson_interval(int(y[top].sum()), len(top), CEILING_CONFIDENCE)
    return replace(calibrator, ceiling=float(high))


def fit_calibrator(margin: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    margin, y = np.asarray(margin, dtype=float), np.asarray(y, dtype=float)
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=SIGMOID_C).fit(margin.reshape(-1, 1), y)
        return Calibrator("sigmoid", slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(out_of_bounds="clip").fit(margin, y).predict(margin)
    blocks = pd.DataFrame({"x": margin, "y": fitted}).groupby("y", sort=True)["x"].agg(["mean", "size"])
    knots = _pooled_ends([(x, rate, n) for rate, x, n in zip(blocks.index, blocks["mean"], blocks["size"])],
                         end_block(len(y)))
    return Calibrator("isotonic", knots_x=tuple(float(x) for x, _, _ in knots), knots_y=tuple(float(r) for _, r, _ in knots))


def _pooled_ends(blocks: list[tuple[float, float, int]], min_rows: int) -> list[tuple[float, float, int]]:
    """Isotonic blocks (mean margin, rate, rows), lowest first, with the end blocks merged into their
    neighbours until each end holds ``min_rows`` rows. Merging neighbours keeps the map monotone; a merged
    block's rate is the pooled conversion rate of its rows, placed at their mean margin."""
    def merge(a, b):
        n = a[2] + b[2]
        return ((a[0] * a[2] + b[0] * b[2]) / n, (a[1] * a[2] + b[1] * b[2]) / n, n)

    blocks = list(blocks)
    while len(blocks) > 1 and blocks[-1][2] < min_rows:
        blocks[-2:] = [merge(blocks[-2], blocks[-1])]
    while len(blocks) > 1 and blocks[0][2] < min_rows:
        blocks[:2] = [merge(blocks[0], blocks[1])]
    return blocks

