"""The small protocols where workflows meet adapters: workflows call these, adapters implement them.

A workflow never imports an adapter; :mod:`leadtemp.api` builds the adapters and hands them over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pandas as pd
import pyarrow as pa


class TableSource(Protocol):
    """A table read in batches: a file, a folder of part files or a database table."""

    def batches(self, size: int | None, columns: tuple[list[str], list[str]] | None = None) -> Iterator[pd.DataFrame]:
        """The rows in batches of ``size`` (None: all at once), in source order. ``columns``: (required, optional)
        columns the caller reads, which a source may send alone (None: all)."""

    def count(self) -> int:
        """Rows in the source (an upper bound is fine: it sizes the partitions)."""

    def identity(self) -> str:
        """Where the source is (the same whatever it holds): part of a run's name."""

    def fingerprint(self) -> dict:
        """What the source holds (sizes and times of files, a table's row count and checksum): a run resumes
        only when it is unchanged."""


class Partitions(Protocol):
    """Rows appended by partition, read back one partition at a time."""

    def add(self, frame: pd.DataFrame) -> None: ...

    def close(self) -> None: ...

    def read(self, k: int, columns: list[str] | None = None) -> pd.DataFrame: ...


class ScoringRun(Protocol):
    """The working state of one batch-scoring run: partitions, staged scores and the published output.

    Everything a run writes before :meth:`publish` survives a kill, so the same run can resume.
    """

    target: str   # where the scores go, for messages
    rejects: str  # where the rejects go, for messages

    def start(self, key: str, as_of: pd.Timestamp, model_version: str) -> None:
        """Open the working state of the run identified by ``key`` (the same key resumes it)."""

    def manifest(self) -> dict | None:
        """The manifest of a partition step finished earlier by this run, if any."""

    def partitions(self, prefix: str, n: int, schema: pa.Schema, fresh: bool = False) -> Partitions:
        """``n`` partitions named ``prefix``; ``fresh``: discard what an unfinished step left."""

    def save_manifest(self, manifest: dict) -> None:
        """Mark the partition step done (written last, atomically)."""

    def finished(self, manifest_id: str) -> dict[int, tuple[int, int, int, int]]:
        """Partitions already staged under this manifest: part -> (scored, rejected, not eligible, lost)."""

    def stage(self, part: int, scored: pd.DataFrame, rejects: pd.DataFrame, not_eligible: int,
              manifest_id: str, lost: int = 0) -> None:
        """One partition's rows and its done mark, all or nothing."""

    def publish(self, scores: bool = True) -> tuple[dict[str, int], dict[str, int]]:
        """Write the ranked output and the rejects; returns rows per bucket and rejects per source.
        ``scores=False``: the rejects only, the output left as it was (a run that scored no lead)."""

    def close(self, finished: bool) -> None:
        """Release connections; when ``finished``, remove the run's working state."""


class Progress(Protocol):
    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[int, str], Progress]  # (total leads, what) -> a progress display
