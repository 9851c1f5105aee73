"""Buckets that separate (issue 18): tie-aware cut-offs, the first-train gate, `score`'s bucket warnings;
and the honest interval of the gate "ranks better than chance" (issue 12): leads resampled, not rows."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leadtemp.core.metrics import (
    BUCKETS,
    auc_interval,
    bucket_shares,
    bucket_table,
    classification_metrics,
    lead_auc_interval,
    lead_bootstrap_aucs,
)
from leadtemp.modelling.buckets import BucketCutoffs, bucket_warnings, fit_buckets
from leadtemp.modelling.calibration import PROBABILITY_FLOOR, Calibrator, fit_calibrator
from leadtemp.workflows.train import buckets_gate, ship_gates


def _floor_slice(n: int = 10_000, tied: float = 0.65, seed: int = 0):
    """A calibration slice like the 14-day-horizon failure: most leads share one margin (no events, one leaf
    path) and none of them converted, so the isotonic calibrator gives all of them its floor."""
    rng = np.random.default_rng(seed)
    k = int(tied * n)
    margin = np.concatenate([np.full(k, -5.0), rng.normal(size=n - k)])
    y = np.concatenate([np.zeros(k), rng.random(n - k) < 1 / (1 + np.exp(-(margin[k:] - 2)))]).astype(float)
    calibrator = fit_calibrator(margin, y, "isotonic")
    return margin, y, calibrator, calibrator(margin)


def _share_cutoffs(p: np.ndarray) -> BucketCutoffs:
    return fit_buckets(p, "share", 0.10, 0.30, 0.5, 0.15)


def _scorer(calibrator, cutoffs: BucketCutoffs, calibration_p: np.ndarray) -> SimpleNamespace:
    """What the gate reads of a scorer: its calibrator, its cut-offs, the calibration slice's bucket shares."""
    return SimpleNamespace(calibrator=calibrator, buckets=cutoffs,
                           meta={"profile": {"bucket_shares": bucket_shares(cutoffs.assign(calibration_p))}})


# -- cut-offs --------------------------------------------------------------------------------------------

def test_the_floor_failure_is_reproduced_by_plain_quantiles_and_fixed_by_tie_aware_cutoffs():
    _, _, calibrator, p = _floor_slice()
    assert calibrator.bounds()[0] == PROBABILITY_FLOOR and np.mean(p == PROBABILITY_FLOOR) == pytest.approx(0.65)
    assert np.quantile(p, 0.6) == PROBABILITY_FLOOR  # the old warm cut-off: p >= floor for everyone, cold empty
    cut = _share_cutoffs(p)
    shares = bucket_shares(cut.assign(p))
    assert cut.warm > PROBABILITY_FLOOR
    # The tie block at the floor goes wholly to cold; the realised shares are reported, not the asked ones.
    assert shares == pytest.approx({"hot": 0.10, "warm": 0.25, "cold": 0.65})
    assert set(cut.assign(p[p == PROBABILITY_FLOOR])) == {"cold"}


def test_a_tie_block_is_never_split_and_untied_probabilities_get_the_asked_shares():
    rng = np.random.default_rng(1)
    p = np.round(rng.beta(1, 8, 5000), 2)  # ~40 distinct values, big tie blocks everywhere
    assigned = _share_cutoffs(p).assign(p)
    for value in np.unique(p):
        assert np.unique(assigned[p == value]).size == 1, value
    assert all(bucket_shares(assigned)[b] > 0 for b in BUCKETS)
    untied = rng.random(1000)
    assert bucket_shares(_share_cutoffs(untied).assign(untied)) == pytest.approx({"hot": 0.1, "warm": 0.3, "cold": 0.6})


def test_three_distinct_probabilities_fill_three_buckets_and_a_block_of_almost_all_goes_to_one():
    p = np.array([0.3] * 2 + [0.2] * 3 + [0.1] * 95)
    assert bucket_shares(_share_cutoffs(p).assign(p)) == pytest.approx({"hot": 0.02, "warm": 0.03, "cold": 0.95})
    two = np.array([0.2] * 50 + [0.1] * 50)
    assert min(bucket_shares(_share_cutoffs(two).assign(two)).values()) == 0  # cannot fill three: the gate says so


# -- the first-train gate -----------------------------------------------------------------------------------

def _test_buckets(p_test: np.ndarray, y_test: np.ndarray, cutoffs: BucketCutoffs) -> pd.DataFrame:
    return bucket_table(y_test, cutoffs.assign(p_test))


def test_a_cutoff_on_the_floor_fails_buckets_separate_with_what_happened_and_what_helps():
    margin, y, calibrator, p = _floor_slice()
    old = BucketCutoffs(hot=float(np.quantile(p, 0.9)), warm=float(np.quantile(p, 0.6)), method="share")
    gate = buckets_gate(_test_buckets(p, y, old), _scorer(calibrator, old, p))
    assert not gate.passed
    assert "warm cut-off 0.0001 is at the calibrator's lowest probability" in gate.detail
    assert "empty on the calibration slice" in gate.detail and "empty on the test slice: cold" in gate.detail
    assert "longer horizon or more conversions" in gate.detail
    fixed = _share_cutoffs(p)
    gate = buckets_gate(_test_buckets(p, y, fixed), _scorer(calibrator, fixed, p))
    assert gate.passed, gate.detail
    assert "calibration slice hot 10.0%, warm 25.0%, cold 65.0%" in gate.detail


def test_a_cutoff_above_the_ceiling_or_a_bucket_empty_on_calibration_alone_fails():
    margin, y, calibrator, p = _floor_slice()
    high = calibrator.bounds()[1]
    unreachable = BucketCutoffs(hot=min(high + 0.01, 0.9999), warm=0.01, method="probability")
    gate = buckets_gate(_test_buckets(p, y, _share_cutoffs(p)), _scorer(calibrator, unreachable, p))
    assert not gate.passed and "above the calibrator's highest probability" in gate.detail
    fitted = _share_cutoffs(p)
    scorer = _scorer(calibrator, fitted, p)
    scorer.meta["profile"]["bucket_shares"]["warm"] = 0.0
    gate = buckets_gate(_test_buckets(p, y, fitted), scorer)
    assert not gate.passed and "empty on the calibration slice (where the cut-offs were fitted): warm" in gate.detail


def test_hot_converting_no_more_than_cold_fails():
    y = np.array([1, 0, 0, 0] * 25 + [1, 0] * 50)
    bucket = np.array(["hot"] * 50 + ["warm"] * 50 + ["cold"] * 100)
    gate = buckets_gate(bucket_table(y, bucket))
    assert not gate.passed and "hot leads convert no more than cold ones" in gate.detail


def test_the_training_table_never_prints_nan(capsys):
    from leadtemp.cli import _print_training
    from leadtemp.modelling.results import Gate

    y = np.array([1, 0] * 50)
    table = bucket_table(y, np.array(["hot"] * 30 + ["warm"] * 70))  # cold is empty
    result = SimpleNamespace(
        warnings=[], test=pd.DataFrame({"label": y}), splits=SimpleNamespace(describe=lambda: {"test": "2024"}),
        metrics={"rows": 100.0, "positive_rate": 0.5, "roc_auc": 0.6, "pr_auc": 0.6, "lift_at_10": 1.2, "raw_ece": 0.01,
                 "ece": 0.01},
        buckets=table, gates=[Gate("buckets separate", False, "empty on the test slice: cold")], fit_to_ship=False,
        scorer=SimpleNamespace(calibrator=Calibrator("sigmoid", ceiling=0.62)))
    _print_training(result, SimpleNamespace(champion=False, run_id="r", version="1", export_path="models/v1"))
    out = capsys.readouterr().out
    assert "nan" not in out.lower() and "empty" in out and "highest probability shown: 0.620" in out


# -- score warns ------------------------------------------------------------------------------------------------

def test_score_warns_when_a_bucket_holds_none_or_nearly_all():
    assert bucket_warnings({"hot": 100, "warm": 300, "cold": 600}) == []
    empty = bucket_warnings({"hot": 0, "warm": 9868, "cold": 849})
    assert len(empty) == 1 and empty[0].startswith("no lead is hot: 10,717 leads scored")
    none_cold = bucket_warnings({"hot": 849, "warm": 9868, "cold": 0})
    assert none_cold[0].startswith("no lead is cold")
    crowded = bucket_warnings({"hot": 10, "warm": 900, "cold": 90})
    assert len(crowded) == 1 and crowded[0].startswith("90% of the 1,000 leads scored are warm")
    assert bucket_warnings({"hot": 0, "warm": 10, "cold": 30}) == []  # 40 leads: an empty hot bucket can be luck


def test_batch_scoring_reports_the_bucket_warnings(small_result, small_sim, params, tmp_path):
    import dataclasses

    from leadtemp.adapters.sources import Source, Target
    from leadtemp.api import score_sources

    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    small_sim.interactions.to_parquet(tmp_path / "events.parquet")
    everyone_cold = dataclasses.replace(small_result.scorer, buckets=BucketCutoffs(hot=1.0, warm=1.0, method="probability"))
    done = score_sources(everyone_cold, params, pd.Timestamp("2024-06-01"), Source.file(tmp_path / "leads.parquet"),
                         Source.file(tmp_path / "events.parquet"), Target(path=tmp_path / "scores.parquet"),
                         reasons=False, echo=lambda m: None)
    assert done.buckets["cold"] == done.scored > 50
    assert any(w.startswith("no lead is hot or warm") for w in done.warnings), done.warnings


def test_cli_score_prints_the_bucket_warning_on_stderr(small_result, small_sim, tmp_path):
    import dataclasses

    from typer.testing import CliRunner

    from conftest import ROOT
    from leadtemp.cli import app

    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    small_sim.interactions.to_parquet(tmp_path / "events.parquet")
    everyone_hot = dataclasses.replace(small_result.scorer, buckets=BucketCutoffs(hot=0.0, warm=0.0, method="probability"))
    import mlflow

    from leadtemp.adapters.pyfunc import pyfunc_arguments

    mlflow.pyfunc.save_model(str(tmp_path / "model"),
                             **pyfunc_arguments(everyone_hot, everyone_hot.save(tmp_path / "scorer"), None))
    result = CliRunner().invoke(app, ["score", "--as-of", "2024-06-01", "--model", str(tmp_path / "model"), "--no-reasons",
                                      "--leads", "leads.parquet", "--interactions", "events.parquet",
                                      "--out", "scores.parquet", "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: no lead is warm or cold")]
    assert len(warned) == 1 and "hot 100%" in warned[0]
    assert (tmp_path / "scores.rejects.parquet").exists()  # the rejects follow --out's name and format


# -- the honest interval ---------------------------------------------------------------------------------------------

def test_the_weighted_auc_of_a_resample_is_sklearns():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.normal(size=500) + y * 0.5, 1)  # ties
    leads = rng.integers(0, 120, 500)
    aucs = lead_bootstrap_aucs(y, [score, -score], leads, 5, seed=9)
    rng = np.random.default_rng(9)
    codes, uniques = pd.factorize(leads)
    weight = np.bincount(rng.integers(len(uniques), size=len(uniques)), minlength=len(uniques))[codes]
    assert aucs[0, 0] == pytest.approx(roc_auc_score(y, score, sample_weight=weight), abs=1e-12)
    assert aucs[0, 1] == pytest.approx(1 - aucs[0, 0], abs=1e-12)


def _weak_leads(n_leads: int = 400, seed: int = 7):
    """One row per lead, a weak signal whose test interval (rightly) holds 0.5."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(size=n_leads)
    y = (rng.random(n_leads) < 1 / (1 + np.exp(-(0.3 * margin - 1.5)))).astype(int)
    return pd.DataFrame({"lead_id": [f"L{i}" for i in range(n_leads)], "label": y, "margin": margin})


def _ranks(frame: pd.DataFrame):
    metrics = classification_metrics(frame["label"], 1 / (1 + np.exp(-frame["margin"])))
    buckets = bucket_table(frame["label"], np.where(frame["margin"] > 1, "hot", np.where(frame["margin"] > 0, "warm", "cold")))
    return next(g for g in ship_gates(frame, metrics, buckets, seed=0) if g.name == "ranks better than chance")


def test_duplicated_snapshots_are_no_evidence_that_a_model_ranks():
    leads = _weak_leads()
    y = leads["label"].to_numpy()
    auc = roc_auc_score(y, leads["margin"])
    assert auc_interval(auc, int(y.sum()), int(len(y) - y.sum()))[0] < 0.5 < auc  # weak: not shown on 400 leads
    assert not _ranks(leads).passed
    copies = leads.loc[leads.index.repeat(10)].reset_index(drop=True)  # each lead 10 times: same score, same label
    yc = copies["label"].to_numpy()
    # Hanley & McNeil counts the copies as new evidence and would pass the gate ...
    assert auc_interval(auc, int(yc.sum()), int(len(yc) - yc.sum()))[0] > 0.5
    # ... the lead-clustered bootstrap does not: the same interval as on the 400 leads.
    gate = _ranks(copies)
    assert not gate.passed and "bootstrap of 400 leads" in gate.detail
    single = lead_auc_interval(y, leads["margin"].to_numpy(), leads["lead_id"].to_numpy(), 1000, seed=0)
    copied = lead_auc_interval(yc, copies["margin"].to_numpy(), copies["lead_id"].to_numpy(), 1000, seed=0)
    assert copied == pytest.approx(single, abs=1e-9)
    # Without resamples the fallback counts leads too, and still does not pass.
    frame = copies.assign(probability=1 / (1 + np.exp(-copies["margin"])))
    metrics = classification_metrics(frame["label"], frame["probability"])
    fallback = next(g for g in ship_gates(frame, metrics, bucket_table(yc, np.array(["hot", "warm", "cold"] * 1333 + ["cold"])),
                                          resamples=0) if g.name == "ranks better than chance")
    assert not fallback.passed and "Hanley-McNeil on 400 leads" in fallback.detail


def test_a_model_that_ranks_on_many_leads_still_passes():
    rng = np.random.default_rng(6)
    leads = _weak_leads(3000, seed=6)
    leads["margin"] = leads["margin"] * 0 + rng.normal(size=3000) + 1.5 * leads["label"]
    assert _ranks(leads.loc[leads.index.repeat(3)].reset_index(drop=True)).passed


def test_fixed_cutoffs_that_leave_a_bucket_empty_get_advice_about_fixed_cutoffs():
    """A run with buckets.method: probability is not told to set fixed cut-offs, nor about isotonic steps it lacks."""
    raw = Calibrator("sigmoid", slope=1.0, intercept=0.0, ceiling=0.8)
    scorer = SimpleNamespace(calibrator=raw, buckets=BucketCutoffs(hot=0.5, warm=0.15, method="probability"),
                             meta={"profile": {"bucket_shares": {"hot": 0.2, "warm": 0.8, "cold": 0.0}}})
    table = pd.DataFrame({"bucket": ["hot", "warm", "cold"], "leads": [20, 80, 0], "converted": [10, 20, 0],
                          "rate": [0.5, 0.25, np.nan]})
    gate = buckets_gate(table, scorer)
    assert not gate.passed and "empty on the calibration slice (where the cut-offs were fitted): cold" in gate.detail
    assert "buckets.warm_probability 0.15" in gate.detail and "buckets.method: share" in gate.detail
    assert "isotonic" not in gate.detail
