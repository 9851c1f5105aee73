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
    cutoff = small_result.splits.starts[-1]  # the newest fold's validation block starts here
    snaps = pd.DataFrame({"lead_id": eligible_leads(small_sim.leads, cutoff)["lead_id"].to_numpy(),
                          "cutoff": cutoff, "label": 0})
    leads, events = _with_future(small_sim, cutoff, seed=1)
    a = build_training_frame(snaps, small_sim.leads, small_sim.interactions, spec)
    b = build_training_frame(snaps, leads, events, spec)
    pd.testing.assert_frame_equal(a, b)


def test_everything_fitted_learns_from_labels_observed_before_the_test_slice(small_result):
    s, horizon = small_result.splits, pd.Timedelta(days=small_result.scorer.horizon_days)
    # The pool (booster, folds, calibrator, bucket cut-offs) holds only labels fully observed before the first test cutoff.
    assert s.pool_cutoffs.max() + horizon <= s.test.min()
    # Each fold trains on labels observed before its validation block starts.
    for start in s.starts:
        assert (s.pool_cutoffs[s.pool_cutoffs + horizon <= start]).size > 0
    # The model records the end of the labels it was fitted on: what a later retrain compares from.
    assert pd.Timestamp(small_result.scorer.meta["trained_through"]) == s.test.min()


# -- creation snapshots: each lead at its own cutoff -------------------------------------------------
def test_creation_snapshot_features_ignore_everything_from_their_own_cutoff_on(small_sim, small_result):
    """Each lead's snapshot at the first midnight after its creation: events and conversions at or after
    that lead's own cutoff (many different cutoffs in one frame) change none of its features."""
    from leadtemp.core.features import features_as_of, prepare_events
    from leadtemp.core.snapshots import creation_snapshots

    spec = small_result.scorer.spec
    snaps = creation_snapshots(small_sim.leads, 90, small_sim.leads["created_at"].max())
    snaps = snaps.iloc[::3].reset_index(drop=True)  # a third of the leads: ~200 distinct cutoffs, quick
    rng = np.random.default_rng(2)
    own = snaps.set_index("lead_id")["cutoff"]
    who = rng.choice(snaps["lead_id"].to_numpy(), size=4000)
    future = pd.DataFrame({
        "lead_id": who,
        "timestamp": own.loc[who].to_numpy() + pd.to_timedelta(rng.integers(0, 30 * 86400, who.size), unit="s"),
        "type": rng.choice(["phone_call", "pos_question", "sms", "brand_new_type"], size=who.size),
        "direction": rng.choice(["inbound", "outbound"], size=who.size),
        "value": np.nan,
    })
    future.loc[:300, "timestamp"] = own.loc[future.loc[:300, "lead_id"]].to_numpy()  # exactly at the cutoff
    leads = small_sim.leads.copy()
    cutoff_of = leads["lead_id"].map(own)
    later = cutoff_of.notna() & leads["converted_at"].isna()
    leads.loc[later, "converted_at"] = cutoff_of[later] + pd.Timedelta(days=3)  # converting after the cutoff
    events = pd.concat([small_sim.interactions, future], ignore_index=True)
    a = build_training_frame(snaps, small_sim.leads, small_sim.interactions, spec)
    b = build_training_frame(snaps, leads, events, spec)
    pd.testing.assert_frame_equal(a, b)
    # The per-date shortcut (only the day's leads' events) equals features over the whole log.
    prepared = prepare_events(events, spec)
    by_id = leads.set_index("lead_id", drop=False)
    for cutoff in sorted(set(a["cutoff"]))[::40]:
        rows = a.loc[a["cutoff"] == cutoff].reset_index(drop=True)
        full = features_as_of(by_id.loc[rows["lead_id"]].reset_index(drop=True), prepared, cutoff, spec)
        pd.testing.assert_frame_equal(rows.drop(columns=["label"]).rename(columns={"cutoff": "as_of"}), full)


def test_no_test_label_reaches_the_folds_the_booster_or_the_calibrator(small_sim, params, monkeypatch):
    """Rolling origin (the default): every pool row's label window ends by the first test cutoff; each fold's
    training rows' windows end by the start of its validation block; the calibrator's rows are out-of-fold."""
    from leadtemp.workflows import train as training

    seen = {}
    real = training.fit_scorer_rolling

    def spy(pool, folds, period, spec, p, meta):
        seen.update(pool=pool, folds=folds)
        return real(pool, folds, period, spec, p, meta)

    monkeypatch.setattr(training, "fit_scorer_rolling", spy)
    from leadtemp.modelling import horizons

    real_rounds, finals = horizons.fit_rounds, []

    def spy_rounds(frame, *args, **kwargs):
        finals.append(frame)
        return real_rounds(frame, *args, **kwargs)

    monkeypatch.setattr(horizons, "fit_rounds", spy_rounds)
    result = training.train(small_sim.leads, small_sim.interactions, params.replace(snapshots={"at_creation": True}))
    s, h = result.splits, pd.Timedelta(days=result.scorer.horizon_days)
    pool = seen["pool"]
    assert set(pool["snapshot"]) == {"periodic", "creation"}
    assert (pool["cutoff"] + h <= s.test.min()).all() and not pool.duplicated(["lead_id", "cutoff"]).any()
    assert len(seen["folds"]) == len(s.starts) >= 2
    for (fit, valid), start in zip(seen["folds"], s.starts):
        assert (pool.loc[fit, "cutoff"] + h <= start).all()           # a fold learns only labels observed before its block
        assert (pool.loc[valid, "cutoff"] >= start).all() and valid.sum() > 0 and not (fit & valid).any()
    assert (result.test["cutoff"] >= s.test.min()).all()
    # Retrain compares on the periodic test cutoffs only (creation snapshots fall on almost every day).
    assert set(result.test.loc[result.test["snapshot"] == "periodic", "cutoff"]) == set(s.test)
    # When, not only if: each other horizon's booster learns its own h-day labels, all observed before the test
    # slice, and no conversion from the test slice on counts as a positive for it (nor does any past its window).
    converted = small_sim.leads.set_index("lead_id")["converted_at"]
    assert [int(d) for d in result.scorer.meta["when"]] == [7, 30] and len(finals) == 2
    for days, frame in zip((7, 30), finals):
        ends = frame["cutoff"] + pd.Timedelta(days=days)
        assert (ends <= s.test.min()).all()
        when = frame["lead_id"].map(converted)
        assert (when[frame["label"] == 1] <= ends[frame["label"] == 1]).all()
        assert (when[frame["label"] == 1] < s.test.min()).all()
        assert ((frame["label"] == 1) == (when.notna() & (when >= frame["cutoff"]) & (when <= ends))).all()


def test_the_fixed_chain_keeps_its_embargoes_with_creation_snapshots(small_sim, params, monkeypatch):
    from leadtemp.workflows import train as training

    seen = {}
    real = training.fit_scorer

    def spy(parts, spec, p, meta):
        seen.update(parts)
        return real(parts, spec, p, meta)

    monkeypatch.setattr(training, "fit_scorer", spy)
    chain = params.replace(snapshots={"at_creation": True, "horizon_days": 90, "frequency": "MS"}, splits={"method": "chain"})
    result = training.train(small_sim.leads, small_sim.interactions, chain)
    s, h = result.splits, pd.Timedelta(days=90)
    for name in ("train", "validation", "calibration", "test"):
        part = seen[name]
        assert set(part["snapshot"]) == {"periodic", "creation"}, name
        assert set(part.loc[part["snapshot"] == "periodic", "cutoff"]) == set(getattr(s, name)), name
        assert not part.duplicated(["lead_id", "cutoff"]).any(), name
    booster = pd.concat([seen["train"], seen["validation"]])
    assert (booster["cutoff"] + h <= s.calibration.min()).all()          # the booster's labels end before calibration
    assert (seen["calibration"]["cutoff"] >= s.calibration.min()).all()
    assert (seen["calibration"]["cutoff"] + h <= s.test.min()).all()     # calibration's labels end before the test
    assert (seen["test"]["cutoff"] >= s.test.min()).all()
    assert (seen["validation"]["cutoff"] >= s.validation.min()).all() and (seen["train"]["cutoff"] < s.validation.min()).all()
