"""Point-in-time correctness: the future changes nothing about a snapshot."""

import numpy as np
import pandas as pd

from leadtemp.core.features import build_training_frame
from leadtemp.core.snapshots import eligible_leads


def _with_future(sim, cutoff, seed=0):
    """The same data plus interactions and conversions dated at or after ``cutoff``."""
    rng = np.random.default_rng(seed)
    leads = sim.leads.copy()
    open_ = leads.index[leads["created_at"] < cutoff]
    pick = rng.choice(open_, size=len(open_) // 3, replace=False)
    leads.loc[pick, "converted_at"] = leads.loc[pick, "converted_at"].where(
        leads.loc[pick, "converted_at"] < cutoff, cutoff + pd.to_timedelta(rng.integers(0, 200, len(pick)), unit="D"))
    n = 5000
    future = pd.DataFrame({
        "lead_id": rng.choice(leads["lead_id"], size=n),
        "timestamp": cutoff + pd.to_timedelta(rng.integers(0, 90 * 86400, n), unit="s"),
        "type": rng.choice(["phone_call", "pos_question", "sms", "brand_new_type"], size=n),
        "direction": rng.choice(["inbound", "outbound"], size=n),
        "value": np.nan,
    })
    future.loc[:200, "timestamp"] = cutoff  # exactly at the cutoff is not history either
    return leads, pd.concat([sim.interactions, future], ignore_index=True)


def test_future_rows_change_no_feature_score_or_bucket(small_sim, small_result):
    scorer = small_result.scorer
    cutoff = small_result.splits.test.min()
    before = scorer.score(small_sim.leads, small_sim.interactions, cutoff)
    leads, events = _with_future(small_sim, cutoff)
    after = scorer.score(leads, events, cutoff)
    pd.testing.assert_frame_equal(before, after)
    f_before = scorer.features(small_sim.leads, small_sim.interactions, cutoff)
    f_after = scorer.features(leads, events, cutoff)
    pd.testing.assert_frame_equal(f_before, f_after)


def test_training_frame_ignores_the_future(small_sim, small_result):
    spec = small_result.scorer.spec
    cutoff = small_result.splits.calibration.min()
    snaps = pd.DataFrame({"lead_id": eligible_leads(small_sim.leads, cutoff)["lead_id"].to_numpy(),
                          "cutoff": cutoff, "label": 0})
    leads, events = _with_future(small_sim, cutoff, seed=1)
    a = build_training_frame(snaps, small_sim.leads, small_sim.interactions, spec)
    b = build_training_frame(snaps, leads, events, spec)
    pd.testing.assert_frame_equal(a, b)


def test_calibration_and_buckets_are_fitted_before_the_test_slice(small_result):
    s, horizon = small_result.splits, pd.Timedelta(days=small_result.scorer.horizon_days)
    # Calibration labels are fully observed before the first test cutoff.
    assert s.calibration.max() + horizon <= s.test.min()
    # The model records the end of the labels it was fitted on: what a later retrain compares from.
    assert pd.Timestamp(small_result.scorer.meta["trained_through"]) == s.calibration.max() + horizon
