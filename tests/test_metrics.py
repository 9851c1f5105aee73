"""Metrics: AUC of unclipped scores, tie-aware lift / capture / ECE that do not depend on row order."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from leadtemp.adapters.plots import plot_gains, plot_reliability
from leadtemp.core.metrics import classification_metrics, expected_calibration_error, lift_at, ranking_metrics, top_half_capture

ORDERED = ("roc_auc", "pr_auc", "ece", "lift_at_10", "top_half_capture")


def _clipped_auc(y, score):
    """What classification_metrics computed before: ROC-AUC of the score clipped to [1e-12, 1 - 1e-12]."""
    return roc_auc_score(y, np.clip(score, 1e-12, 1 - 1e-12))


def _tied(n: int, seed: int):
    """Heavily tied scores (8 distinct values, like an isotonic calibrator's steps) and labels that follow them."""
    rng = np.random.default_rng(seed)
    levels = np.array([0.01, 0.03, 0.05, 0.08, 0.12, 0.2, 0.35, 0.6])
    p = levels[np.minimum(rng.geometric(0.35, n) - 1, len(levels) - 1)]
    return (rng.random(n) < p).astype(int), p


@pytest.mark.parametrize("n", [1000, 1001, 37])
@pytest.mark.parametrize("p", [0.0, 0.07, 0.5])
def test_a_constant_model_is_no_better_than_chance(n, p):
    rng = np.random.default_rng(n)
    y = (rng.random(n) < 0.2).astype(int)
    y[:2] = [1, 0]
    y = y[np.argsort(-y, kind="stable")]  # converters first: the order a stable sort used to reward
    m = classification_metrics(y, np.full(n, p))
    assert m["roc_auc"] == 0.5
    assert m["lift_at_10"] == 1.0
    assert m["top_half_capture"] == 0.5
    assert m["pr_auc"] == pytest.approx(y.mean())
    assert m["ece"] == pytest.approx(abs(p - y.mean()), abs=1e-12)


def test_a_tie_on_the_cut_counts_at_its_group_rate():
    # best lead converts; the next 4 are tied and 1 of them converts; 5 cold leads, 1 converts
    y = np.array([1, 0, 1, 0, 0, 0, 0, 1, 0, 0])
    p = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    # top 20% = 2 leads: the best one and, on average, a quarter of a converter from the tie
    assert lift_at(y, p, 0.2) == pytest.approx(((1 + 1 / 4) / 2) / (3 / 10))
    # top half = 5 leads: the best one and the whole tie
    assert top_half_capture(y, p) == pytest.approx(2 / 3)
    # odd n: the half is n/2 leads, the middle lead counts half
    assert top_half_capture([1, 1, 0], [0.9, 0.5, 0.1]) == pytest.approx(1.5 / 2)


def test_metrics_do_not_depend_on_row_order_under_ties():
    y, p = _tied(4000, seed=1)
    thermo = np.round(np.random.default_rng(2).gamma(0.6, 3, len(y)) * (1 + 2 * y))  # integers, mostly 0..5
    assert len(np.unique(p)) == 8 and np.mean(thermo == 0) > 0.3
    first, first_thermo = classification_metrics(y, p), ranking_metrics(y, thermo)
    rng = np.random.default_rng(3)
    orders = [rng.permutation(len(y)) for _ in range(5)] + [np.argsort(-y, kind="stable")]  # converters first
    for order in orders:
        m = classification_metrics(y[order], p[order])
        assert {k: m[k] for k in ORDERED} == {k: first[k] for k in ORDERED}  # exactly: ties never split by order
        assert m == pytest.approx(first, rel=1e-12)  # log loss and Brier: means, summed in another order
        assert ranking_metrics(y[order], thermo[order]) == first_thermo
    assert lift_at(y[::-1], p[::-1], 0.05) == lift_at(y, p, 0.05)


def test_auc_of_negative_margins_is_sklearns_on_the_margins():
    rng = np.random.default_rng(5)
    margin = rng.normal(-2.5, 1.0, 3000)  # raw LightGBM margins: almost all negative
    y = (rng.random(len(margin)) < 1 / (1 + np.exp(-margin))).astype(int)
    expected = roc_auc_score(y, margin)
    assert expected > 0.7
    assert abs(_clipped_auc(y, margin) - expected) > 0.1, "clipping ties the negative margins"
    m = ranking_metrics(y, margin)
    assert m["roc_auc"] == expected
    assert m["pr_auc"] == average_precision_score(y, margin)
    assert set(m) == {"roc_auc", "pr_auc", "lift_at_10", "top_half_capture", "positive_rate", "rows"}


def test_validation_auc_is_the_boosters_auc_on_its_margins():
    from leadtemp.modelling.booster import margin_roc_auc as _roc_auc

    rng = np.random.default_rng(6)
    frame = pd.DataFrame({"x": rng.normal(-2.0, 1.0, 2000)})
    frame["label"] = (rng.random(len(frame)) < 1 / (1 + np.exp(-frame["x"]))).astype(int)
    booster = SimpleNamespace(predict=lambda X, raw_score: X["x"].to_numpy())
    expected = roc_auc_score(frame["label"], frame["x"])
    assert abs(_clipped_auc(frame["label"], frame["x"]) - expected) > 0.1
    assert _roc_auc(booster, frame, SimpleNamespace(columns=["x"])) == expected


def test_thermometer_auc_is_sklearns_on_integer_scores():
    from leadtemp.workflows.quarterly import window_metrics

    rng = np.random.default_rng(8)
    y = (rng.random(3000) < 0.15).astype(int)
    thermo = rng.poisson(2 + 3 * y).astype(float)  # integer-ish, most of them above 1
    expected = roc_auc_score(y, thermo)
    assert abs(_clipped_auc(y, thermo) - expected) > 0.05, "clipping ties every score >= 1"
    assert ranking_metrics(y, thermo)["roc_auc"] == expected
    probability = np.clip(0.05 + 0.02 * thermo, 0, 1)
    frame = pd.DataFrame({"label": y, "probability": probability, "thermometer_score": thermo,
                          "bucket": np.where(probability > 0.2, "hot", "cold"),
                          "cutoff": pd.Timestamp("2025-01-01")})
    assert window_metrics(frame)["thermometer_roc_auc"] == expected


def test_training_reports_the_unclipped_thermometer_auc(small_result):
    test = small_result.test
    assert small_result.metrics["thermometer_roc_auc"] == roc_auc_score(test["label"], test["thermometer_score"])
    assert 0.5 < small_result.metrics["validation_roc_auc"] <= 1


def test_probability_metrics_of_a_non_probability_are_nan():
    y, score = np.array([0, 1, 0, 1, 1]), np.array([-3.0, 2.5, 0.2, 7.0, -1.0])
    m = classification_metrics(y, score)
    assert np.isnan(m["log_loss"]) and np.isnan(m["brier"]) and np.isnan(m["ece"])
    assert m["roc_auc"] == roc_auc_score(y, score)
    assert np.isfinite(classification_metrics(y, np.array([0.0, 1.0, 0.3, 0.9, 0.5]))["log_loss"])


def test_ece_of_perfectly_calibrated_groups_is_zero():
    # groups whose observed rate is exactly their probability; bin edges (every 100 rows) cut through them
    groups = [(0.05, 140), (0.1, 260), (0.2, 100), (0.4, 300), (0.7, 200)]
    p = np.concatenate([np.full(size, rate) for rate, size in groups])
    y = np.concatenate([np.arange(size) < round(rate * size) for rate, size in groups]).astype(int)  # converters first
    assert expected_calibration_error(y, p) == pytest.approx(0, abs=1e-12)
    order = np.random.default_rng(9).permutation(len(y))
    assert expected_calibration_error(y[order], p[order]) == pytest.approx(0, abs=1e-12)
    assert expected_calibration_error(y, p + 0.01) == pytest.approx(0.01, abs=1e-12)


def test_plots_accept_tied_scores(tmp_path):
    y, p = _tied(500, seed=4)
    assert plot_reliability(y, {"model": p}, tmp_path / "r.png").is_file()
    assert plot_gains(y, {"model": p, "constant": np.zeros(len(y))}, tmp_path / "g.png").is_file()


# -- what the MLflow pages show: titles, gains marks, drivers, metric names ---------------------------

def test_plot_titles_name_the_period_rows_leads_and_conversions(tmp_path):
    from PIL import Image

    from leadtemp.adapters.plots import reliability_figure, slice_caption

    test = pd.DataFrame({"lead_id": ["a", "a", "b", "c"], "label": [0, 1, 0, 1],
                         "cutoff": pd.to_datetime(["2024-11-01", "2025-01-30", "2024-12-01", "2025-01-01"])})
    about = slice_caption(test)
    assert about == "test 2024-11-01\u20262025-01-30, 4 rows of 3 leads, 2 conversions"
    assert slice_caption(test.drop(columns="cutoff").iloc[[0, 2, 3]]) == "test, 3 leads, 1 conversion"
    fig, ax = reliability_figure(test["label"].to_numpy(), {"model": np.array([0.1, 0.8, 0.2, 0.7])}, 2, about=about)
    assert ax.get_title() == "Reliability\n" + about
    y, p = _tied(500, seed=4)
    path = plot_gains(y, {"model": p}, tmp_path / "g.png", about=about)
    assert Image.open(path).info["Title"] == "Cumulative gains \u2014 " + about  # what MLflow's page shows


def test_gains_are_marked_at_10_and_20_percent_for_every_curve():
    from leadtemp.adapters.plots import gains_at, gains_figure

    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1] * 10)
    best = np.where(y == 1, 0.9, 0.1)               # every conversion first: 30 of 30 by the top 30%
    worst = -best                                   # every conversion last
    assert gains_at(y, best) == {0.1: pytest.approx(10 / 30), 0.2: pytest.approx(20 / 30)}
    assert gains_at(y, worst) == {0.1: pytest.approx(0.0), 0.2: pytest.approx(0.0)}
    assert gains_at(y, np.zeros(len(y))) == {0.1: pytest.approx(0.1), 0.2: pytest.approx(0.2)}  # ties: random order
    fig, ax = gains_figure(y, {"leadtemp": best, "thermometer": worst})
    marks = sorted(t.get_text() for t in ax.texts)
    assert marks == ["0% at 10%", "0% at 20%", "33% at 10%", "67% at 20%"]
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours["33% at 10%"] == ax.get_lines()[0].get_color() != colours["0% at 10%"]


def test_driver_plot_groups_features_as_the_reasons_do_in_their_words(small_result):
    from leadtemp.adapters.plots import DRIVER_AXIS, driver_figure, driver_table
    from leadtemp.core.reasons import feature_groups, group_name

    scorer = small_result.scorer
    table = driver_table(scorer, small_result.test, sample=300)
    groups = feature_groups(scorer.spec)
    assert sorted(table["group"]) == sorted(g.key for g in groups)      # one bar per reason group
    assert not any("_" in name for name in table["name"])               # no internal feature name is shown
    assert {"calls from them", "lead source", "company size"} <= set(table["name"])
    assert (table["effect_pp"] >= 0).all() and table["effect_pp"].is_monotonic_decreasing
    assert table["effect_pp"].iloc[0] > 0.5                             # the top group moves the chance by points
    # A group's name is the noun its reason uses: "no calls from them for 3 days".
    channel = next(c for c in scorer.spec.channels if c.type == "phone_call" and c.direction == "inbound")
    assert group_name(channel.name, scorer.spec, scorer.labels) == "calls from them"
    fig, ax = driver_figure(table, about="test x")
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == table["name"].iloc[0]   # largest on top
    assert ax.get_xlabel() == DRIVER_AXIS and "percentage points" in DRIVER_AXIS
    assert len({tuple(b.get_facecolor()) for b in ax.patches}) == 1                # one colour, no category code


def test_logged_metric_names_say_what_they_are():
    from leadtemp.adapters.metric_names import logged_metrics, metric_name

    renamed = {"top_half_capture": "conversions_in_top_half", "lift_at_10": "lift_in_top_10pct",
               "hot_rate_low": "hot_conversion_low95", "cold_rate_high": "cold_conversion_high95",
               "warm_rate": "warm_conversion", "hot_converted": "hot_conversions", "hot_share": "hot_share_of_leads",
               "raw_ece": "uncalibrated_ece", "creation_positive_rate": "new_lead_conversion_rate",
               "periodic_rows": "periodic_rows", "thermometer_lift_at_10": "thermometer_lift_in_top_10pct",
               "folds_auc_low": "folds_roc_auc_low95", "best_iteration": "booster_rounds", "roc_auc": "roc_auc"}
    assert {k: metric_name(k) for k in renamed} == renamed
    assert logged_metrics({"top_half_capture": 0.9, "ece": float("nan")}, "test_") == {"test_conversions_in_top_half": 0.9}


def test_settings_not_in_force_are_not_logged(params):
    from leadtemp.adapters.tracking import params_in_force

    shares = params_in_force(params.replace(buckets={"method": "share"}))
    assert "buckets.hot_share" in shares and "buckets.hot_probability" not in shares and "buckets.warm_probability" not in shares
    fixed = params_in_force(params.replace(buckets={"method": "probability"}))
    assert fixed["buckets.hot_probability"] == params.buckets.hot_probability and "buckets.hot_share" not in fixed
    assert not any(k.startswith("simulate.") for k in shares)
    assert "splits.fold_cutoffs" in shares and "splits.calibration_cutoffs" not in shares and "splits.test_fraction" not in shares
