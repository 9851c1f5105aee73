"""Refuse to ship nonsense: ship gates of a first training, reasons of small models, models without interactions."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.cli import app
from leadtemp.core.metrics import auc_interval, bucket_table, classification_metrics
from leadtemp.core.reasons import top_reasons
from leadtemp.core.schema import empty_interactions
from leadtemp.workflows.train import ship_gates, train

runner = CliRunner()


def _test_slice(y, margin, bucket, thermometer=None) -> pd.DataFrame:
    frame = pd.DataFrame({"label": y, "margin": margin, "bucket": bucket})
    if thermometer is not None:
        frame["thermometer_score"] = thermometer
    return frame


def _gates(frame: pd.DataFrame) -> dict[str, bool]:
    metrics = classification_metrics(frame["label"], 1 / (1 + np.exp(-frame["margin"])))
    if "thermometer_score" in frame.columns:
        metrics["thermometer_roc_auc"] = classification_metrics(frame["label"], frame["thermometer_score"])["roc_auc"]
    return {g.name: g.passed for g in ship_gates(frame, metrics, bucket_table(frame["label"], frame["bucket"]))}


def test_a_model_that_ranks_passes_every_gate():
    rng = np.random.default_rng(0)
    margin = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(2 * margin - 2)))).astype(int)
    bucket = np.where(margin > 1.3, "hot", np.where(margin > 0, "warm", "cold"))
    gates = _gates(_test_slice(y, margin, bucket, thermometer=rng.integers(0, 3, 4000)))
    assert gates == {"not a constant model": True, "ranks better than chance": True, "beats the thermometer": True,
                     "buckets separate": True}


def test_a_constant_model_fails_and_so_does_chance():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.1).astype(int)
    constant = _gates(_test_slice(y, np.zeros(3000), np.array(["hot"] * 3000)))
    assert not constant["not a constant model"] and not constant["ranks better than chance"]
    assert not constant["buckets separate"]  # warm and cold are empty
    noise = _gates(_test_slice(y, rng.normal(size=3000), rng.choice(["hot", "warm", "cold"], 3000)))
    assert noise["not a constant model"] and not noise["ranks better than chance"]


def test_losing_to_the_thermometer_fails_and_a_flat_thermometer_is_not_a_comparison():
    rng = np.random.default_rng(2)
    signal = rng.normal(size=3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(2 * signal - 2)))).astype(int)
    weak = signal + rng.normal(scale=3, size=3000)
    bucket = np.where(weak > 1, "hot", np.where(weak > -1, "warm", "cold"))
    assert not _gates(_test_slice(y, weak, bucket, thermometer=signal))["beats the thermometer"]
    assert "beats the thermometer" not in _gates(_test_slice(y, weak, bucket, thermometer=np.zeros(3000)))


def test_auc_interval_narrows_with_more_rows_and_holds_its_estimate():
    small, large = auc_interval(0.7, 30, 300), auc_interval(0.7, 3000, 30000)
    assert small[0] < large[0] < 0.7 < large[1] < small[1]
    assert np.isnan(auc_interval(0.7, 0, 10)[0])


def test_a_model_with_fewer_groups_than_reasons_leaves_empty_slots():
    from leadtemp.core.features import FeatureSpec

    spec = FeatureSpec(channels=(), windows_days=(7,), half_life_days=14.0, just_active_days=7,
                       categorical={"a": ("x", "y")}, numeric=("b",), mode="labels", timed=False)
    features = pd.DataFrame({"a": pd.Categorical(["x", "y"], categories=["x", "y"]), "b": [1.0, 2.0]})
    grouped = pd.DataFrame({"a": [0.5, -0.2], "b": [0.1, 0.0]})
    words = top_reasons(features, grouped, spec, {}, k=3)
    assert len(words) == 3
    assert words[2].tolist() == ["", ""] and words[1].tolist()[1] == ""  # b has no effect on the second lead
    assert words[0][0].endswith("(+)") and words[0][1].endswith("(−)")


@pytest.fixture(scope="module")
def noise_world():
    """Leads whose conversion owes nothing to what is known about them: every lead converts after an
    exponential delay (memoryless, so not even the lead's age tells anything) and the events are random."""
    from leadtemp.simulate import simulate

    sim = simulate(1500, seed=8, months=24)
    rng = np.random.default_rng(8)
    leads = sim.leads.copy()
    converted = leads["created_at"] + pd.to_timedelta(rng.exponential(600, len(leads)), unit="D")
    leads["converted_at"] = converted.where(converted <= sim.leads["created_at"].max())  # not yet happened: open
    for column in ("source", "sector", "company_size", "country", "potential", "need", "want", "funds", "authority"):
        leads[column] = rng.permutation(leads[column].to_numpy())
    leads["past_purchases"] = rng.permutation(leads["past_purchases"].to_numpy())
    events = sim.interactions.copy()
    events["lead_id"] = rng.choice(leads["lead_id"].to_numpy(), len(events))
    return leads, events


@pytest.mark.slow
def test_a_model_of_noise_is_registered_but_never_champion(noise_world, params, tmp_path):
    leads, events = noise_world
    leads.to_parquet(tmp_path / "leads.parquet")
    events.to_parquet(tmp_path / "events.parquet")
    result = runner.invoke(app, ["train", "--params", str(ROOT / "params.yaml"), "--leads", str(tmp_path / "leads.parquet"),
                                 "--interactions", str(tmp_path / "events.parquet")], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "FAIL ranks better than chance" in result.output and "not made champion" in result.output
    assert "periodic cutoffs ROC-AUC" in result.output and "first morning after creation ROC-AUC" in result.output
    from mlflow import MlflowClient

    model = MlflowClient().get_registered_model("leadtemp")
    assert "champion" not in model.aliases
    scored = runner.invoke(app, ["score", "--params", str(ROOT / "params.yaml"), "--as-of", "2024-06-01",
                                 "--out", str(tmp_path / "s.csv"), "--leads", str(tmp_path / "leads.parquet"),
                                 "--interactions", str(tmp_path / "events.parquet")])
    assert scored.exit_code == 2, scored.output  # no champion to score with, and the line says what to give instead
    assert scored.output.strip().startswith("error: no champion yet for registered model 'leadtemp'")
    assert "give --model models/v1 (version 1, the newest)" in scored.output


def test_a_model_trained_without_an_interaction_log_scores_without_one(small_sim, params, tmp_path):
    no_log = params.replace(data={"interactions": None})
    result = train(small_sim.leads, empty_interactions(), no_log)
    assert result.scorer.spec.channels == ()
    from leadtemp.adapters.sources import Source, Target
    from leadtemp.api import score_sources

    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    out = tmp_path / "scores.csv"
    done = score_sources(result.scorer, no_log, pd.Timestamp("2024-06-01"), Source.file(tmp_path / "leads.parquet"), None,
                         Target(path=out), echo=lambda m: None)
    assert done.scored > 0 and pd.read_csv(out)["reason_1"].notna().all()


def test_the_top_probability_rests_on_enough_calibration_leads():
    """A handful of converted leads at the very top must not make every higher-scored lead a 99."""
    from leadtemp.modelling.calibration import MIN_END_BLOCK, fit_calibrator

    rng = np.random.default_rng(4)
    margin = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(margin - 1)))).astype(float)
    top3 = np.argsort(-margin)[:3]
    y[top3] = 1.0  # the three highest margins all converted: isotonic alone gives them 1.0
    calibrator = fit_calibrator(margin, y, "isotonic")
    highest = calibrator(np.array([margin.max() + 10]))[0]
    top = np.argsort(-margin)
    # The top step is the pooled rate of at least MIN_END_BLOCK of the highest-scored leads, not 1.0.
    assert highest < 0.99
    assert any(abs(highest - y[top[:n]].mean()) < 1e-12 for n in range(MIN_END_BLOCK, 400))
    assert np.all(np.diff(calibrator(np.sort(margin))) >= 0)  # still monotone


@pytest.mark.parametrize("method", ["sigmoid", "raw"])
def test_a_sigmoid_promises_no_more_at_the_top_than_the_best_calibration_leads_delivered(method):
    """Platt scaling (or the booster's own probability) keeps rising past the last calibration lead: a lead there
    was shown 0.9999 while the best-scored calibration leads converted at about half that. Capped, the top is the
    upper end of the 95% interval of the top block's conversion rate, and leads above it keep their order."""
    from leadtemp.core.metrics import wilson_interval
    from leadtemp.modelling.calibration import MIN_END_BLOCK, Calibrator, fit_calibrator, with_ceiling
    from leadtemp.modelling.scorer import rank_order

    rng = np.random.default_rng(7)
    margin = rng.normal(size=5000) * 1.5
    y = (rng.random(5000) < np.minimum(0.5, 1 / (1 + np.exp(-(margin - 1))))).astype(float)  # saturates at 50%
    fitted = fit_calibrator(margin, y, "sigmoid") if method == "sigmoid" else Calibrator("sigmoid")
    far = np.array([margin.max() + 1, margin.max() + 5, margin.max() + 20])
    assert fitted(far).max() > 0.9  # the defect: an uncapped sigmoid promises near-certainty out there
    capped = with_ceiling(fitted, margin, y)
    top = np.argsort(-margin)[:MIN_END_BLOCK]
    low, high = wilson_interval(int(y[top].sum()), MIN_END_BLOCK)
    assert capped.ceiling == pytest.approx(high) and high < 0.75
    assert capped(far).max() <= high and capped.bounds()[1] == pytest.approx(high)
    inside = np.sort(margin)[: len(margin) // 2]  # below the top, the cap changes nothing
    assert np.array_equal(capped(inside), fitted(inside))
    scored = pd.DataFrame({"lead_id": ["a", "b", "c"], "probability": capped(far), "margin": far})
    assert list(rank_order(scored)) == [3, 2, 1], "tied at the ceiling, the higher margin ranks first"


def test_an_isotonic_top_step_is_left_alone_and_the_ceiling_survives_saving(tmp_path):
    from leadtemp.modelling.calibration import Calibrator, fit_calibrator, with_ceiling

    rng = np.random.default_rng(3)
    margin = rng.normal(size=3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(margin - 1)))).astype(float)
    isotonic = fit_calibrator(margin, y, "isotonic")
    capped = with_ceiling(isotonic, margin, y)
    grid = np.linspace(margin.min() - 1, margin.max() + 1, 500)
    assert np.array_equal(capped(grid), isotonic(grid)), "the top step is a pooled rate of enough leads already"
    assert Calibrator(**capped.to_dict()) == capped
    assert "ceiling" not in Calibrator("sigmoid").to_dict(), "a model saved before ceilings keeps its fingerprint"


def test_the_share_of_a_columns_variation_between_periods_tells_context_from_lead_attributes():
    """Context (issue 12, point 4): a macro rate or a campaign code is fixed by the period; an attribute of the lead,
    or a rare flag that is 'no' in every month, is not; with fewer than 3 periods nothing can be said."""
    from leadtemp.core.checks import context_columns, period_share

    rng = np.random.default_rng(2)
    period = np.repeat([f"2024-{m:02d}" for m in range(1, 9)], 300)
    level = dict(zip(np.unique(period), rng.normal(size=8)))
    frame = pd.DataFrame({
        "euribor": [level[p] for p in period] + rng.normal(scale=0.02, size=len(period)),
        "age": rng.normal(40, 10, len(period)),
        "month": [p[-2:] for p in period],
        "default": np.where(rng.random(len(period)) < 0.03, "yes", "no"),
        "code": [int(p[-2:]) for p in period],  # a month coded as a number, declared categorical
    })
    assert period_share(frame["euribor"], period) > 0.99 and period_share(frame["age"], period) < 0.05
    assert period_share(frame["month"], period) == pytest.approx(1.0) and period_share(frame["default"], period) < 0.05
    assert context_columns(frame, list(frame.columns), period, categorical=["month", "default", "code"]) == {
        "euribor": pytest.approx(period_share(frame["euribor"], period), abs=1e-4), "month": 1.0, "code": 1.0}
    assert np.isnan(period_share(frame["euribor"][:600], period[:600]))  # two periods only


def test_a_timed_label_table_trained_with_the_defaults_folds_by_time_and_saves_a_concrete_horizon(tmp_path):
    """Defaults only (horizon_days: auto): a label table has no horizon, so the saved model keeps 90 days (its
    "current for" window) and loads again; with time, the rolling-origin folds run and are reported."""
    from leadtemp.core.config import params_from_dict
    from leadtemp.core.schema import empty_interactions
    from leadtemp.modelling.scorer import LeadScorer
    from leadtemp.workflows.train import train

    rng = np.random.default_rng(4)
    n = 6000
    x = rng.normal(size=n)
    source = rng.choice(["web", "fair", "referral"], size=n)
    p = 1 / (1 + np.exp(-(-2.2 + 1.2 * x + (source == "referral"))))
    leads = pd.DataFrame({"lead_id": [f"L{i}" for i in range(n)],
                          "created_at": pd.Timestamp("2023-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 700, n)), unit="D"),
                          "converted_at": pd.NaT, "label": (rng.random(n) < p).astype(float), "x": x, "source": source})
    month = leads["created_at"].dt.to_period("M")
    walk = pd.Series(rng.normal(size=month.nunique()).cumsum(), index=month.unique())
    leads["rate_index"] = month.map(walk).to_numpy() + rng.normal(scale=0.01, size=n)  # a macro rate of the month
    leads["campaign"] = "C" + month.dt.quarter.astype(str).to_numpy()                   # a campaign per quarter
    params = params_from_dict({"data": {"interactions": None, "columns": {"converted_at": None, "label": "label"},
                                        "categorical": ["source", "campaign"], "numeric": ["x", "rate_index"]}})
    result = train(leads, empty_interactions(), params)
    assert result.metrics["folds"] == 3 and result.metrics["folds_roc_auc"] > 0.7
    assert result.metrics["within_month_roc_auc"] > 0.7
    [context] = [w for w in result.warnings if w.startswith("columns that describe the month")]
    assert "'rate_index' (100%)" in context and "'campaign' (100%)" in context
    assert "'x'" not in context and "'source'" not in context
    loaded = LeadScorer.load(result.scorer.save(tmp_path / "scorer"))
    assert loaded.horizon_days == result.scorer.horizon_days == 90


def test_a_category_first_seen_in_the_newest_pool_rows_is_learned_in_a_label_table():
    """The final booster learns from the whole pool before the test, so its categories come from there too: a lead
    source that appears only in the newest pool rows (a renamed source, a new campaign) is a category, not missing."""
    from leadtemp.core.config import params_from_dict

    rng = np.random.default_rng(5)
    n = 5000
    created = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 600, n)), unit="D")
    source = rng.choice(["web", "fair"], size=n).astype(object)
    new = (np.arange(n) >= int(0.65 * n))
    source[new & (rng.random(n) < 0.3)] = "partner webinar"     # only from the newest 35% of rows (pool and test)
    label = (rng.random(n) < np.where(source == "partner webinar", 0.8, 0.1)).astype(float)
    leads = pd.DataFrame({"lead_id": [f"L{i}" for i in range(n)], "created_at": created, "converted_at": pd.NaT,
                          "label": label, "source": source, "x": rng.normal(size=n)})
    params = params_from_dict({"data": {"interactions": None, "columns": {"converted_at": None, "label": "label"},
                                        "categorical": ["source"], "numeric": ["x"]}})
    result = train(leads, empty_interactions(), params)
    assert "partner webinar" in result.scorer.spec.categorical["source"]
    test = result.test
    partner = (test["lead_id"].map(leads.set_index("lead_id")["source"]) == "partner webinar").to_numpy()
    assert partner.any() and test.loc[partner, "probability"].mean() > 3 * test.loc[~partner, "probability"].mean()
