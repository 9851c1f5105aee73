"""A short-history funnel shaped like the real B2B one of issue 12: 8,000 leads over 11 months, two
attributes, no interaction log, a median of ~14 days from creation to win, wins recorded only from
month 6. What the defaults do with it, and what makes `train` learn from it."""

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


def test_the_defaults_refuse_eleven_months_and_say_why(funnel):
    """90-day horizon, monthly cutoffs, 3 + 3 + 2 cutoffs per slice and two embargoes of one horizon need
    about 18 months; 11 months leave 7 or 8 labelled cutoffs. Creation snapshots do not change that: the slices
    are cut on the periodic cutoffs."""
    for snapshots in ({}, {"at_creation": False}):
        with pytest.raises(NotEnoughHistory, match=r"[78] labelled cutoffs .* too few .* two embargo gaps of 90 days"):
            train(funnel, empty_interactions(), params_from_dict({"data": DATA, "snapshots": snapshots}))


def test_weekly_cutoffs_and_a_horizon_that_fits_the_history_give_a_model_that_ranks(funnel):
    params = params_from_dict({"data": DATA, "snapshots": {"horizon_days": 30, "frequency": "W-MON"}})
    assert params.snapshots.at_creation  # the default
    result = train(funnel, empty_interactions(), params)
    m = result.metrics
    assert m["roc_auc"] >= 0.6 and m["periodic_roc_auc"] >= 0.6 and m["creation_roc_auc"] >= 0.6
    rates = result.buckets.set_index("bucket")["rate"]
    assert rates["hot"] > rates["cold"]
    assert all(g.passed for g in result.gates), [str(g) for g in result.gates]
