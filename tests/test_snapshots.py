import pandas as pd
import pytest

from leadtemp.core.errors import NotEnoughHistory
from leadtemp.core.snapshots import build_snapshots, eligible_leads, split_cutoffs

T = pd.Timestamp("2024-03-01")


def leads():
    return pd.DataFrame({
        "lead_id": ["before", "at_cutoff", "converted_earlier", "converts_at_t", "converts_in_h", "converts_late", "later"],
        "created_at": pd.to_datetime(["2024-01-01", "2024-03-01", "2024-01-01", "2024-01-01", "2024-01-01", "2024-01-01", "2024-04-01"]),
        "converted_at": pd.to_datetime([None, None, "2024-02-28", "2024-03-01", "2024-05-29", "2024-05-31", None]),
    })


def test_eligibility_is_strictly_before_the_cutoff():
    ids = set(eligible_leads(leads(), T)["lead_id"])
    # created exactly at t is not yet a lead; converted exactly at t was not yet known at t.
    assert ids == {"before", "converts_at_t", "converts_in_h", "converts_late"}


def test_labels_cover_the_horizon_after_the_cutoff():
    snaps = build_snapshots(leads(), pd.DatetimeIndex([T]), horizon_days=90, until=pd.Timestamp("2024-12-31"))
    labels = dict(zip(snaps["lead_id"], snaps["label"]))
    assert labels == {"before": 0, "converts_at_t": 1, "converts_in_h": 1, "converts_late": 0}


def test_censored_cutoffs_are_dropped_not_negative():
    cutoffs = pd.DatetimeIndex([T, pd.Timestamp("2024-10-01")])
    snaps = build_snapshots(leads(), cutoffs, horizon_days=90, until=pd.Timestamp("2024-12-01"))
    assert set(snaps["cutoff"]) == {T}


def test_splits_are_time_ordered_with_an_embargo_of_one_horizon():
    cutoffs = pd.date_range("2022-01-01", "2024-12-01", freq="MS")
    s = split_cutoffs(cutoffs, horizon_days=90, test=3, calibration=3, validation=2)
    assert s.train.max() < s.validation.min() <= s.validation.max() < s.calibration.min()
    assert s.calibration.max() + pd.Timedelta(days=90) <= s.test.min()
    assert s.validation.max() + pd.Timedelta(days=90) <= s.calibration.min()
    assert list(s.test) == list(cutoffs[-3:])


def test_too_little_history_is_refused_with_what_is_missing():
    with pytest.raises(NotEnoughHistory, match="too few"):
        split_cutoffs(pd.date_range("2024-01-01", periods=8, freq="MS"), 90, 3, 3, 2)
