"""Shared, seeded fixtures. Big data belongs in benchmarks; these stay small enough for 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leadtemp.core.config import load_params
from leadtemp.simulate import simulate

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
    from leadtemp.workflows.train import train

    return train(quality_sim.leads, quality_sim.interactions, params)
