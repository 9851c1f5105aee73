"""Shared, seeded fixtures. Big data belongs in benchmarks; these stay small enough for 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

# LightGBM's OpenMP threads spin while waiting by default: on a shared 2-core machine one training
# took 402 s instead of 13 s (docs/benchmarks.md). Set before lightgbm is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from leadtemp.core.config import load_params  # noqa: E402
from leadtemp.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch):
    """Every test gets its own MLflow store and working directory; nothing touches the repo."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def small_sim():
    """2,000 leads over 24 months: enough for every time slice, fast to train."""
    return simulate(2000, seed=3, months=24)


@pytest.fixture(scope="session")
def small_result(small_sim, params):
    from leadtemp.workflows.train import train

    return train(small_sim.leads, small_sim.interactions, params)


@pytest.fixture(scope="session")
def quality_sim():
    """A larger world for statistical properties (calibration, oracle comparison)."""
    return simulate(int(os.environ.get("LEADTEMP_TEST_LEADS", 40000)), seed=11)


@pytest.fixture(scope="session")
def quality_result(quality_sim, params):
    """The main model's statistical properties; the p_<h>d horizons (a booster each, about double the training time)
    are tested on smaller worlds in test_when.py."""
    from leadtemp.workflows.train import train

    return train(quality_sim.leads, quality_sim.interactions, params.replace(when={"horizons_days": ()}))


# -- tiers ------------------------------------------------------------------------------------------
# unit: one function on small frames; model: a trained model's behaviour; e2e: commands end to end;
# external: the third-party datasets in ../shared; services: PostgreSQL or Spark. `slow` marks what
# trains on a large simulation, trains a model for a whole module, or starts a service:
# `pytest -m "not slow"` is the fast loop, `pytest` the whole suite (CI).
TIER_OF_MODULE = {
    "test_config": "unit", "test_features": "unit", "test_schema": "unit", "test_snapshots": "unit",
    "test_leakage": "unit", "test_metrics": "unit", "test_treeshap": "model", "test_model": "model",
    "test_cli": "e2e", "test_batch": "e2e", "test_quarterly": "e2e", "test_own_data": "e2e",
    "test_hostile_inputs": "e2e", "test_fresh_clone": "e2e", "test_paths": "e2e", "test_model_safety": "e2e",
    "test_trust": "model", "test_types": "unit", "test_buckets": "model", "test_vocabulary": "model",
    "test_reason_codes": "model", "test_serving": "e2e", "test_report": "e2e", "test_cards": "e2e",
    "test_notebooks": "e2e", "test_tour": "e2e", "test_changes": "e2e", "test_calls": "e2e", "test_mlflow_ui": "e2e", "test_when": "model",
    "test_stages": "model",
}
SLOW_FIXTURES = {"quality_sim", "quality_result", "shifted", "champion", "world", "trained", "in_home", "hostile_home",
                  "vocab_trained"}
EXTERNAL_NAMES = {"XEDU"}  # tests that read ../shared/data/external name these
SLOW_NAMES = {"BANK", "XEDU"}  # tests that train on a real dataset (bank marketing ships in data/external/)


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module in TIER_OF_MODULE:
            item.add_marker(getattr(pytest.mark, TIER_OF_MODULE[module]))
        function = getattr(item, "function", None)
        names = set(function.__code__.co_names) if function is not None else set()
        if "services" in item.keywords or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        if names & SLOW_NAMES:
            item.add_marker(pytest.mark.slow)
        if names & EXTERNAL_NAMES:
            item.add_marker(pytest.mark.external)
            if not SHARED.is_dir() and not os.environ.get("CI"):
                item.add_marker(pytest.mark.skip(reason=f"needs the third-party datasets in {SHARED / 'data' / 'external'} "
                                                        "(CI has them; a test that needs them fails there when missing)"))
