"""How far new data has moved from what a model was trained on: PSI per feature, label rate, buckets.

A model carries a *profile* of its training window (stored in its ``scorer.json``): for every
feature, the bins of its training values and each bin's share, plus the label rate and the bucket
shares on its calibration slice. New data is binned the same way and compared with the population
stability index, PSI = sum over bins of (new - old) * ln(new / old). The usual reading: below 0.1
stable, 0.1-0.25 a moderate shift worth a look, above 0.25 a major shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

N_BINS = 10
FLOOR = 1e-4  # share given to an empty bin, so ln(new / old) stays finite


def _numeric_bins(values: np.ndarray) -> list[float]:
    """Inner edges at the deciles of the non-missing values; ties (counts that are mostly 0) merge bins."""
    present = values[~np.isnan(values)]
    if not len(present):
        return []
    return np.unique(np.quantile(present, np.linspace(0, 1, N_BINS + 1)[1:-1])).tolist()


def _value_bins(feature: dict) -> int:
    """Bins for present values: between the edges, or one per category seen plus one for any other."""
    return len(feature["edges"] if feature["kind"] == "numeric" else feature["codes"]) + 1


def _bin(values: np.ndarray, feature: dict) -> np.ndarray:
    """Bin index per value: numeric by edges, categorical by code, then 'other' for unseen codes; NaN last."""
    missing = np.isnan(values)
    if feature["kind"] == "numeric":
        edges = np.asarray(feature["edges"], dtype=float)
        index = np.searchsorted(edges, np.where(missing, 0.0, values), side="left")
    else:
        codes = np.asarray(feature["codes"], dtype=float)
        position = np.searchsorted(codes, values)  # NaN sorts last: never found
        found = position < len(codes)
        found[found] = codes[position[found]] == values[found]
        index = np.where(found, position, len(codes))  # len(codes): a category the model never saw
    return np.where(missing, _value_bins(feature), index)


def _shares(values: np.ndarray, feature: dict) -> np.ndarray:
    counts = np.bincount(_bin(values, feature), minlength=_value_bins(feature) + 1)  # + 1: missing
    return counts / max(len(values), 1)


def profile(X: np.ndarray, columns: list[str], categorical: set[str], label: np.ndarray,
            bucket_shares: dict[str, float]) -> dict:
    """The training window of a model, summarised for later drift checks (plain JSON, no lead data)."""
    features = {}
    for j, name in enumerate(columns):
        values = X[:, j]
        if name in categorical:
            feature = {"kind": "categorical", "codes": np.unique(values[~np.isnan(values)]).tolist()}
        else:
            feature = {"kind": "numeric", "edges": _numeric_bins(values)}
        feature["shares"] = _shares(values, feature).tolist()
        feature["distinct"] = int(len(np.unique(values[~np.isnan(values)])) + np.isnan(values).any())
        features[name] = feature
    return {"rows": int(len(X)), "label_rate": float(np.mean(label)), "bucket_shares": dict(bucket_shares),
            "features": features}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(np.asarray(expected, float), FLOOR), np.maximum(np.asarray(actual, float), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_level(value: float, warn: float, alert: float) -> str:
    return "major" if value >= alert else "moderate" if value >= warn else "stable"


@dataclass(frozen=True)
class DriftReport:
    features: pd.DataFrame          # feature, psi, level; largest first
    label_rate: tuple[float, float]  # (training window, new window)
    bucket_shares: pd.DataFrame     # bucket, training (calibration slice), new
    warnings: list[str]

    def top(self, k: int = 5) -> pd.DataFrame:
        return self.features.head(k)

    def to_dict(self) -> dict:
        return {"label_rate": {"training": self.label_rate[0], "new": self.label_rate[1]},
                "bucket_shares": self.bucket_shares.to_dict(orient="records"),
                "features": self.features.to_dict(orient="records"), "warnings": self.warnings}


def drift_report(reference: dict, X: np.ndarray, columns: list[str], label_rate: float,
                 bucket_shares: dict[str, float], warn: float = 0.1, alert: float = 0.25) -> DriftReport:
    """PSI of every profiled feature between the reference profile and the rows of ``X``."""
    rows = []
    for j, name in enumerate(columns):
        feature = reference["features"].get(name)
        if feature is None:
            continue
        value = psi(feature["shares"], _shares(X[:, j], feature))
        rows.append({"feature": name, "psi": value, "level": psi_level(value, warn, alert)})
    table = pd.DataFrame(rows, columns=["feature", "psi", "level"]).sort_values(
        "psi", ascending=False, kind="stable").reset_index(drop=True)
    buckets = pd.DataFrame({"bucket": list(reference["bucket_shares"]),
                            "training": list(reference["bucket_shares"].values())})
    buckets["new"] = buckets["bucket"].map(bucket_shares).fillna(0.0)
    warnings = []
    for level, limit in (("major", alert), ("moderate", warn)):
        names = table.loc[table["level"] == level, "feature"].tolist()
        if names:
            shown = ", ".join(f"{n} ({table.loc[table['feature'] == n, 'psi'].iloc[0]:.2f})" for n in names[:5])
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            warnings.append(f"{len(names)} features with PSI >= {limit} ({level} shift): {shown}{more}")
    old = reference["label_rate"]
    if old > 0 and (label_rate / old > 1.5 or label_rate / old < 1 / 1.5):
        warnings.append(f"conversion rate moved from {old:.1%} (training window) to {label_rate:.1%}")
    return DriftReport(table, (float(old), float(label_rate)), buckets, warnings)
