"""Score leads with a trained model: probability, score 1-99, bucket, rank and reasons.

Everything learned (booster, feature spec, calibrator, bucket cut-offs) lives in one
:class:`LeadScorer`, saved as a folder of plain files: ``booster.txt`` (LightGBM's own text
format) and ``scorer.json`` (spec, calibrator, cut-offs, versions). Nothing depends on the batch:
a lead's probability and bucket are the same whichever other leads are scored with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from leadtemp.explain import group_contributions, top_reasons
from leadtemp.features import FeatureSpec, attribute_features, features_as_of, prepare_events
from leadtemp.schema import LEAD_ID
from leadtemp.snapshots import eligible_leads, open_leads

if TYPE_CHECKING:
    import lightgbm as lgb

OUTPUT_COLUMNS = ["lead_id", "as_of", "probability", "score", "bucket", "rank",
                  "reason_1", "reason_2", "reason_3", "model_version"]
PROBABILITY_FLOOR = 1e-4  # calibrated probabilities are kept inside [floor, 1 - floor]
FAST_REASONS_MIN_ROWS = 5000  # below this, compiling the fast TreeSHAP tables costs more than it saves


def feature_matrix(features: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """The model's columns as float64, categoricals as their codes (missing = NaN), as LightGBM sees them."""
    columns = []
    for name in spec.columns:
        column = features[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy(dtype=np.float64)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(columns) if columns else np.zeros((len(features), 0))


@dataclass(frozen=True)
class Calibrator:
    """Monotone map from the booster's raw margin to a probability.

    ``isotonic``: centred isotonic regression, i.e. linear interpolation between the centres of
    the isotonic blocks, so the map is strictly increasing inside the fitted range and the
    booster's ranking survives calibration. ``sigmoid``: Platt scaling on the margin.
    """

    method: str
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    slope: float = 1.0
    intercept: float = 0.0

    def __call__(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=float)
        if self.method == "isotonic":
            p = np.interp(margin, self.knots_x, self.knots_y)
        else:
            p = 1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept)))
        return np.clip(p, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


def fit_calibrator(margin: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    margin, y = np.asarray(margin, dtype=float), np.asarray(y, dtype=float)
    if method == "sigmoid":
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6).fit(margin.reshape(-1, 1), y)
        return Calibrator("sigmoid", slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(out_of_bounds="clip").fit(margin, y).predict(margin)
    blocks = pd.DataFrame({"x": margin, "y": fitted}).groupby("y", sort=True)["x"].mean()
    return Calibrator("isotonic", knots_x=tuple(blocks.to_numpy()), knots_y=tuple(blocks.index.to_numpy()))


@dataclass(frozen=True)
class BucketCutoffs:
    hot: float
    warm: float
    method: str

    def assign(self, probability: np.ndarray) -> np.ndarray:
        p = np.asarray(probability)
        return np.where(p >= self.hot, "hot", np.where(p >= self.warm, "warm", "cold"))


def fit_buckets(calibrated: np.ndarray, method: str, hot_share: float, warm_share: float,
                hot_probability: float, warm_probability: float) -> BucketCutoffs:
    """Cut-offs from the calibration slice (``share``) or fixed (``probability``)."""
    if method == "probability":
        return BucketCutoffs(hot=hot_probability, warm=warm_probability, method=method)
    p = np.asarray(calibrated, dtype=float)
    return BucketCutoffs(hot=float(np.quantile(p, 1 - hot_share)),
                         warm=float(np.quantile(p, 1 - hot_share - warm_share)), method=method)


def score_from_probability(p: np.ndarray) -> np.ndarray:
    """Score 1-99: the calibrated chance to convert within the horizon, in percent."""
    return np.clip(np.rint(100 * np.asarray(p)), 1, 99).astype(int)


def rank_order(scored: pd.DataFrame) -> np.ndarray:
    """Rank 1..n: probability first, the booster's margin breaks calibration ties, then the lead id.

    Batch scoring ranks in SQL with the same order (lead ids compared byte-wise, as Python does).
    """
    order = np.lexsort((scored[LEAD_ID].to_numpy(), -scored["margin"].to_numpy(), -scored["probability"].to_numpy()))
    rank = np.empty(len(scored), dtype=np.int64)
    rank[order] = np.arange(1, len(scored) + 1)
    return rank


@dataclass
class LeadScorer:
    booster: lgb.Booster
    spec: FeatureSpec
    calibrator: Calibrator
    buckets: BucketCutoffs
    horizon_days: int
    labels: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    _fast: object = field(default=None, init=False, repr=False, compare=False)

    # -- computing -------------------------------------------------------------------------------
    def margin(self, features: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(features[self.spec.columns], raw_score=True)

    def contributions(self, features: pd.DataFrame, margin: np.ndarray | None = None) -> np.ndarray:
        """Exact TreeSHAP contributions (n, n_features + 1); the last column is the base value.

        Small batches go to LightGBM's ``pred_contrib``; from ``FAST_REASONS_MIN_ROWS`` leads on, the
        table-driven exact TreeSHAP of :mod:`leadtemp.treeshap` (same values to ~1e-15, several
        times faster; compiled once per scorer). ``margin``: the booster's raw prediction of these
        rows when the caller has it (the fast path checks that every row's values add up to it).
        """
        if len(features) < FAST_REASONS_MIN_ROWS:
            return self.booster.predict(features[self.spec.columns], pred_contrib=True)
        if self._fast is None:
            from leadtemp.treeshap import ExactContributions

            self._fast = ExactContributions(self.booster)
        return self._fast(feature_matrix(features, self.spec), margin)

    def features(self, leads: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
        """Features of the leads eligible at ``as_of``.

        Eligible: created before ``as_of`` and not converted before it; for a model trained on a
        table with final labels, every lead without an outcome yet (and, when the table has time,
        created before ``as_of``).
        """
        as_of = pd.Timestamp(as_of)
        if self.spec.mode == "events":
            eligible = eligible_leads(leads, as_of).reset_index(drop=True)
            return features_as_of(eligible, prepare_events(interactions, self.spec, sort=False), as_of, self.spec)
        return attribute_features(open_leads(leads, as_of), as_of, self.spec)

    def score_rows(self, features: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Unranked scores of a feature frame: the output columns without ``rank``, plus ``margin``.

        Every value of a row depends on that lead alone, so batches can be scored apart and ranked
        together afterwards (:func:`rank_order`).
        """
        margin = self.margin(features)
        p = self.calibrator(margin)
        out = pd.DataFrame({
            LEAD_ID: features[LEAD_ID].to_numpy(),
            "as_of": features["as_of"].to_numpy(),
            "probability": p,
            "score": score_from_probability(p),
            "bucket": self.buckets.assign(p),
        })
        if reasons and len(out):
            contrib = self.contributions(features, margin)
            words = top_reasons(features, group_contributions(contrib, self.spec), self.spec, self.labels)
            for i, column in enumerate(words):
                out[f"reason_{i + 1}"] = column
        else:
            for i in range(3):
                out[f"reason_{i + 1}"] = ""
        out["model_version"] = str(self.meta.get("model_version", ""))
        out["margin"] = margin
        return out

    def score_features(self, features: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """Scores, buckets, ranks and reasons for a feature frame (one as_of)."""
        out = self.score_rows(features, reasons)
        out["rank"] = rank_order(out)
        return out.sort_values("rank", kind="stable").reset_index(drop=True)[OUTPUT_COLUMNS]

    def score(self, leads: pd.DataFrame, interactions: pd.DataFrame, as_of: pd.Timestamp,
              reasons: bool = True) -> pd.DataFrame:
        return self.score_features(self.features(leads, interactions, as_of), reasons=reasons)

    # -- storing ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / "booster.txt"))
        (folder / "scorer.json").write_text(json.dumps({
            "spec": self.spec.to_dict(),
            "calibrator": vars(self.calibrator),
            "buckets": vars(self.buckets),
            "horizon_days": self.horizon_days,
            "labels": self.labels,
            "meta": self.meta,
        }, indent=1, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LeadScorer:
        import lightgbm as lgb

        folder = Path(folder)
        raw = json.loads((folder / "scorer.json").read_text())
        cal = raw["calibrator"]
        return cls(
            booster=lgb.Booster(model_file=str(folder / "booster.txt")),
            spec=FeatureSpec.from_dict(raw["spec"]),
            calibrator=Calibrator(cal["method"], tuple(cal["knots_x"]), tuple(cal["knots_y"]),
                                  cal["slope"], cal["intercept"]),
            buckets=BucketCutoffs(**raw["buckets"]),
            horizon_days=int(raw["horizon_days"]),
            labels=raw.get("labels", {}),
            meta=raw.get("meta", {}),
        )
