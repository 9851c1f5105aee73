"""A stranger's clone has no ../shared beside it: the tests that need it skip with the reason there,
and still fail under CI=true, where the data must be present."""

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # two pytest runs in subprocesses


def _copy_of_the_tests(tmp_path):
    clone = tmp_path / "clone"  # no "shared" folder beside it
    for name in ("tests", "examples"):
        shutil.copytree(ROOT / name, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, clone / name)
    return clone


def _external_tests(clone, ci: bool):
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    # -n 0: in one process, so -x stops with pytest's own exit code 1 (under xdist an early stop is an interruption)
    return subprocess.run([sys.executable, "-m", "pytest", "tests", "-m", "external", "-q", "-rs", "-x", "-n", "0", "-p",
                           "no:cacheprovider"], cwd=clone, env=env, capture_output=True, text=True, timeout=300)


def test_without_the_shared_datasets_the_external_tests_skip_with_the_reason(tmp_path):
    clone = _copy_of_the_tests(tmp_path)
    assert not (clone.parent / "shared").exists()
    done = _external_tests(clone, ci=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "failed" not in done.stdout and " skipped" in done.stdout
    assert "needs the third-party datasets" in done.stdout


def test_under_ci_a_missing_dataset_fails_instead_of_skipping(tmp_path):
    done = _external_tests(_copy_of_the_tests(tmp_path), ci=True)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 failed" in done.stdout and "skipped" not in done.stdout
    assert "expected the shared datasets" in done.stdout
