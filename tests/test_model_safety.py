"""Model safety: damaged model files are refused before LightGBM reads them, identifier-like columns never
become features, a resume reuses only what is unchanged, and scoring warns about what the model never saw."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from leadtemp.core.errors import ConfigError
from leadtemp.modelling.scorer import LeadScorer

AS_OF = pd.Timestamp("2024-10-01")


@pytest.fixture(scope="module")
def scorer(small_result):
    return dataclasses.replace(small_result.scorer, meta={**small_result.scorer.meta, "model_version": "3"})


@pytest.fixture(scope="module")
def exported(scorer, tmp_path_factory) -> Path:
    """The scorer as an MLflow model folder, as `leadtemp train` exports it to models/vN."""
    import mlflow

    from leadtemp.adapters.pyfunc import pyfunc_arguments

    folder = tmp_path_factory.mktemp("export")
    mlflow.pyfunc.save_model(str(folder / "model"), **pyfunc_arguments(scorer, scorer.save(folder / "scorer"), None))
    return folder / "model"


def _copy(model: Path, where: Path) -> Path:
    shutil.copytree(model, where)
    return where


# -- damaged model files ---------------------------------------------------------------------------

def test_a_saved_scorer_records_its_boosters_hash_and_loads_the_same(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    recorded = json.loads((folder / "scorer.json").read_text())["booster"]
    assert recorded["bytes"] == (folder / "booster.txt").stat().st_size and len(recorded["sha256"]) == 64
    again = LeadScorer.load(folder)
    assert again.booster.model_to_string() == scorer.booster.model_to_string()
    assert again.fingerprint() == scorer.fingerprint()


def test_a_truncated_booster_is_a_config_error_naming_the_file(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    booster = folder / "booster.txt"
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"scorer/booster.txt: damaged \(sha256 differs from scorer.json.*re-export"):
        LeadScorer.load(folder)


def test_a_booster_changed_in_place_is_refused(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    booster = folder / "booster.txt"
    text = booster.read_text()
    at = text.index("leaf_value=") + len("leaf_value=")
    booster.write_text(text[:at] + ("7" if text[at] != "7" else "8") + text[at + 1:])  # same size, one digit
    with pytest.raises(ConfigError, match=r"booster.txt: damaged \(sha256 differs from scorer.json\)"):
        LeadScorer.load(folder)


def test_a_scorer_json_that_is_not_json_or_missing_is_a_config_error(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    (folder / "scorer.json").write_text('{"format_version": 1, "spec": {')
    with pytest.raises(ConfigError, match=r"scorer/scorer.json: damaged \(not JSON\); re-export the model"):
        LeadScorer.load(folder)
    (folder / "scorer.json").unlink()
    with pytest.raises(ConfigError, match=r"scorer/scorer.json: missing"):
        LeadScorer.load(folder)


def test_a_folder_saved_before_hashes_were_recorded_still_loads_and_a_cut_one_is_refused(scorer, tmp_path):
    folder = scorer.save(tmp_path / "scorer")
    raw = json.loads((folder / "scorer.json").read_text())
    del raw["booster"]
    (folder / "scorer.json").write_text(json.dumps(raw))
    assert LeadScorer.load(folder).booster.model_to_string() == scorer.booster.model_to_string()
    booster = folder / "booster.txt"
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"booster.txt: damaged \(incomplete LightGBM model\)"):
        LeadScorer.load(folder)


@pytest.mark.parametrize(("damage", "message"), [
    ("MLmodel missing", r"model/MLmodel: missing, so .* is not an exported model"),
    ("MLmodel not YAML", r"model/MLmodel: damaged \(not YAML\)"),
    ("MLmodel empty", r"model/MLmodel: damaged \(no python_function model in it\)"),
    ("pickle cut", r"model/python_model.pkl: damaged \(pickle data was truncated\)"),
    ("pickle missing", r"model/python_model.pkl: missing"),
    ("scorer missing", r"model/artifacts/scorer/scorer.json: missing"),
    ("no folder", r"model: no such model folder"),
])
def test_load_scorer_turns_mlflows_failures_into_one_line_config_errors(exported, tmp_path, damage, message):
    from leadtemp.adapters.pyfunc import load_scorer

    model = _copy(exported, tmp_path / "model")
    if damage == "MLmodel missing":
        (model / "MLmodel").unlink()
    elif damage == "MLmodel not YAML":
        (model / "MLmodel").write_text("flavors: [\n  : oops")
    elif damage == "MLmodel empty":
        (model / "MLmodel").write_text("")
    elif damage == "pickle cut":
        (model / "python_model.pkl").write_bytes((model / "python_model.pkl").read_bytes()[:40])
    elif damage == "pickle missing":
        (model / "python_model.pkl").unlink()
    elif damage == "scorer missing":
        shutil.rmtree(model / "artifacts")
    else:
        shutil.rmtree(model)
    with pytest.raises(ConfigError, match=message) as caught:
        load_scorer(str(model))
    assert "\n" not in str(caught.value)


def test_cli_score_with_a_truncated_booster_exits_2_naming_the_file_without_crashing(exported, small_sim, tmp_path):
    """LightGBM aborts the process on this file: the check must come first (run in a subprocess)."""
    model = _copy(exported, tmp_path / "latest")
    booster = model / "artifacts" / "scorer" / "booster.txt"
    booster.write_bytes(booster.read_bytes()[: booster.stat().st_size // 2])
    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    small_sim.interactions.to_parquet(tmp_path / "events.parquet")
    command = [sys.executable, "-m", "leadtemp.cli", "score", "--as-of", str(AS_OF.date()), "--model", "latest",
               "--leads", "leads.parquet", "--interactions", "events.parquet", "--out", "scores.csv",
               "--params", str(ROOT / "params.yaml")]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "latest/artifacts/scorer/booster.txt: damaged (sha256 differs from scorer.json" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "scores.csv").exists()
