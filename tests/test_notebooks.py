"""The notebooks in notebooks/ run top to bottom on small simulated data, each in its own folder, and are
committed without outputs.

Each is executed with nbclient on an IPython kernel of this very interpreter (ipykernel's own spec, with
``sys.executable``: never a ``python3`` kernelspec left in ~/.local or /usr/share that points elsewhere).
Strip outputs before committing: ``.venv/bin/python tests/test_notebooks.py --strip``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]  # not from conftest: `python tests/test_notebooks.py --strip` runs without it
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01-your-data-to-a-model", "02-score-and-explain", "03-every-quarter"]
CELL_TIMEOUT = 600  # seconds; the slowest cell (03's retrain) takes about 40 s on a busy 2-core machine


def _read(name: str):
    import nbformat

    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _with_outputs(nb) -> list[str]:
    """Code cells that carry what a run leaves: outputs, an execution count or execution timings."""
    return [f"cell {n} ({cell.get('id', '?')})" for n, cell in enumerate(nb.cells, 1) if cell.cell_type == "code"
            and (cell.get("outputs") or cell.get("execution_count") is not None or "execution" in cell.get("metadata", {}))]


def strip(path: Path) -> bool:
    """Clear outputs, execution counts and timings in place (and the kernel's version details); True when it changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not _with_outputs(nb) and nb.metadata.get("language_info") == {"name": "python"}:
        return False
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    return True


def _kernel_manager():
    """A kernel of this interpreter: ipykernel's built-in spec (argv[0] = sys.executable), no kernelspec folders."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager(kernel_dirs=[])
    assert specs.get_kernel_spec("python3").argv[0] == sys.executable
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def execute(name: str, work: Path):
    """Run the notebook from notebooks/ (as Jupyter would), writing only to ``work``; returns it executed."""
    from nbclient import NotebookClient

    nb = _read(name)
    client = NotebookClient(nb, km=_kernel_manager(), timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEADTEMP_NOTEBOOK_DIR", str(work))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")
        started = time.perf_counter()
        client.execute()  # a cell that raises fails the test with the cell's traceback
    print(f"{name}: {time.perf_counter() - started:.1f} s")
    return nb


def text_of(nb) -> str:
    """Everything the cells printed or displayed as text."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") if out.get("output_type") == "stream" else out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_committed_notebooks_have_no_outputs():
    found = {path.name for path in NOTEBOOKS.glob("*.ipynb")}
    assert found == {f"{name}.ipynb" for name in NAMES}, "a notebook was added or renamed: list it in NAMES and test it"
    dirty = {name: cells for name in NAMES if (cells := _with_outputs(_read(name)))}
    assert not dirty, f"outputs or execution counts committed in {dirty}: run `.venv/bin/python tests/test_notebooks.py --strip`"


def test_notebooks_use_the_python_api_not_the_shell():
    for name in NAMES:
        code = [line.strip() for cell in _read(name).cells if cell.cell_type == "code" for line in cell.source.splitlines()]
        assert not [line for line in code if line.startswith(("!", "%%bash", "%%sh", "%sx")) or "subprocess" in line], name
        assert any("leadtemp." in line for line in code), name


@pytest.mark.slow
def test_01_your_data_to_a_model(tmp_path):
    work = tmp_path / "work"
    nb = execute("01-your-data-to-a-model", work)
    page = work / "report.html"
    assert page.is_file() and '<meta name="generator" content="leadtemp report">' in page.read_text()
    out = text_of(nb)
    assert f"open {page.resolve()} in a browser" in out
    assert "fit to ship: True" in out and "champion: True" in out
    assert (work / "params.yaml").read_text().count("my-crm/") == 2
    assert not (ROOT / "report.html").exists() and not (NOTEBOOKS / "mlflow.db").exists()


@pytest.mark.slow
def test_02_score_and_explain(tmp_path):
    work = tmp_path / "work"
    nb = execute("02-score-and-explain", work)
    scores = pd.read_csv(work / "scores.csv")
    assert scores["rank"].is_monotonic_increasing and scores["bucket"].iloc[0] == "hot"
    out = text_of(nb)
    assert f"{scores['lead_id'].iloc[0]}: hot, score {scores['score'].iloc[0]}" in out  # explain agrees with score
    assert {"hot", "warm", "cold"} <= set(scores["bucket"])
    assert (work / "why.png").stat().st_size > 10_000
    assert any(out.get("data", {}).get("image/png") for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.slow
def test_03_every_quarter(tmp_path):
    work = tmp_path / "work"
    nb = execute("03-every-quarter", work)
    out = text_of(nb)
    assert "2024Q4" in out and "2024Q3" in out  # the backtest's two quarters
    assert "decision: " in out and "challenger against champion: " in out
    assert "champion is still version 1" in out  # a dry run moves nothing
    assert (work / "retrain-report.html").is_file()


if __name__ == "__main__":
    if sys.argv[1:] != ["--strip"]:
        sys.exit("usage: python tests/test_notebooks.py --strip   (clears outputs of notebooks/*.ipynb in place)")
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        print(("stripped " if strip(path) else "clean    ") + str(path.relative_to(ROOT)))
