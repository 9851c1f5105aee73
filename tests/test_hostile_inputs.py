"""Hostile inputs (issue 11): one table of bad paths, types, files, options, model files and personal data.

Every case drives the command line only (``leadtemp.cli.app`` in-process through typer's CliRunner, or
the installed ``leadtemp`` in a subprocess where a real process matters, e.g. a segfault), against one
model trained once for the module, and is held to the same contract:

- no traceback, no crash by a signal;
- exit code 2 (3 only with ``--fail-on-rejects``; a few cases also accept 0 with a correct result, e.g.
  a ``--work-dir`` holding a file of the user's, where surviving the run is what matters);
- on exit 2, stderr has exactly one ``error: ...`` line naming the file, column or option at fault
  (click's own usage-error box counts as that line), no output file is created and nothing new is
  left in the folder (a pre-existing output stays untouched);
- every input file (and every file of the user's given to the command) is byte-identical afterwards.

Data are built inside the test from the simulator; no binary fixtures.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from leadtemp.cli import app

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2024-03-01"
RUNNER = CliRunner()
ENV = {"COLUMNS": "250", "MLFLOW_DISABLE_TELEMETRY": "true"}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# -- running the command line -----------------------------------------------------------------------

@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    crash: str | None = None  # an uncaught exception (in-process) or a death by signal (subprocess)


def cli(args: list, proc: bool = False, cwd: Path | None = None) -> Outcome:
    args = [str(a) for a in args]
    if proc:
        exe = Path(sys.executable).with_name("leadtemp")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "leadtemp.cli"]
        env = {**os.environ, **ENV, "TMPDIR": tempfile.gettempdir()}
        done = subprocess.run(command + args, capture_output=True, text=True, cwd=cwd or Path.cwd(), env=env,
                              timeout=300)
        crash = f"killed by {signal.Signals(-done.returncode).name}" if done.returncode < 0 else None
        return Outcome(done.returncode, done.stdout, done.stderr, crash)
    result = RUNNER.invoke(app, args, env=ENV)
    crash = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crash = "".join(traceback.format_exception(*result.exc_info))
    return Outcome(result.exit_code, result.stdout, result.stderr, crash)


def crash_summary(crash: str) -> str:
    """The exception line of a traceback (``KeyError: 'x'``), or the signal."""
    lines = [line for line in crash.strip().splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:", line)]
    return (named or lines or [crash])[-1][:160]


def error_message(stderr: str) -> tuple[int, str]:
    """How many ``error: ...`` lines stderr holds, and their text (click's usage-error box counts as one)."""
    lines = [line.strip() for line in stderr.splitlines() if re.match(r"\s*error:\s*\S", line, re.IGNORECASE)]
    if lines:
        return len(lines), " | ".join(lines)
    if re.search(r"─ Error ─", stderr):
        box = " ".join(line.strip("│ ") for line in stderr.splitlines() if line.startswith("│"))
        return 1, box
    return 0, ""


# -- the world: one small simulated CRM and one trained model per module ------------------------------

@dataclass
class World:
    home: Path
    params: Path
    model: Path
    leads: pd.DataFrame
    events: pd.DataFrame
    reference: dict[str, float]  # lead_id -> probability of a clean score at AS_OF

    @property
    def data(self) -> Path:
        return self.home / "data"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    home = tmp_path_factory.mktemp("hostile-world")
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        mp.chdir(home)
        settings = yaml.safe_load((ROOT / "params.yaml").read_text())
        settings["data"]["leads"] = str(home / "data" / "leads.parquet")
        settings["data"]["interactions"] = str(home / "data" / "interactions.parquet")
        params = home / "params.yaml"
        params.write_text(yaml.safe_dump(settings, sort_keys=False))
        made = cli(["simulate", "--out", "data", "--leads", "1500", "--seed", "3", "--months", "18",
                    "--params", params])
        assert made.code == 0 and made.crash is None, made.stdout + made.stderr + str(made.crash)
        files = ["--leads", "data/leads.parquet", "--interactions", "data/interactions.parquet"]
        trained = cli(["train", *files, "--params", params])
        assert trained.code == 0 and trained.crash is None, trained.stdout + trained.stderr + str(trained.crash)
        model = home / "models" / "latest"
        ref = cli(["score", "--as-of", AS_OF, "--out", home / "reference.csv", "--model", model, "--params", params,
                   *files])
        assert ref.code == 0 and ref.crash is None, ref.stdout + ref.stderr + str(ref.crash)
        reference = pd.read_csv(home / "reference.csv", dtype={"lead_id": str}, keep_default_na=False)
    finally:
        mp.undo()
    leads = pd.read_parquet(home / "data" / "leads.parquet")
    events = pd.read_parquet(home / "data" / "interactions.parquet")
    eligible = leads[(leads["created_at"] < AS_OF) & ~(leads["converted_at"] < AS_OF)]["lead_id"]
    assert set(reference["lead_id"]) == set(eligible) and len(eligible) > 500
    return World(home, params, model, leads, events, dict(zip(reference["lead_id"], reference["probability"])))


# -- one case -----------------------------------------------------------------------------------------

@dataclass
class Plan:
    args: list
    names: tuple[str, ...] = ()              # each must appear in the error line (case-insensitive)
    exits: tuple[int, ...] = (2,)            # accepted exit codes
    inputs: list[Path] = field(default_factory=list)   # byte-identical afterwards (files or whole folders)
    outputs: list[Path] = field(default_factory=list)  # must not exist after a refusal
    on_success: Callable[[Outcome], list[str]] | None = None  # checks when the run ends in an accepted 0 or 3
    after: Callable[[], list[str]] | None = None             # checks always run last (and cleanup)
    proc: bool = False


@dataclass
class Ctx:
    """A case's own folder (the working directory) and the shared world."""

    t: Path
    w: World

    @property
    def scores(self) -> Path:
        return self.t / "scores.csv"

    @property
    def rejects(self) -> Path:
        return self.t / "scores.rejects.csv"

    def copy(self, name: str, to: str | None = None) -> Path:
        target = self.t / (to or name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.w.data / name, target)
        return target

    def csv(self, frame: pd.DataFrame, name: str, **kwargs) -> Path:
        path = self.t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, **kwargs)
        return path

    def score(self, *extra, leads: Path | str | None = None, events: Path | str | None = None,
              out: Path | str | None = "scores.csv", as_of: str = AS_OF, model: Path | str | None = None) -> list:
        leads = self.copy("leads.parquet") if leads is None else leads
        events = self.copy("interactions.parquet") if events is None else events
        return ["score", "--as-of", as_of, *(["--out", out] if out is not None else []),
                "--model", model or self.w.model, "--params", self.w.params,
                "--leads", leads, "--interactions", events, *extra]

    def explain(self, lead_id: str, *extra, leads: Path | None = None, events: Path | None = None,
                as_of: str = AS_OF) -> list:
        leads = self.copy("leads.parquet") if leads is None else leads
        events = self.copy("interactions.parquet") if events is None else events
        return ["explain", lead_id, "--as-of", as_of, "--model", self.w.model, "--params", self.w.params,
                "--leads", leads, "--interactions", events, *extra]

    def blocker(self) -> Path:
        """A folder no one can write into: chmod 0o500, or, as root (where chmod does not stop writes),
        a path under a regular file."""
        if IS_ROOT:
            blocker = self.t / "blocker.csv"
            blocker.write_text("a regular file, not a folder\n")
            return blocker
        folder = self.t / "readonly"
        folder.mkdir()
        folder.chmod(0o500)
        return folder

    def eligible_ids(self) -> list[str]:
        return sorted(self.w.reference)

    def expect_scores(self, path: Path, expected: dict[str, float]) -> list[str]:
        """The output holds exactly the expected leads (as text) with the clean run's probabilities."""
        if not path.is_file():
            return [f"no output {path.name}"]
        got = pd.read_csv(path, dtype=str, keep_default_na=False)
        problems = []
        ids = list(got["lead_id"])
        if set(ids) != set(expected) or len(ids) != len(expected):
            extra = sorted(set(ids) - set(expected))[:3]
            missing = sorted(set(expected) - set(ids))[:3]
            problems.append(f"{path.name}: {len(ids)} leads, expected {len(expected)}; unexpected ids {extra}, "
                            f"missing {missing}")
        else:
            prob = got.set_index("lead_id")["probability"].astype(float)
            want = pd.Series(expected).loc[prob.index]
            off = (prob - want).abs() > 1e-9
            if off.any():
                problems.append(f"{path.name}: {int(off.sum())} leads scored differently from the clean run "
                                f"(e.g. {prob.index[off][0]}: {prob[off].iloc[0]} vs {want[off].iloc[0]}): "
                                "history or attributes lost")
        return problems

    def expect_rejects(self, lead_ids: set[str], column: str) -> list[str]:
        if not self.rejects.is_file():
            return [f"no rejects file {self.rejects.name}"]
        rej = pd.read_csv(self.rejects, dtype=str, keep_default_na=False)
        leads = rej[rej["source"] == "leads"]
        problems = []
        if set(leads["lead_id"]) != lead_ids:
            problems.append(f"rejected leads {sorted(leads['lead_id'])[:5]}, expected {sorted(lead_ids)}")
        elif not leads["reason"].str.contains(column, regex=False).all():
            problems.append(f"reject reason does not name {column!r}: {list(leads['reason'])[:2]}")
        return problems


def digest(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of every file among ``paths`` (folders: every file inside)."""
    out = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


IGNORED = ("mlflow.db", "systmp")  # the case's MLflow store and system temp folder (see the test)


# -- the table ------------------------------------------------------------------------------------------
# Each entry: (class, name, setup). setup(Ctx) builds the case's files and returns its Plan.

CASES: list[tuple[str, str, Callable[[Ctx], Plan]]] = []


def case(cls: str, name: str):
    def register(setup: Callable[[Ctx], Plan]):
        CASES.append((cls, name, setup))
        return setup
    return register


# ownership of paths ----------------------------------------------------------------------------------

@case("ownership", "work-dir-holds-user-file")
def _(c: Ctx) -> Plan:
    work = c.t / "work"
    work.mkdir()
    (work / "notes.txt").write_text("my own notes, not leadtemp's\n")
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score("--work-dir", work, leads=leads, events=events), names=("work",), exits=(0, 2),
                inputs=[work / "notes.txt", leads, events], outputs=[c.scores, c.rejects],
                on_success=lambda o: c.expect_scores(c.scores, c.w.reference))


@case("ownership", "work-dir-dot")
def _(c: Ctx) -> Plan:
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    params = c.t / "params.yaml"
    shutil.copyfile(c.w.params, params)
    (c.t / "notes.txt").write_text("my own notes\n")
    (c.t / "last_week.csv").write_text("lead_id,score\nL1,40\n")
    args = ["score", "--as-of", AS_OF, "--out", "scores.csv", "--work-dir", ".", "--model", c.w.model,
            "--params", "params.yaml", "--leads", "leads.parquet", "--interactions", "interactions.parquet"]
    return Plan(args, names=("--work-dir",), exits=(0, 2),
                inputs=[leads, events, params, c.t / "notes.txt", c.t / "last_week.csv"],
                outputs=[c.scores, c.rejects], on_success=lambda o: c.expect_scores(c.scores, c.w.reference))


@case("ownership", "work-dir-is-the-input-folder")
def _(c: Ctx) -> Plan:
    leads, events = c.copy("leads.parquet", "crm/leads.parquet"), c.copy("interactions.parquet", "crm/interactions.parquet")
    (c.t / "crm" / "README.txt").write_text("exported from the CRM on Monday\n")
    return Plan(c.score("--work-dir", c.t / "crm", leads=leads, events=events), names=("crm",), exits=(0, 2),
                inputs=[c.t / "crm"], outputs=[c.scores, c.rejects],
                on_success=lambda o: c.expect_scores(c.scores, c.w.reference))


@case("ownership", "work-dir-is-a-file")
def _(c: Ctx) -> Plan:
    work = c.t / "work.txt"
    work.write_text("not a folder\n")
    return Plan(c.score("--work-dir", work), names=("work.txt",), inputs=[work], outputs=[c.scores, c.rejects])


@case("ownership", "out-is-the-leads-file")
def _(c: Ctx) -> Plan:
    leads = c.csv(c.w.leads, "leads.csv")
    events = c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events, out=leads), names=("leads.csv",), inputs=[leads, events],
                outputs=[c.t / "leads.rejects.csv"])


@case("ownership", "out-is-the-leads-file-spelt-differently")
def _(c: Ctx) -> Plan:
    leads = c.copy("leads.parquet", "crm/leads.parquet")
    events = c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events, out="crm/../crm/./leads.parquet"), names=("leads.parquet",),
                inputs=[leads, events], outputs=[c.t / "crm" / "leads.rejects.parquet"])


@case("ownership", "out-is-the-interactions-file")
def _(c: Ctx) -> Plan:
    leads = c.copy("leads.parquet")
    events = c.csv(c.w.events, "interactions.csv")
    return Plan(c.score(leads=leads, events=events, out=events), names=("interactions.csv",),
                inputs=[leads, events], outputs=[c.t / "interactions.rejects.csv"])


@case("ownership", "rejects-is-the-interactions-file")
def _(c: Ctx) -> Plan:
    leads = c.copy("leads.parquet")
    events = c.csv(c.w.events, "interactions.csv")
    return Plan(c.score("--rejects", events, leads=leads, events=events), names=("interactions.csv",),
                inputs=[leads, events], outputs=[c.scores])


@case("ownership", "rejects-is-the-leads-file")
def _(c: Ctx) -> Plan:
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score("--rejects", leads, leads=leads, events=events), names=("leads.parquet",),
                inputs=[leads, events], outputs=[c.scores])


@case("ownership", "out-equals-rejects")
def _(c: Ctx) -> Plan:
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    both = c.t / "both.csv"
    return Plan(c.score("--rejects", both, leads=leads, events=events, out=both), names=("both.csv",),
                inputs=[leads, events], outputs=[both])


@case("ownership", "default-rejects-name-is-the-leads-file")
def _(c: Ctx) -> Plan:
    leads = c.csv(c.w.leads, "scores.rejects.csv")  # --out scores.csv puts the rejects in scores.rejects.csv
    events = c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events), names=("scores.rejects.csv",), inputs=[leads, events],
                outputs=[c.scores])


@case("ownership", "out-inside-the-leads-folder")
def _(c: Ctx) -> Plan:
    parts = c.t / "leads_parts"
    parts.mkdir()
    half = len(c.w.leads) // 2
    c.w.leads.iloc[:half].to_parquet(parts / "part-0.parquet")
    c.w.leads.iloc[half:].to_parquet(parts / "part-1.parquet")
    events = c.copy("interactions.parquet")
    return Plan(c.score(leads=parts, events=events, out=parts / "scores.parquet"), names=("leads_parts",),
                inputs=[parts, events], outputs=[parts / "scores.parquet", parts / "scores.rejects.parquet"])


@case("ownership", "out-in-a-missing-folder")
def _(c: Ctx) -> Plan:  # creating the folder is fine; a traceback or a half-written file is not
    out = c.t / "no_such_folder" / "sub" / "scores.csv"
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events, out=out), names=("no_such_folder",), exits=(0, 2),
                inputs=[leads, events], outputs=[out],
                on_success=lambda o: c.expect_scores(out, c.w.reference))


@case("ownership", "out-not-writable")
def _(c: Ctx) -> Plan:
    blocker = c.blocker()
    out = blocker / "scores.csv"
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events, out=out), names=(blocker.name,),
                inputs=[leads, events] + ([blocker] if blocker.is_file() else []), outputs=[out],
                after=lambda: [] if blocker.is_file() else blocker.chmod(0o700) or [])


@case("ownership", "rejects-not-writable")
def _(c: Ctx) -> Plan:
    blocker = c.blocker()
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score("--rejects", blocker / "rejects.csv", leads=leads, events=events), names=(blocker.name,),
                inputs=[leads, events] + ([blocker] if blocker.is_file() else []), outputs=[c.scores],
                after=lambda: [] if blocker.is_file() else blocker.chmod(0o700) or [])


@case("ownership", "out-is-a-directory")
def _(c: Ctx) -> Plan:
    c.scores.mkdir()
    (c.scores / "keep.txt").write_text("a folder named like a file, with the user's file in it\n")
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events), names=("scores.csv",),
                inputs=[leads, events, c.scores / "keep.txt"], outputs=[c.rejects])


@case("ownership", "existing-out-kept-when-the-leads-are-refused")
def _(c: Ctx) -> Plan:
    c.scores.write_text("lead_id,score\nL1,99\n")
    leads = c.csv(c.w.leads.drop(columns=["created_at"]), "leads.csv")
    events = c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events), names=("created_at", "leads.csv"),
                inputs=[c.scores, leads, events], outputs=[c.rejects])


# types are declared, not guessed ------------------------------------------------------------------------

def _renamed(c: Ctx, name: Callable[[str], str]) -> tuple[Path, Path, dict[str, str]]:
    """The world with every lead id renamed, written as CSV (the text the user's CRM exported)."""
    mapping = {old: name(old) for old in c.w.leads["lead_id"]}
    leads = c.csv(c.w.leads.assign(lead_id=c.w.leads["lead_id"].map(mapping)), "leads.csv")
    events = c.csv(c.w.events.assign(lead_id=c.w.events["lead_id"].map(mapping)), "interactions.csv")
    return leads, events, mapping


def _no_rejects(c: Ctx) -> list[str]:
    if not c.rejects.is_file():
        return [f"no rejects file {c.rejects.name}"]
    rej = pd.read_csv(c.rejects, dtype=str, keep_default_na=False)
    return [f"{len(rej)} rejects, e.g. {rej['reason'].iloc[0]!r}"] if len(rej) else []


@case("types", "lead-ids-with-leading-zeros")
def _(c: Ctx) -> Plan:
    leads, events, mapping = _renamed(c, lambda old: f"{int(old[1:]):06d}")  # L0000123 -> 000123
    expected = {mapping[k]: v for k, v in c.w.reference.items()}
    return Plan(c.score(leads=leads, events=events), exits=(0,), inputs=[leads, events],
                on_success=lambda o: c.expect_scores(c.scores, expected) + _no_rejects(c))


@case("types", "one-blank-id-in-a-numeric-id-column")
def _(c: Ctx) -> Plan:
    mapping = {old: str(int(old[1:])) for old in c.w.leads["lead_id"]}  # L0000416 -> 416
    blank = c.eligible_ids()[0]
    frame = c.w.leads.assign(lead_id=c.w.leads["lead_id"].map(mapping).where(c.w.leads["lead_id"] != blank, ""))
    leads = c.csv(frame, "leads.csv")
    mine = c.w.events[c.w.events["lead_id"] != blank]
    events = c.csv(mine.assign(lead_id=mine["lead_id"].map(mapping)), "interactions.csv")
    expected = {mapping[k]: v for k, v in c.w.reference.items() if k != blank}
    return Plan(c.score(leads=leads, events=events), exits=(0,), inputs=[leads, events],
                on_success=lambda o: c.expect_scores(c.scores, expected) + c.expect_rejects({""}, "lead_id"))


@case("types", "ambiguous-day-month-dates")
def _(c: Ctx) -> Plan:
    some = c.w.leads[c.w.leads["created_at"].dt.day <= 12]  # 03/05/2024: 3 May or 5 March? every row fits both
    leads = c.csv(some.assign(created_at=some["created_at"].dt.strftime("%d/%m/%Y")), "leads.csv")
    events = c.csv(c.w.events[c.w.events["lead_id"].isin(some["lead_id"])], "interactions.csv")
    return Plan(c.score(leads=leads, events=events), names=("created_at", "format"), inputs=[leads, events],
                outputs=[c.scores, c.rejects])


@case("types", "day-first-dates-unambiguous-as-a-column")
def _(c: Ctx) -> Plan:  # days above 12 in the column say it is day-first: every row must be read so
    frame = c.w.leads.assign(created_at=c.w.leads["created_at"].dt.strftime("%d/%m/%Y %H:%M:%S"))
    leads = c.csv(frame, "leads.csv")
    events = c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events), exits=(0,), inputs=[leads, events],
                on_success=lambda o: c.expect_scores(c.scores, c.w.reference) + _no_rejects(c))


def _one_bad_value(c: Ctx, column: str, value: str, table: str = "leads") -> Plan:
    """One eligible lead gets an absurd value; it must be rejected (exit 3 with --fail-on-rejects), the rest scored."""
    victim = c.eligible_ids()[1]
    if table == "leads":
        frame = c.w.leads.astype({column: object})
        frame.loc[frame["lead_id"] == victim, column] = value
        leads, events = c.csv(frame, "leads.csv"), c.copy("interactions.parquet")
    else:
        frame = c.w.events.astype({column: object})
        frame.loc[frame.index[frame["lead_id"] == victim][0], column] = value
        leads, events = c.copy("leads.parquet"), c.csv(frame, "interactions.csv")
    expected = {k: v for k, v in c.w.reference.items() if k != victim}
    return Plan(c.score("--fail-on-rejects", leads=leads, events=events), names=(column,), exits=(3,),
                inputs=[leads, events],
                on_success=lambda o: c.expect_rejects({victim}, column) + c.expect_scores(c.scores, expected))


@case("types", "numeric-inf")
def _(c: Ctx) -> Plan:
    return _one_bad_value(c, "past_purchases", "inf")


@case("types", "numeric-1e308")
def _(c: Ctx) -> Plan:
    return _one_bad_value(c, "past_purchases", "1e308")


@case("types", "created-in-year-1600")
def _(c: Ctx) -> Plan:
    return _one_bad_value(c, "created_at", "1600-01-01 00:00:00")


@case("types", "created-in-year-2300")
def _(c: Ctx) -> Plan:
    return _one_bad_value(c, "created_at", "2300-01-01 00:00:00")


@case("types", "interaction-in-year-1600")
def _(c: Ctx) -> Plan:
    return _one_bad_value(c, "timestamp", "1600-01-01 00:00:00", table="interactions")


# bad files given to score -------------------------------------------------------------------------------

def _bad_leads_file(c: Ctx, name: str, content: bytes | None, *names: str) -> Plan:
    path = c.t / name
    if content is not None:
        path.write_bytes(content)
    events = c.copy("interactions.parquet")
    return Plan(c.score(leads=path, events=events), names=names or (name,),
                inputs=[events] + ([path] if content is not None else []), outputs=[c.scores, c.rejects])


def _garbage() -> bytes:
    return b"\x00\xff\xfe" + np.random.default_rng(11).bytes(6000)


@case("files", "leads-empty-file")
def _(c: Ctx) -> Plan:
    return _bad_leads_file(c, "leads.csv", b"\n\n\n")


@case("files", "leads-zero-bytes")
def _(c: Ctx) -> Plan:
    return _bad_leads_file(c, "leads.csv", b"")


@case("files", "leads-garbage-bytes")
def _(c: Ctx) -> Plan:
    return _bad_leads_file(c, "leads.csv", _garbage())


@case("files", "leads-latin-1-with-accents")
def _(c: Ctx) -> Plan:
    frame = c.w.leads.copy()
    frame.loc[frame.index[:40], "name"] = "José Müller-Ångström"
    frame.loc[frame.index[:40], "country"] = "Österreich"
    content = frame.to_csv(index=False).encode("latin-1")
    return _bad_leads_file(c, "leads.csv", content)


@case("files", "leads-header-only")
def _(c: Ctx) -> Plan:
    return _bad_leads_file(c, "leads.csv", c.w.leads.head(0).to_csv(index=False).encode())


@case("files", "leads-wrong-separator")
def _(c: Ctx) -> Plan:
    return _bad_leads_file(c, "leads.csv", c.w.leads.to_csv(index=False, sep=";").encode(), "leads.csv", "separator")


@case("files", "leads-wrong-separator-comma-in-a-value")
def _(c: Ctx) -> Plan:
    frame = c.w.leads.assign(name=c.w.leads["name"].where(c.w.leads.index != 3, "Smith, John"))
    return _bad_leads_file(c, "leads.csv", frame.to_csv(index=False, sep=";").encode(), "leads.csv",
                           "the header has 1 column", "is data.csv_separator ';'?")


@case("files", "leads-truncated-parquet")
def _(c: Ctx) -> Plan:
    data = (c.w.data / "leads.parquet").read_bytes()
    return _bad_leads_file(c, "leads.parquet", data[: len(data) // 2])


@case("files", "leads-parquet-bytes-named-csv")
def _(c: Ctx) -> Plan:
    return _bad_leads_file(c, "leads.csv", (c.w.data / "leads.parquet").read_bytes())


@case("files", "leads-missing-file")
def _(c: Ctx) -> Plan:
    return _bad_leads_file(c, "no_such_leads.csv", None)


@case("files", "leads-empty-folder")
def _(c: Ctx) -> Plan:
    (c.t / "leads_parts").mkdir()
    return _bad_leads_file(c, "leads_parts", None)


def _bad_events_file(c: Ctx, name: str, content: bytes) -> Plan:
    path = c.t / name
    path.write_bytes(content)
    leads = c.copy("leads.parquet")
    return Plan(c.score(leads=leads, events=path), names=(name,), inputs=[leads, path],
                outputs=[c.scores, c.rejects])


@case("files", "interactions-zero-bytes")
def _(c: Ctx) -> Plan:
    return _bad_events_file(c, "interactions.csv", b"")


@case("files", "interactions-garbage-bytes")
def _(c: Ctx) -> Plan:
    return _bad_events_file(c, "interactions.csv", _garbage())


@case("files", "interactions-truncated-parquet")
def _(c: Ctx) -> Plan:
    data = (c.w.data / "interactions.parquet").read_bytes()
    return _bad_events_file(c, "interactions.parquet", data[: len(data) // 2])


# bad options ---------------------------------------------------------------------------------------------

def _bad_option(c: Ctx, *extra, names: tuple[str, ...], **kwargs) -> Plan:
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score(*extra, leads=leads, events=events, **kwargs), names=names, inputs=[leads, events],
                outputs=[c.scores, c.rejects])


@case("options", "as-of-empty")
def _(c: Ctx) -> Plan:
    return _bad_option(c, as_of="", names=("--as-of",))


@case("options", "as-of-2024-13-45")
def _(c: Ctx) -> Plan:
    return _bad_option(c, as_of="2024-13-45", names=("--as-of",))


@case("options", "as-of-NaT")
def _(c: Ctx) -> Plan:
    return _bad_option(c, as_of="NaT", names=("--as-of",))


@case("options", "as-of-year-2300")
def _(c: Ctx) -> Plan:
    return _bad_option(c, as_of="2300-01-01", names=("--as-of",))


@case("options", "as-of-with-utc-offset")
def _(c: Ctx) -> Plan:
    """Either refused, or taken as the instant it names, in UTC (as README says of zoned timestamps)."""
    plan = _bad_option(c, as_of="2024-06-01T00:00:00+02:00", names=("--as-of",))
    plan.exits = (0, 2)

    def utc(o: Outcome) -> list[str]:
        if not c.scores.is_file():
            return ["no output"]
        seen = pd.Timestamp(pd.read_csv(c.scores, dtype=str, nrows=1)["as_of"].iloc[0])
        seen = seen.tz_convert("UTC").tz_localize(None) if seen.tz is not None else seen
        return [] if seen == pd.Timestamp("2024-05-31 22:00") else [f"as_of written as {seen}, not 2024-05-31 22:00 UTC"]
    plan.on_success = utc
    return plan


@case("options", "chunk-size-0")
def _(c: Ctx) -> Plan:
    return _bad_option(c, "--chunk-size", "0", names=("--chunk-size",))


@case("options", "engine-foo")
def _(c: Ctx) -> Plan:
    return _bad_option(c, "--engine", "foo", names=("--engine",))


@case("options", "params-file-missing")
def _(c: Ctx) -> Plan:
    plan = _bad_option(c, names=("no_params.yaml",))
    plan.args += ["--params", c.t / "no_params.yaml"]  # the last --params wins
    return plan


def _crm(c: Ctx, name: str = "crm.db") -> Path:
    db = c.t / name
    with sqlite3.connect(db) as conn:
        c.w.leads.to_sql("leads", conn, index=False)
        c.w.events.to_sql("interactions", conn, index=False)
    conn.close()
    return db


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return names


def _db_args(c: Ctx, url: str, leads_table: str = "leads", events_table: str = "interactions",
             write_table: str = "scores", *extra) -> list:
    return ["score", "--as-of", AS_OF, "--model", c.w.model, "--params", c.w.params, "--db", url,
            "--leads-table", leads_table, "--interactions-table", events_table, "--write-table", write_table, *extra]


def _db_untouched(db: Path) -> Callable[[], list[str]]:
    def check() -> list[str]:
        extra = _tables(db) - {"leads", "interactions"}
        return [f"tables left in the user's database: {sorted(extra)}"] if extra else []
    return check


@case("options", "db-in-a-missing-folder")
def _(c: Ctx) -> Plan:
    return Plan(_db_args(c, "sqlite:////nonexistent/dir/x.db"), names=("nonexistent",))


@case("options", "db-not-a-url")
def _(c: Ctx) -> Plan:
    return Plan(_db_args(c, "not-a-url"), names=("not-a-url",))


@case("options", "db-unknown-driver")
def _(c: Ctx) -> Plan:
    return Plan(_db_args(c, "postgresql+nosuchdriver://scoring@127.0.0.1/crm"), names=("nosuchdriver",))


@case("options", "db-locked")
def _(c: Ctx) -> Plan:
    db = _crm(c)
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another program holds the database

    def release() -> list[str]:
        lock.execute("ROLLBACK")
        lock.close()
        return _db_untouched(db)()
    return Plan(_db_args(c, f"sqlite:///{db}"), names=("crm.db", "locked"), inputs=[db], after=release)


@case("options", "db-leads-table-missing")
def _(c: Ctx) -> Plan:
    db = _crm(c)
    return Plan(_db_args(c, f"sqlite:///{db}", leads_table="nope_table"), names=("nope_table",), inputs=[db],
                after=_db_untouched(db))


@case("options", "db-write-table-is-the-leads-table")
def _(c: Ctx) -> Plan:
    db = _crm(c)
    return Plan(_db_args(c, f"sqlite:///{db}", write_table="leads"), names=("leads",), inputs=[db],
                after=_db_untouched(db))


@case("options", "db-rejects-table-is-the-interactions-table")
def _(c: Ctx) -> Plan:
    db = _crm(c)
    return Plan(_db_args(c, f"sqlite:///{db}", "leads", "interactions", "scores", "--rejects", "interactions"),
                names=("interactions",), inputs=[db], after=_db_untouched(db))


# model files -------------------------------------------------------------------------------------------

def _model_copy(c: Ctx) -> tuple[Path, Path]:
    model = c.t / "model"
    shutil.copytree(c.w.model, model)
    booster = next(model.rglob("booster.txt"))
    return model, booster


def _bad_model(c: Ctx, model: Path, *names: str, proc: bool = False) -> Plan:
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.score(leads=leads, events=events, model=model), names=names,
                inputs=[leads, events] + ([model] if model.exists() else []), outputs=[c.scores, c.rejects], proc=proc)


@case("model", "booster-truncated-to-half")
def _(c: Ctx) -> Plan:  # in a subprocess: LightGBM may take the whole process down
    model, booster = _model_copy(c)
    data = booster.read_bytes()
    booster.write_bytes(data[: len(data) // 2])
    return _bad_model(c, model, "booster.txt", proc=True)


@case("model", "booster-missing")
def _(c: Ctx) -> Plan:
    model, booster = _model_copy(c)
    booster.unlink()
    return _bad_model(c, model, "booster.txt")


@case("model", "scorer-json-not-json")
def _(c: Ctx) -> Plan:
    model, booster = _model_copy(c)
    (booster.parent / "scorer.json").write_text("{this is not json")
    return _bad_model(c, model, "scorer.json")


@case("model", "mlmodel-file-garbage")
def _(c: Ctx) -> Plan:
    model, _booster = _model_copy(c)
    (model / "MLmodel").write_bytes(_garbage())
    return _bad_model(c, model, "MLmodel")


@case("model", "missing-folder")
def _(c: Ctx) -> Plan:
    return _bad_model(c, c.t / "no_model", "no_model")


@case("model", "model-is-a-data-file")
def _(c: Ctx) -> Plan:
    return _bad_model(c, c.copy("truth.parquet"), "truth.parquet")


# personal data ----------------------------------------------------------------------------------------

@case("personal", "email-column-under-categorical")
def _(c: Ctx) -> Plan:
    settings = yaml.safe_load(c.w.params.read_text())
    settings["data"]["categorical"] = [*settings["data"]["categorical"], "email"]
    settings["data"]["excluded"] = [x for x in settings["data"]["excluded"] if x != "email"]
    params = c.t / "params_email.yaml"
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    # Only to keep the time small while this still trains: few rounds, and a copy of the world's MLflow
    # store (a new one spends seconds creating its tables) under another experiment and model name.
    settings["model"] |= {"max_rounds": 40, "early_stopping_rounds": 10}
    settings["mlflow"] |= {"experiment": "hostile-email", "registered_model": "hostile-email"}
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    shutil.copyfile(c.w.home / "mlflow.db", c.t / "mlflow.db")
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    addresses = [a.encode() for a in c.w.leads["email"].head(50)]

    def leaked() -> list[str]:  # where the addresses went when the column was not refused
        files = [f for folder in (c.t / "models", c.t / "mlruns") if folder.is_dir() for f in folder.rglob("*")
                 if f.is_file() and any(a in f.read_bytes() for a in addresses)]
        return [f"email addresses written to {len(files)} files, e.g. {os.path.relpath(files[0], c.t)}"] if files else []
    return Plan(["train", "--params", params, "--leads", leads, "--interactions", events],
                names=("email", "excluded"), inputs=[leads, events, params], outputs=[c.t / "models"], after=leaked)


# explain ----------------------------------------------------------------------------------------------

@case("explain", "unknown-lead-id")
def _(c: Ctx) -> Plan:
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.explain("NOPE123", leads=leads, events=events), names=("NOPE123",), inputs=[leads, events])


@case("explain", "as-of-before-the-lead-exists")
def _(c: Ctx) -> Plan:
    late = c.w.leads[c.w.leads["created_at"] > "2024-01-01"]["lead_id"].iloc[0]
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.explain(late, leads=leads, events=events, as_of="2023-06-01"), names=(late,),
                inputs=[leads, events])


@case("explain", "as-of-2024-13-45")
def _(c: Ctx) -> Plan:
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    return Plan(c.explain(c.eligible_ids()[0], leads=leads, events=events, as_of="2024-13-45"), names=("--as-of",),
                inputs=[leads, events])


@case("explain", "lead-id-with-leading-zeros")
def _(c: Ctx) -> Plan:
    leads, events, mapping = _renamed(c, lambda old: f"{int(old[1:]):06d}")
    lead = mapping[c.eligible_ids()[0]]
    return Plan(c.explain(lead, leads=leads, events=events), exits=(0,), inputs=[leads, events],
                on_success=lambda o: [] if f"lead {lead}" in o.stdout else [f"'lead {lead}' not in the output"])


@case("explain", "plot-not-writable")
def _(c: Ctx) -> Plan:
    blocker = c.blocker()
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    plot = blocker / "why.png"
    return Plan(c.explain(c.eligible_ids()[0], "--plot", plot, leads=leads, events=events), names=(blocker.name,),
                inputs=[leads, events] + ([blocker] if blocker.is_file() else []), outputs=[plot],
                after=lambda: [] if blocker.is_file() else blocker.chmod(0o700) or [])


@case("explain", "plot-over-the-leads-file")
def _(c: Ctx) -> Plan:
    leads = c.csv(c.w.leads, "leads.csv")
    events = c.copy("interactions.parquet")
    return Plan(c.explain(c.eligible_ids()[0], "--plot", leads, leads=leads, events=events), names=("leads.csv",),
                inputs=[leads, events])


# resume -----------------------------------------------------------------------------------------------

@case("resume", "work-dir-reused-after-the-leads-changed")
def _(c: Ctx) -> Plan:
    """A run that failed at the end leaves its work folder; the same --work-dir after the leads file changed
    must give exactly the rows of a fresh run (no lead deleted since then, no stale value)."""
    work = c.t / "work"
    leads, events = c.copy("leads.parquet"), c.copy("interactions.parquet")
    blocker = c.t / "blocker.csv"
    blocker.write_text("a regular file\n")
    cli(c.score("--work-dir", work, leads=leads, events=events, out=blocker / "scores.csv"))  # fails, at some point
    dropped = set(c.eligible_ids()[:300])
    c.w.leads[~c.w.leads["lead_id"].isin(dropped)].to_parquet(leads)
    expected = {k: v for k, v in c.w.reference.items() if k not in dropped}
    return Plan(c.score("--work-dir", work, leads=leads, events=events), exits=(0,), inputs=[leads, events],
                on_success=lambda o: c.expect_scores(c.scores, expected))


# -- the test ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setup", [pytest.param(setup, id=f"{cls}.{name}") for cls, name, setup in CASES])
def test_hostile_input(setup, world, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # the case's own store
    monkeypatch.chdir(tmp_path)
    systmp = tmp_path / "systmp"  # leadtemp's default work folders land here, not in the machine's /tmp
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    c = Ctx(tmp_path, world)
    plan = setup(c)
    before = digest(plan.inputs)
    present = tree(tmp_path)
    out = cli(plan.args, proc=plan.proc, cwd=tmp_path)

    problems = []
    if out.crash:
        problems.append(f"crash: {crash_summary(out.crash)}")
    elif "Traceback" in out.stderr + out.stdout:
        problems.append("Traceback in the output: " + crash_summary(out.stderr))
    if out.code not in plan.exits:
        said = error_message(out.stderr)[1] or (out.stdout.strip().splitlines() or [""])[-1]
        problems.append(f"exit {out.code}, expected {' or '.join(map(str, plan.exits))}"
                        + (f" (said: {said[:160]!r})" if said and not out.crash else ""))
    after = digest([Path(p) for p in before])
    for path, sha in before.items():
        name = os.path.relpath(path, tmp_path)
        if path not in after:
            problems.append(f"input destroyed: {name}")
        elif after[path] != sha:
            problems.append(f"input modified: {name}")
    finished = out.code in (0, 3) and any(code in (0, 3) for code in plan.exits)
    if finished and plan.on_success:  # a run that should have finished: is its result right?
        problems += plan.on_success(out)
    if 2 in plan.exits and not (finished and out.code in plan.exits):  # a refusal: one line, nothing written
        if out.code == 2:
            count, message = error_message(out.stderr)
            if count != 1:
                problems.append(f"{count} 'error:' lines in stderr, expected 1: {out.stderr.strip()[-160:]!r}")
            elif missing := [n for n in plan.names if n.lower() not in message.lower()]:
                problems.append(f"error line does not name {missing}: {message[:200]!r}")
        problems += [f"output created: {os.path.relpath(p, tmp_path)}" for p in plan.outputs if p.exists()]
        left = sorted(p for p in tree(tmp_path) - present
                      if not p.startswith(IGNORED) and not any(str(o).endswith(p) for o in plan.outputs))
        if left:
            problems.append(f"left behind: {left[:4]}")
    if plan.after:
        problems += plan.after()
    assert not problems, "; ".join(problems)
