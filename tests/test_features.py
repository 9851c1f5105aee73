import numpy as np
import pandas as pd
import pytest

from leadtemp.core.config import Features
from leadtemp.core.features import features_as_of, fit_feature_spec, prepare_events
from leadtemp.core.schema import validate_interactions, validate_leads

AS_OF = pd.Timestamp("2024-03-01")


@pytest.fixture()
def tiny():
    leads = validate_leads(pd.DataFrame({
        "lead_id": ["a", "b"], "created_at": ["2024-01-01", "2024-02-20"], "source": ["web", "referral"],
    }), "leads", categorical=["source"])
    events = validate_interactions(pd.DataFrame({
        "lead_id": ["a", "a", "a", "a", "b"],
        "timestamp": ["2024-02-27 12:00", "2024-02-10", "2024-01-15", "2024-03-01 00:00", "2024-02-25"],
        "type": ["phone_call", "phone_call", "email", "phone_call", "email"],
        "direction": ["inbound", "inbound", "inbound", "inbound", "outbound"],
    }), "interactions", leads["lead_id"])
    spec = fit_feature_spec(leads, events, Features(windows_days=(7, 30, 90), half_life_days=14), ("source",), (), before=AS_OF)
    return leads, events, spec


def test_window_counts_recency_and_activation(tiny):
    leads, events, spec = tiny
    f = features_as_of(leads, prepare_events(events, spec), AS_OF, spec).set_index("lead_id")
    a, b = f.loc["a"], f.loc["b"]
    # The call stamped exactly at AS_OF is not history yet.
    assert (a["phone_call_in_7d"], a["phone_call_in_30d"], a["phone_call_in_90d"]) == (1, 2, 2)
    assert a["phone_call_in_days_since_last"] == pytest.approx(2.5)
    assert a["inbound_90d"] == 3 and a["outbound_90d"] == 0
    assert a["days_since_first_inbound"] == pytest.approx(46)
    assert a["just_turned_active"] == 0
    assert a["phone_call_in_decayed"] == pytest.approx(2 ** (-2.5 / 14) + 2 ** (-20 / 14))
    assert b["inbound_90d"] == 0 and np.isnan(b["days_since_first_inbound"])
    assert b["email_out_days_since_last"] == pytest.approx(5)
    assert b["lead_age_days"] == pytest.approx(10)
    assert str(b["source"]) == "referral"


def test_inputs_are_not_modified(tiny):
    leads, events, spec = tiny
    before_leads, before_events = leads.copy(), events.copy()
    features_as_of(leads, prepare_events(events, spec), AS_OF, spec)
    pd.testing.assert_frame_equal(leads, before_leads)
    pd.testing.assert_frame_equal(events, before_events)


def test_unseen_category_becomes_missing_not_an_error(tiny):
    leads, events, spec = tiny
    new = leads.assign(source=["web", "trade_show"])
    f = features_as_of(new, prepare_events(events, spec), AS_OF, spec)
    assert pd.isna(f.loc[1, "source"])


def test_unsorted_scoring_path_equals_the_sorted_training_path_and_ignores_the_future(small_sim, small_result):
    """Scoring prepares events without sorting them; the features must not change, and events at or after
    the date (shuffled in anywhere) must change nothing."""
    spec = small_result.scorer.spec
    leads, events = small_sim.leads, small_sim.interactions
    as_of = pd.Timestamp("2024-06-01")
    eligible = leads[(leads["created_at"] < as_of)].reset_index(drop=True)
    sorted_path = features_as_of(eligible, prepare_events(events, spec), as_of, spec)
    shuffled = events.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert not shuffled["timestamp"].is_monotonic_increasing
    unsorted_path = features_as_of(eligible, prepare_events(shuffled, spec, sort=False), as_of, spec)
    pd.testing.assert_frame_equal(unsorted_path, sorted_path, check_exact=False, rtol=1e-12)
    past = shuffled[shuffled["timestamp"] < as_of]
    only_past = features_as_of(eligible, prepare_events(past, spec, sort=False), as_of, spec)
    pd.testing.assert_frame_equal(only_past, sorted_path, check_exact=False, rtol=1e-12)
