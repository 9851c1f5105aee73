"""Metric names as MLflow shows them: what each number is, for a reader outside ML (docs/glossary.md#metrics
defines every one). The workflows' own keys (result.metrics, the backtest table, the CLI) keep their short names;
the run's logger writes these names, and the report reads them back."""

from __future__ import annotations

import re

import pandas as pd

from leadtemp.core.metrics import BUCKETS

RENAMED = {
    "lift_at_10": "lift_in_top_10pct",
    "top_half_capture": "conversions_in_top_half",
    "positive_rate": "conversion_rate",
    "rows": "rows",
    "folds": "folds_count",
    "folds_auc_low": "folds_roc_auc_low95",
    "folds_auc_high": "folds_roc_auc_high95",
    "folds_raw_ece": "folds_uncalibrated_ece",
    "rounds": "folds_chosen_rounds",
    "best_iteration": "booster_rounds",
}
# Prefixes: the uncalibrated booster's metrics, the test slice's two snapshot kinds, the thermometer rule's.
_PREFIXES = {"raw_": "uncalibrated_", "creation_": "new_lead_", "periodic_": "periodic_", "thermometer_": "thermometer_"}
_WHEN = re.compile(r"(p_\d+d_)")  # the metrics of one horizon's p_<h>d (modelling/horizons.py)
# Per bucket (hot, warm, cold): the bucket table's columns, and the backtest's and retrain window's rate and share.
_BUCKET_COLUMNS = {"leads": "leads", "converted": "conversions", "rate": "conversion", "rate_low": "conversion_low95",
                   "rate_high": "conversion_high95", "share": "share_of_leads"}


def metric_name(key: str) -> str:
    """The name a workflow metric is logged under (``top_half_capture`` → ``conversions_in_top_half``,
    ``hot_rate_low`` → ``hot_conversion_low95``, ``raw_ece`` → ``uncalibrated_ece``); others keep theirs."""
    if key in RENAMED:
        return RENAMED[key]
    bucket, _, column = key.partition("_")
    if bucket in BUCKETS and column in _BUCKET_COLUMNS:
        return f"{bucket}_{_BUCKET_COLUMNS[column]}"
    if (when := _WHEN.match(key)) is not None:  # a horizon's metric: p_7d_positive_rate → p_7d_conversion_rate
        return when.group(1) + metric_name(key[when.end():])
    for old, new in _PREFIXES.items():
        if key.startswith(old):
            return new + metric_name(key[len(old):])
    return key


def logged_metrics(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    """``metrics`` under their :func:`metric_name`, with ``prefix``; NaN (not measured) left out."""
    return {prefix + metric_name(k): float(v) for k, v in metrics.items() if pd.notna(v)}
