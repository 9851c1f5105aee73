"""Model behaviour: determinism, exact explanations, calibration, buckets, quality vs the oracle."""

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadtemp.core.reasons import MINUS, PLUS, _Row, describe_group, group_contributions, top_reasons
from leadtemp.workflows.train import train


def test_same_data_params_and_seed_give_identical_predictions(small_sim, small_result, params):
    again = train(small_sim.leads, small_sim.interactions, params)
    pd.testing.assert_frame_equal(small_result.test, again.test)
    assert small_result.scorer.booster.model_to_string() == again.scorer.booster.model_to_string()


def test_contributions_add_up_to_the_raw_margin(small_result):
    scorer, test = small_result.scorer, small_result.test
    contrib = scorer.contributions(test)
    np.testing.assert_allclose(contrib.sum(axis=1), scorer.margin(test), atol=1e-6)


def test_contributions_are_exactly_shap_treeexplainer(small_result):
    import shap

    scorer, rows = small_result.scorer, small_result.test.head(300)
    ours = scorer.contributions(rows)
    theirs = shap.TreeExplainer(scorer.booster).shap_values(rows[scorer.spec.columns])
    np.testing.assert_allclose(ours[:, :-1], np.asarray(theirs), atol=1e-9)


def test_reasons_name_the_groups_with_the_largest_contributions(small_sim, small_result):
    scorer = small_result.scorer
    as_of = small_result.splits.test.max()
    features = scorer.features(small_sim.leads, small_sim.interactions, as_of)
    scored = scorer.score_features(features).set_index("lead_id")
    grouped = group_contributions(scorer.contributions(features), scorer.spec)
    for i in range(len(features)):
        row = grouped.iloc[i]
        top = row.abs().sort_values(ascending=False, kind="stable").index[:3]
        expected = [f"{describe_group(k, features.iloc[i], scorer.spec, scorer.labels)} "
                    f"{PLUS if row[k] > 0 else MINUS}" for k in top]
        got = scored.loc[features.loc[i, "lead_id"], ["reason_1", "reason_2", "reason_3"]].tolist()
        assert got == expected


def test_shared_wording_equals_wording_each_lead_on_its_own(small_sim, small_result):
    """Reasons are worded once per distinct value and shared; the text must be what each lead alone gets.

    Random contributions (a fifth of them zero) put every group, both signs and empty slots in the
    top 3, over leads with missing values, fractional days and categories.
    """
    scorer = small_result.scorer
    features = scorer.features(small_sim.leads, small_sim.interactions, small_result.splits.test.max())
    keys = list(group_contributions(scorer.contributions(features.head(1)), scorer.spec).columns)
    rng = np.random.default_rng(7)
    values = rng.normal(size=(len(features), len(keys))) * (rng.random((len(features), len(keys))) > 0.2)
    grouped = pd.DataFrame(values, columns=keys)
    shared = top_reasons(features, grouped, scorer.spec, scorer.labels)
    columns = {c: features[c].to_numpy() for c in features.columns}
    assert len(features) > 1000 and features.isna().any().any()
    seen = set()
    for i in range(len(features)):
        top = np.argsort(-np.abs(values[i]), kind="stable")[:3]
        expected = [f"{describe_group(keys[j], _Row(columns, i), scorer.spec, scorer.labels)} "
                    f"{PLUS if values[i, j] > 0 else MINUS}" if values[i, j] != 0 else "" for j in top]
        assert [column[i] for column in shared] == expected, i
        seen.update(keys[j] for j in top)
    assert seen == set(keys)


def test_a_lead_scores_the_same_alone_or_in_a_batch(small_sim, small_result):
    scorer = small_result.scorer
    as_of = small_result.splits.test.max()
    batch = scorer.score(small_sim.leads, small_sim.interactions, as_of).set_index("lead_id")
    for lead_id in batch.index[[0, len(batch) // 2, -1]]:
        alone = scorer.score(small_sim.leads[small_sim.leads["lead_id"] == lead_id], small_sim.interactions, as_of).iloc[0]
        assert alone["probability"] == batch.loc[lead_id, "probability"]
        assert alone["bucket"] == batch.loc[lead_id, "bucket"]
        assert alone["reason_1"] == batch.loc[lead_id, "reason_1"]


def test_recent_inbound_calls_raise_the_chance(small_sim, small_result):
    """A known change moves the prediction the expected way: leads that just phoned us twice."""
    scorer = small_result.scorer
    as_of = small_result.splits.test.max()
    before = scorer.score(small_sim.leads, small_sim.interactions, as_of, reasons=False).set_index("lead_id")
    quiet = before.index[before["bucket"] == "cold"]
    calls = pd.DataFrame({"lead_id": np.repeat(quiet, 2), "timestamp": as_of - pd.Timedelta(hours=20),
                          "type": "phone_call", "direction": "inbound", "value": np.nan})
    after = scorer.score(small_sim.leads, pd.concat([small_sim.interactions, calls]), as_of, reasons=False).set_index("lead_id")
    change = after.loc[quiet, "probability"] - before.loc[quiet, "probability"]
    assert change.median() > 0 and (change > 0).mean() > 0.9


def test_calibration_lowers_ece_and_buckets_are_ordered(quality_result):
    m = quality_result.metrics
    assert m["ece"] < m["raw_ece"]
    rates = quality_result.buckets.set_index("bucket")["rate"]
    assert rates["hot"] > rates["warm"] > rates["cold"]


def test_model_is_close_to_the_oracle_and_beats_the_thermometer(quality_sim, quality_result):
    # The simulator's oracle is known at the monthly cutoffs: the periodic snapshots (not the creation ones).
    periodic = quality_result.test.loc[quality_result.test["snapshot"] == "periodic"]
    test = periodic.merge(quality_sim.truth, on=["lead_id", "cutoff"], how="left", validate="one_to_one")
    assert test["p_convert"].notna().all(), "every test snapshot has its oracle probability"
    oracle = roc_auc_score(test["label"], test["p_convert"])
    model = roc_auc_score(test["label"], test["probability"])
    assert model >= oracle - 0.02, f"model AUC {model:.4f} vs oracle {oracle:.4f}"
    assert model > quality_result.metrics["thermometer_roc_auc"] + 0.05


def test_the_trend_of_a_lead_that_never_contacted_us_is_not_a_rise(small_sim, small_result):
    """inbound_trend smooths both counts by 0.5, so no inbound contact in either window reads 30/7 = 4.3x: worded as
    what it is. A lead with as many contacts in the last 7 days as in the 30 before did pick up (4.3x the rate)."""
    scorer = small_result.scorer
    features = scorer.features(small_sim.leads, small_sim.interactions, small_result.splits.test.max())
    words = [describe_group("trend", features.iloc[i], scorer.spec, scorer.labels) for i in range(len(features))]
    silent = (features["inbound_days_since_last"].isna() | (features["inbound_days_since_last"] >= 37)).to_numpy()
    assert silent.any() and (~silent).any()
    assert {w for w, s in zip(words, silent) if s} == {"no contact from them in the last 37 days"}
    assert not any("no contact from them in the last" in w for w, s in zip(words, silent) if not s)
    equal = ~silent & np.isclose(features["inbound_trend"], np.log(30 / 7))
    assert {w for w, e in zip(words, equal) if e} <= {"contact from them is picking up: 4.3x their usual rate this week"}
    # the batch reasons word it the same way as one lead's explanation
    scored = scorer.score_features(features).set_index("lead_id")
    for i in np.flatnonzero(silent)[:50]:
        reasons = " ".join(str(scored.iloc[i][f"reason_{k}"]) for k in (1, 2, 3))
        assert "picking up" not in reasons
