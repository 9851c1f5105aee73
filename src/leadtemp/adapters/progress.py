"""Progress of a long run: a rich bar on a terminal, plain log lines in pipes and logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """A rich progress bar with leads/s and ETA on a terminal, plain log lines otherwise."""

    def __init__(self, echo: Callable[[str], None], total: int, what: str, interactive: bool | None = None):
        self.echo, self.total, self.what = echo, total, what
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.done, self.started, self.last = 0, time.monotonic(), 0.0
        self.bar = None
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=True)
            self.task = self.bar.add_task(what, total=total, rate="")
            self.bar.start()

    def advance(self, n: int) -> None:
        if n == 0:
            return
        self.done += n
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        if self.bar is not None:
            self.bar.update(self.task, advance=n, rate=f"{rate:,.0f} leads/s")
        elif time.monotonic() - self.last >= 5 or self.done >= self.total:
            self.last = time.monotonic()
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            self.echo(f"{self.what}: {self.done:,}/{self.total:,} leads ({self.done / max(self.total, 1):.0%}), "
                      f"{rate:,.0f} leads/s, ETA {eta:,.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
