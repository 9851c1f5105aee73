"""What the workflows return: typed results, defined below the workflows so adapters (MLflow) can read them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from leadtemp.core.cadence import RollingSplits
from leadtemp.core.drift import DriftReport
from leadtemp.core.snapshots import SplitCutoffs
from leadtemp.modelling.scorer import LeadScorer


@dataclass(frozen=True)
class RowSplits:
    """Slices of a one-row-per-lead table: by time when it has time, else stratified random."""

    kind: str                   # "time-ordered" | "stratified random"
    slices: dict[str, str]

    def describe(self) -> dict[str, str]:
        return dict(self.slices)


@dataclass
class TrainingResult:
    scorer: LeadScorer
    splits: RollingSplits | SplitCutoffs | RowSplits
    test: pd.DataFrame          # test slice: features, label, margin, raw and calibrated probability
    metrics: dict[str, float]
    buckets: pd.DataFrame       # per-bucket conversion on the test slice
    fingerprint: dict
    leakage: pd.DataFrame       # single-column AUC of each attribute on the training slice
    warnings: list[str]         # things the user must hear about (printed and logged)
    gates: list[Gate] = field(default_factory=list)  # what a model must show before it may become champion

    @property
    def fit_to_ship(self) -> bool:
        """Every gate passed: the model may take the champion alias."""
        return all(g.passed for g in self.gates)

    @property
    def out_of_time(self) -> bool:
        return not (isinstance(self.splits, RowSplits) and self.splits.kind != "time-ordered")

    @property
    def prediction_sha256(self) -> str:
        """Hash of the raw predictions on the test slice: equal data and params give an equal hash."""
        return hashlib.sha256(np.ascontiguousarray(self.test["margin"].to_numpy(dtype=np.float64)).tobytes()).hexdigest()


@dataclass(frozen=True)
class Fold:
    quarter: str
    start: pd.Timestamp
    result: TrainingResult   # the model trained with the data known at ``start``
    metrics: dict[str, float]


@dataclass(frozen=True)
class Backtest:
    folds: list[Fold]

    def table(self) -> pd.DataFrame:
        rows = [{"quarter": f.quarter, "trained_through": f.result.scorer.meta["trained_through"][:10], **f.metrics}
                for f in self.folds]
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    detail: str
    applicable: bool = True  # False: nothing to judge here (the detail says why); it never blocks

@dataclass
class RetrainReport:
    through: pd.Timestamp
    challenger: TrainingResult | None
    champion_version: str | None
    window: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([]))
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)
    auc_difference: tuple[float, float, float] | None = None   # challenger - champion, 95% interval
    drift: DriftReport | None = None
    gates: list[Gate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    def verdict(self) -> str:
        """Better, worse or no clear difference in ROC-AUC, judged by the 95% interval."""
        if self.auc_difference is None:
            return "no champion to compare with"
        diff, low, high = self.auc_difference
        if np.isnan(low):
            return f"ROC-AUC {diff:+.3f} (no interval)"
        word = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
        return f"{word}: ROC-AUC {diff:+.3f} (95% interval {low:+.3f}..{high:+.3f})"


@dataclass
class BatchResult:
    scored: int
    rejected_leads: int
    rejected_interactions: int
    not_eligible: int
    leads_read: int
    partitions: int
    resumed_partitions: int
    buckets: dict[str, int]
    seconds: float
    target: str
    rejects: str
    warnings: list[str] = field(default_factory=list)  # what the model never saw in training, said once
    lost: int = 0          # eligible leads lost at as_of: skipped, or scored and marked (include_lost)
    include_lost: bool = False
    cards: str = ""        # the folder of lead cards written by `score --html` ("" for none)
