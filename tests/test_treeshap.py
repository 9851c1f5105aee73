"""Fast exact reasons: the table-driven TreeSHAP equals LightGBM's pred_contrib (and so shap.TreeExplainer)."""

from __future__ import annotations

import dataclasses

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from leadtemp.core.reasons import group_contributions
from leadtemp.core.treeshap import ExactContributions


def _matrix(features: pd.DataFrame, columns: list[str]) -> np.ndarray:
    return features[columns].apply(
        lambda c: c.cat.codes.replace(-1, np.nan) if isinstance(c.dtype, pd.CategoricalDtype) else c
    ).to_numpy(dtype=float)


def _top3(grouped: np.ndarray) -> np.ndarray:
    return np.argsort(-np.abs(grouped), axis=1, kind="stable")[:, :3]


def test_equals_pred_contrib_and_gives_the_same_top_3_reasons(small_result):
    scorer = small_result.scorer
    X = _matrix(small_result.test, scorer.spec.columns)
    assert np.isnan(X).any(), "the test slice should contain missing values (days since last, unknown categories)"
    fast = ExactContributions(scorer.booster)
    got, want = fast(X), scorer.booster.predict(X, pred_contrib=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert fast.last_fallbacks == 0
    a = group_contributions(got, scorer.spec).to_numpy()
    b = group_contributions(want, scorer.spec).to_numpy()
    assert (_top3(a) == _top3(b)).all()


@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_every_split_rule_numeric_categorical_missing_and_zero(zero_as_missing):
    rng = np.random.default_rng(1)
    n = 4000
    X = pd.DataFrame({
        "x": rng.normal(size=n), "zeros": rng.choice([0.0, 1.0, 2.0, np.nan], n),
        "cat": pd.Categorical(rng.choice(list("abcdefghijklmnopqrstuvwxyz") + [None], n)),
        "wide": pd.Categorical(rng.integers(0, 70, n)),  # category codes beyond one 32-bit word
    })
    X.loc[rng.random(n) < 0.1, "x"] = np.nan
    logit = X["x"].fillna(1) + X["zeros"].fillna(-1) + X["cat"].isin(list("aeiou")) * 1.5 + (X["wide"].cat.codes > 50)
    y = (logit + rng.normal(size=n) > 1).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 31, "min_data_in_leaf": 5, "verbosity": -1,
                         "zero_as_missing": zero_as_missing, "max_cat_to_onehot": 4, "seed": 1},
                        lgb.Dataset(X, y), 60)
    M = _matrix(X, list(X.columns))
    M[::13, 2] = 200.0   # a category code beyond every split's bitset (a category LightGBM never saw)
    M[::17, 3] = 64.5    # a fractional code: LightGBM truncates it
    fast = ExactContributions(booster)
    np.testing.assert_allclose(fast(M), booster.predict(M, pred_contrib=True), rtol=0, atol=1e-9)
    assert fast.last_fallbacks == 0


def test_a_batch_with_a_disagreeing_leaf_is_computed_by_lightgbm_itself(small_result):
    """The guard: break one threshold in the compiled copy; the batch falls back and stays exact."""
    scorer = small_result.scorer
    X = _matrix(small_result.test, scorer.spec.columns)[:500]
    fast = ExactContributions(scorer.booster)
    compiled = fast.compiled
    numeric = np.argwhere((compiled.feature >= 0) & ~compiled.categorical)
    t, j = numeric[0]
    threshold = compiled.threshold.copy()
    column = X[:, compiled.feature[t, j]]
    threshold[t, j] = np.nanmedian(column)  # now about half the leads go the other way at this node
    fast.compiled = dataclasses.replace(compiled, threshold=threshold)
    got = fast(X)
    assert fast.last_fallbacks == len(X)
    np.testing.assert_allclose(got, scorer.booster.predict(X, pred_contrib=True), rtol=0, atol=1e-9)


def test_scorer_uses_the_fast_path_for_large_batches_with_the_same_reasons(small_result):
    from leadtemp.modelling.scorer import FAST_REASONS_MIN_ROWS

    scorer = small_result.scorer
    test = small_result.test
    rows = pd.concat([test] * (FAST_REASONS_MIN_ROWS // len(test) + 2), ignore_index=True)  # a batch past the threshold
    assert len(rows) > FAST_REASONS_MIN_ROWS
    got = scorer.contributions(rows)
    assert scorer._fast is not None and scorer._fast.last_fallbacks == 0
    want = scorer.booster.predict(rows[scorer.spec.columns], pred_contrib=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    a = group_contributions(got, scorer.spec).to_numpy()
    b = group_contributions(want, scorer.spec).to_numpy()
    assert (_top3(a) == _top3(b)).all()


def test_once_compiled_every_batch_uses_the_tables_with_the_same_reasons(small_result):
    """What `leadtemp serve` does at start: a small batch then skips pred_contrib, and its reasons stay the same."""
    scorer = dataclasses.replace(small_result.scorer)  # a copy: the session's scorer keeps its own path
    rows = small_result.test.head(200)
    want = scorer.contributions(rows)
    assert scorer._fast is None  # below the threshold, uncompiled: LightGBM's own
    scorer.compile_reasons()
    got = scorer.contributions(rows)
    assert scorer._fast.last_fallbacks == 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert (_top3(group_contributions(got, scorer.spec).to_numpy())
            == _top3(group_contributions(want, scorer.spec).to_numpy())).all()


def test_scoring_predicts_from_one_matrix_only_when_its_codes_are_the_boosters(small_result):
    """score_rows hands LightGBM the same float matrix as the reasons when the spec's categories are the booster's
    own (the same margins as from the frame); otherwise LightGBM recodes the frame itself."""
    scorer = small_result.scorer
    features = small_result.test.rename(columns={"cutoff": "as_of"})
    assert scorer._matrix(features) is not None
    np.testing.assert_array_equal(scorer.score_rows(features, reasons=False)["margin"].to_numpy(),
                                  scorer.margin(features))
    column, categories = next(iter(scorer.spec.categorical.items()))
    other = dataclasses.replace(scorer, spec=dataclasses.replace(
        scorer.spec, categorical={**scorer.spec.categorical, column: tuple(reversed(categories))}))
    assert other._matrix(features) is None
    np.testing.assert_array_equal(other.score_rows(features, reasons=False)["margin"].to_numpy(),
                                  scorer.margin(features))
