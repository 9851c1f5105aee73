"""A short-history funnel shaped like the real B2B one of issue 12: 8,000 leads over 11 months, two
attributes, no interaction log, a median of ~14 days from creation to win, wins recorded only from
month 6. What the defaults do with it, and what makes `train` learn from it."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadtemp.core.config import params_from_dict
from leadtemp.core.errors import NotEnoughHistory
from leadtemp.core.schema import empty_interactions
from leadtemp.workflows.train import train

MONTHS, RECORDED_FROM_MONTH = 11, 6
DATA = {"interactions": None, "categorical": ["source", "company_size"]}


def short_funnel(n: int = 8000, seed: int = 5) -> pd.DataFrame:
    """The simulator decides who converts (through source, company size and the rest of its hidden story);
    each winner's time to win is redrawn, log-normal with a median of 14 days, so half the wins happen
    within two weeks of creation. Wins before month 6 were never recorded: those leads are in the table as
    not converted (what the real export shows), and wins after the end of the data have not happened yet."""
    from leadtemp.simulate import simulate

    sim = simulate(n, seed=seed, months=MONTHS)
    rng = np.random.default_rng(seed)
    leads = sim.leads[["lead_id", "created_at", "converted_at", "source", "company_size"]].copy()
    start = leads["created_at"].min().normalize()
    delay = pd.to_timedelta(rng.lognormal(np.log(14), 1.0, len(leads)) * 86400, unit="s")
    won = (leads["created_at"] + delay).where(leads["converted_at"].notna())
    won = won.where(won < start + pd.DateOffset(months=MONTHS))
    leads["converted_at"] = won.where(won >= start + pd.DateOffset(months=RECORDED_FROM_MONTH - 1))
    return leads


@pytest.fixture(scope="module")
def funnel() -> pd.DataFrame:
    return short_funnel()


def test_the_funnel_is_shaped_like_the_real_one(funnel):
    converted = funnel["converted_at"].notna()
    days = (funnel["converted_at"] - funnel["created_at"]).dt.days
    assert 0.07 < converted.mean() < 0.14
    assert days.median() <= 16
    assert funnel.loc[converted, "converted_at"].min() >= funnel["created_at"].min() + pd.DateOffset(months=5)


def test_the_defaults_fit_eleven_months_and_say_what_they_chose(funnel):
    """With only a data section: the horizon follows the days to win (75% within ~32 days: 30, as 60 leaves too
    little history), the cutoffs are weekly (monthly ones leave too few), three rolling-origin folds; the model
    ranks on its test slice, its buckets separate and every ship gate passes."""
    result = train(funnel, empty_interactions(), params_from_dict({"data": DATA}))
    assert result.scorer.horizon_days == 30 and result.scorer.meta["cadence"]["frequency"] == "W-MON"
    assert len(result.splits.starts) == 3
    said = " | ".join(result.warnings)
    assert "horizon 30 days (auto: 75% of" in said and "cutoffs weekly (auto)" in said
    m = result.metrics
    assert m["roc_auc"] >= 0.6 and m["periodic_roc_auc"] >= 0.6 and m["creation_roc_auc"] >= 0.6
    assert m["within_cutoff_roc_auc"] >= 0.6
    rates = result.buckets.set_index("bucket")["rate"]
    assert rates["hot"] > rates["warm"] > rates["cold"]
    assert all(g.passed for g in result.gates), [str(g) for g in result.gates]
    # When: 11 months label 7 and 30 days (the main horizon); 90 days after the test cutoffs is past the data, so
    # p_90d is left out, and said so.
    assert result.scorer.timing_days == (7, 30) and "p_90d left out: the history cannot label a 90-day horizon" in said
    assert m["p_7d_roc_auc"] >= 0.6 and m["p_30d_roc_auc"] == m["roc_auc"]


def test_the_fixed_chain_still_refuses_eleven_months_and_says_why(funnel):
    """splits.method: chain (90 days, monthly, 3 + 3 + 2 cutoffs, two embargoes) needs about 18 months."""
    with pytest.raises(NotEnoughHistory, match=r"[78] labelled cutoffs .* too few .* two embargo gaps of 90 days"):
        train(funnel, empty_interactions(), params_from_dict({"data": DATA, "splits": {"method": "chain"}}))


def test_too_little_history_is_refused_with_what_was_tried(funnel):
    """Two months of the funnel hold no recorded win at all: refused, naming the horizons and frequencies tried."""
    early = funnel.loc[funnel["created_at"] < funnel["created_at"].min() + pd.DateOffset(months=2)]
    with pytest.raises(NotEnoughHistory, match=r"too short: .*tried horizons of 90/60/30/14/7 days with MS and W-MON cutoffs"):
        train(early, empty_interactions(), params_from_dict({"data": DATA}))


def test_four_months_of_the_simulated_world_train_with_only_a_data_section():
    """Issue 18: a params file holding only a data section trains on four months of history."""
    from leadtemp.core.config import load_params
    from leadtemp.simulate import simulate

    sim = simulate(4000, seed=21, months=4)
    data = vars(load_params(Path(__file__).parents[1] / "params.yaml").data)
    result = train(sim.leads, sim.interactions, params_from_dict({"data": {
        k: list(v) if isinstance(v, tuple) else v for k, v in data.items()
        if k in ("categorical", "numeric", "excluded", "labels")}}))
    assert result.scorer.horizon_days < 90  # 90 days cannot be labelled and tested inside four months
    assert result.metrics["roc_auc"] >= 0.6
    assert all(g.passed for g in result.gates), [str(g) for g in result.gates]


def test_weekly_cutoffs_and_a_horizon_that_fits_the_history_give_a_model_that_ranks(funnel):
    params = params_from_dict({"data": DATA, "snapshots": {"horizon_days": 30, "frequency": "W-MON"}})
    assert params.snapshots.at_creation  # the default
    result = train(funnel, empty_interactions(), params)
    m = result.metrics
    assert m["roc_auc"] >= 0.6 and m["periodic_roc_auc"] >= 0.6 and m["creation_roc_auc"] >= 0.6
    rates = result.buckets.set_index("bucket")["rate"]
    assert rates["hot"] > rates["cold"]
    assert all(g.passed for g in result.gates), [str(g) for g in result.gates]


def _cadence(funnel, splits: dict | None = None, **snapshots):
    from leadtemp.core.cadence import resolve_cadence
    from leadtemp.core.snapshots import observed_until

    until = observed_until(funnel, empty_interactions(), None)
    params = params_from_dict({"data": DATA, "snapshots": snapshots, "splits": splits or {}})
    return resolve_cadence(funnel, until, params), until


def test_a_horizon_the_default_slices_cannot_hold_gets_smaller_slices_that_still_see_only_the_past(funnel):
    """Issue 18 item 3: a 60-day horizon on weekly cutoffs leaves no room for a 4-week test slice and 4-week blocks
    in 11 months (refused before); smaller ones fit, and each fold still learns only from labels observed before
    its block, the pool only from labels observed before the test."""
    cadence, until = _cadence(funnel, horizon_days=60, frequency="W-MON")
    splits = cadence.splits
    assert (cadence.test_cutoffs, cadence.fold_cutoffs) == (3, 2) and len(splits.test) == 3
    horizon = pd.Timedelta(days=60)
    assert (splits.pool_cutoffs + horizon <= splits.test.min()).all()
    assert splits.test.max() + horizon <= until
    for start, (fit, valid) in zip(splits.starts, splits.fold_masks(splits.pool_cutoffs)):
        assert fit.any() and valid.any()
        assert (splits.pool_cutoffs[fit] + horizon <= start).all() and (splits.pool_cutoffs[valid] >= start).all()


def test_explicit_slice_sizes_are_kept_and_a_horizon_too_long_names_one_that_fits(funnel):
    with pytest.raises(NotEnoughHistory, match=r"test slices down to 2 cutoffs .*, but snapshots.horizon_days: 60 fits"):
        _cadence(funnel, horizon_days=90)
    with pytest.raises(NotEnoughHistory):  # the sizes the user wrote are not shrunk
        _cadence(funnel, {"test_cutoffs": 4, "fold_cutoffs": 4}, horizon_days=60, frequency="W-MON")
