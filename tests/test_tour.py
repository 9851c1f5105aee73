"""README's five-minute tour ends with the report, and `leadtemp demo` prints a report command that works as printed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.cli import app

PARAMS = ROOT / "params.yaml"


def tour() -> list[str]:
    """The command lines of the README's five-minute tour, comments dropped."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Five-minute tour.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_tour_ends_with_the_report_and_says_to_open_it():
    lines = tour()
    assert lines[-1] == ".venv/bin/leadtemp report --out report.html"
    after = (ROOT / "README.md").read_text().split(lines[-1], 1)[1].split("## ", 1)[0]
    assert "open `report.html` in a browser" in after
    helped = {cmd: CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "250"}).output
              for cmd in {line.split()[1] for line in lines}}
    for line in lines:  # every option of the tour is one its command knows
        cmd = line.split()[1]
        assert line.startswith(".venv/bin/leadtemp ") and all(opt in helped[cmd] for opt in re.findall(r"--[a-z-]+", line)), line


@pytest.mark.slow
def test_demo_prints_a_report_command_that_works_as_printed(tmp_path):
    """demo trains (here on a small world already in data/sim); its report line, pasted, writes report.html."""
    shutil.copy(PARAMS, "params.yaml")  # a project folder, as the README's commands expect
    made = CliRunner().invoke(app, ["simulate", "--out", "data/sim", "--leads", "1500", "--months", "24", "--seed", "5"])
    assert made.exit_code == 0, made.output
    done = CliRunner().invoke(app, ["demo"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    line = next(x for x in done.output.splitlines() if x.startswith("the model on one page for a sales director: "))
    command = line.split(": ", 1)[1].split(" (then open", 1)[0]
    assert "--run" not in command  # the demo's model became the champion: the plain command reports on it
    pasted = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=300)
    assert pasted.returncode == 0, pasted.stderr
    assert pasted.stdout.startswith("wrote report.html") and (tmp_path / "report.html").is_file()
