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


# -- creation snapshots (snapshots.at_creation) ------------------------------------------------------
def created_leads():
    return pd.DataFrame({
        "lead_id": ["plain", "same_day", "at_midnight", "next_day", "later", "late_evening", "censored"],
        "created_at": pd.to_datetime(["2024-03-01 10:00", "2024-03-01 09:00", "2024-03-01 11:00", "2024-03-01 12:00",
                                      "2024-03-01 13:00", "2024-03-01 23:59", "2024-11-30 08:00"]),
        "converted_at": pd.to_datetime([None, "2024-03-01 18:00", "2024-03-02 00:00", "2024-03-05 00:00", "2024-06-15 00:00",
                                        "2024-05-31 00:00", "2024-12-01 00:00"]),
    })


def test_a_creation_snapshot_is_taken_at_the_first_midnight_after_creation():
    from leadtemp.core.snapshots import creation_snapshots

    snaps = creation_snapshots(created_leads(), horizon_days=90, until=pd.Timestamp("2024-12-31"))
    assert set(snaps["cutoff"]) == {pd.Timestamp("2024-03-02")}
    labels = dict(zip(snaps["lead_id"], snaps["label"]))
    # converted the day it arrived: not eligible at its first midnight; converted exactly at it: an outcome;
    # three days later: positive; after the horizon (2024-05-31): negative; the last lead's horizon is unobserved.
    assert labels == {"plain": 0, "at_midnight": 1, "next_day": 1, "later": 0, "late_evening": 1}


def test_a_creation_snapshot_on_a_used_periodic_cutoff_is_not_repeated():
    from leadtemp.core.snapshots import creation_snapshots

    snaps = creation_snapshots(created_leads(), 90, pd.Timestamp("2024-12-31"), skip=pd.DatetimeIndex(["2024-03-02"]))
    assert snaps.empty


def test_creation_snapshots_take_the_slice_of_their_time_and_respect_the_embargoes():
    from leadtemp.core.snapshots import slices_of_times

    cutoffs = pd.date_range("2022-01-01", "2024-12-01", freq="MS")
    s = split_cutoffs(cutoffs, horizon_days=90, test=3, calibration=3, validation=2)
    until, h = pd.Timestamp("2025-03-01"), pd.Timedelta(days=90)
    days = pd.date_range("2021-12-01", until, freq="D")
    names = slices_of_times(days, s, 90, until)
    got = pd.Series(names, index=days)
    assert (got[days < s.validation.min()].isin(["train", ""])).all()
    assert got[days < pd.Timestamp("2022-01-01")].eq("train").all()  # before the first periodic cutoff: train
    booster = got.index[got.isin(["train", "validation"])]
    assert (booster + h <= s.calibration.min()).all()
    calibration = got.index[got == "calibration"]
    assert (calibration >= s.calibration.min()).all() and (calibration + h <= s.test.min()).all()
    test = got.index[got == "test"]
    assert (test >= s.test.min()).all() and (test + h <= until).all()
    assert got[s.test.min()] == "test" and got[until - h] == "test" and got[until - h + pd.Timedelta(days=1)] == ""
    # A time in the embargo gap after validation is dropped, never moved into a later slice.
    assert got[s.calibration.min() - pd.Timedelta(days=10)] == ""
    assert {"train", "validation", "calibration", "test"} <= set(names)


def test_folds_are_trimmed_from_the_oldest_until_every_kept_fold_has_enough_conversions():
    """A fold's block runs to the next fold's start, so a fold short of conversions can only go with every older
    one: the newest run of folds that all pass is kept."""
    from leadtemp.core.cadence import plan_rolling, trim_folds

    labelled = pd.date_range("2024-01-01", "2024-12-01", freq="MS")
    splits = plan_rolling(labelled, horizon_days=30, test_cutoffs=2, fold_cutoffs=1, folds=3)
    assert [f"{s:%m}" for s in splits.starts] == ["08", "09", "10"]

    def snaps(converting: dict[str, int]) -> pd.DataFrame:
        rows = [{"lead_id": f"{c:%m}-{i}", "cutoff": c, "label": int(i < converting.get(f"{c:%m}", 25))}
                for c in labelled for i in range(100)]
        return pd.DataFrame(rows)

    until = pd.Timestamp("2025-01-15")
    assert len(trim_folds(splits, snaps({}), until).starts) == 3
    assert [f"{s:%m}" for s in trim_folds(splits, snaps({"09": 5}), until).starts] == ["10"]  # the middle block is short
    assert [f"{s:%m}" for s in trim_folds(splits, snaps({"08": 5}), until).starts] == ["09", "10"]
    assert trim_folds(splits, snaps({"10": 5}), until) is None       # the newest block is short: no fold is left
    assert trim_folds(splits, snaps({"12": 5, "11": 5}), until) is None  # too few conversions in the test slice
