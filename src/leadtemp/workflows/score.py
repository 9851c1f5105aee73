"""Score a whole lead database: streamed, partitioned by lead, resumable, every lead scored or rejected.

The run has three steps, each safe to interrupt (kill -9 included):

1. **Partition.** Both tables are read once, in batches (a database cursor, or file by file and
   batch by batch), checked row by row, and written to ``n`` partition files by a hash of the lead
   id, so every lead is in one partition together with all its interactions. Rows with bad values
   are kept with their reason; nothing is dropped here. A manifest written last marks the step done.
2. **Score** each partition with :func:`score_partition` (the same function the Spark engine runs)
   and write its scored and rejected rows to staging tables in one transaction, which also records
   the partition as done. A rerun skips the partitions already done, provided the sources hold what
   they held and the model is the same (:func:`run_inputs`, kept in the manifest); otherwise it says
   so and starts afresh.
3. **Finish** in one transaction: replace the rows of this ``(as_of, model_version)`` in the output
   table by the staged ones, ranked over the whole run in SQL, and the same for the rejects; then
   drop the staging tables. For a file output the staging database is a SQLite file in the work
   folder and the output is written beside its target and renamed into place.

Memory holds one batch or one partition at a time, whatever the size of the database.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from leadtemp.core.config import Params
from leadtemp.core.errors import SchemaError
from leadtemp.core.metrics import BUCKETS
from leadtemp.core.ports import Partitions, ProgressFactory, ScoringRun, TableSource
from leadtemp.core.schema import LEAD_ID, ZEROS_HINT, DateRules, is_among, zeros_match
from leadtemp.modelling.buckets import bucket_warnings
from leadtemp.modelling.partition import (
    DEFAULT_CHUNK,
    canonical_events,
    canonical_leads,
    event_columns_read,
    event_schema,
    funnel_columns,
    interactions_read,
    lead_columns_read,
    lead_schema,
    partition_ledger,
    partition_of,
    score_partition,
)
from leadtemp.modelling.results import BatchResult
from leadtemp.modelling.scorer import LeadScorer
from leadtemp.modelling.unseen import Unseen, period_warning
from leadtemp.workflows.changes import check_order

READ_BATCH = 100_000  # rows per read from a source


def run_key(leads: TableSource, interactions: TableSource | None, target: str, as_of: pd.Timestamp,
            model_version: str) -> str:
    """What names a run (its work folder and staging tables): where it reads and writes, the date, the model
    version. Whether an unfinished run with this name may be resumed is :func:`run_inputs`' question."""
    blob = json.dumps({"leads": leads.identity(), "interactions": interactions.identity() if interactions else None,
                       "target": target, "as_of": str(as_of), "model": model_version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_inputs(leads: TableSource, interactions: TableSource | None, scorer: LeadScorer, chunk_size: int,
               reasons: bool, include_lost: bool = False, since: pd.Timestamp | None = None) -> dict:
    """What must be unchanged for a run to resume: what the sources hold, the model's content (not only its
    version number) and the settings that shape the partitions and rows. Kept in the manifest."""
    inputs = {"leads": leads.fingerprint(), "interactions": interactions.fingerprint() if interactions else None,
              "model": scorer.fingerprint(), "chunk": chunk_size, "reasons": reasons}
    if include_lost:
        inputs["include_lost"] = True
    if since is not None:
        inputs["since"] = str(since)
    return json.loads(json.dumps(inputs, default=str))  # as the manifest stores it


def score_in_batches(
    scorer: LeadScorer,
    params: Params,
    as_of: pd.Timestamp,
    leads: TableSource,
    interactions: TableSource | None,
    run: ScoringRun,
    progress: ProgressFactory,
    chunk_size: int = DEFAULT_CHUNK,
    reasons: bool = True,
    echo: Callable[[str], None] = print,
    include_lost: bool = False,
    since: pd.Timestamp | None = None,
) -> BatchResult:
    """Score every lead of ``leads`` as of ``as_of`` into ``run``'s target; resumable (see the module doc).

    Leads lost at ``as_of`` are counted and skipped; ``include_lost`` scores them too, marked by ``lost_since``
    (the run must write that column: :class:`~leadtemp.core.ports.ScoringRun` built for it). ``since`` (before
    ``as_of``): each row also says how the lead moved since then, by the same model (the run writes
    ``CHANGE_COLUMNS``; workflows/changes.py).
    """
    started = time.monotonic()
    as_of = pd.Timestamp(as_of)
    if since is not None:
        check_order(pd.Timestamp(since), as_of, "--since", "--as-of")
    version = str(scorer.meta.get("model_version", ""))
    interactions = interactions_read(scorer, interactions)
    inputs = run_inputs(leads, interactions, scorer, chunk_size, reasons, include_lost, since)
    run.start(run_key(leads, interactions, run.target, as_of, version), as_of, version)
    finished = False
    try:
        manifest = _resumable(run.manifest(), inputs, echo) or _partition(
            scorer, params, as_of, leads, interactions, run, chunk_size, inputs, echo)
        n = manifest["partitions"]
        lead_parts = run.partitions("leads", n, lead_schema(scorer))
        event_parts = run.partitions("events", n, event_schema(scorer))
        if manifest["interactions"]:
            try:  # before anything is staged: a refused run leaves nothing to resume
                check_interactions_name_leads(lead_parts, event_parts, n, manifest["interactions"], leads, interactions)
            except SchemaError:
                finished = True
                raise
        done = run.finished(manifest["id"])
        resumed = len(done)
        if done:
            echo(f"resuming: {len(done)} of {n} partitions already scored")
        shown = progress(manifest["leads"], "scoring")
        shown.advance(sum(manifest["lead_rows"][k] for k in done))
        ledger = partition_ledger(lead_parts, n) if scorer.spec.referral_columns else None
        unseen, reasons_now = Unseen(), Counter()
        for k in range(n):
            part_leads, part_events = lead_parts.read(k), event_parts.read(k)
            unseen.add(part_leads, part_events, scorer, as_of)  # done partitions too: one count per run
            if k in done:
                continue
            scored, rejects, not_eligible, lost = score_partition(part_leads, part_events, scorer, as_of, reasons,
                                                                  include_lost, since, params.buckets.steady_within,
                                                                  ledger)
            run.stage(k, scored, rejects, not_eligible, manifest["id"], lost)
            reasons_now.update(_reason_kind(r) for r in rejects.loc[rejects["source"] == "leads", "reason"])
            done[k] = (len(scored), len(rejects), not_eligible, lost)
            shown.advance(len(part_leads))
        shown.close()
        none_scored = sum(v[0] for v in done.values()) == 0
        # Nothing scored and leads rejected: the rejects say why, the output stays as it was (no empty file over it).
        buckets, rejected = run.publish(scores=not none_scored or not any(v[1] for v in done.values()))
        finished = True
    finally:
        run.close(finished)
    if none_scored and rejected.get("leads", 0):
        raise SchemaError(_all_rejected(int(rejected["leads"]), manifest["leads"], reasons_now, run))
    counts = {b: int(buckets.get(b, 0)) for b in BUCKETS}
    return BatchResult(
        scored=sum(v[0] for v in done.values()), rejected_leads=int(rejected.get("leads", 0)),
        rejected_interactions=int(rejected.get("interactions", 0)),
        not_eligible=sum(v[2] for v in done.values()), leads_read=manifest["leads"], partitions=n,
        resumed_partitions=resumed, buckets=counts, seconds=time.monotonic() - started, target=run.target,
        rejects=run.rejects,
        warnings=[w for w in (period_warning(scorer, as_of),) if w] + unseen.warnings(scorer) + bucket_warnings(counts),
        lost=sum(v[3] for v in done.values()), include_lost=include_lost)


def _say_notes(source: TableSource, echo: Callable[[str], None]) -> None:
    """What reading ``source`` skipped (a CSV's empty rows at its end), said once."""
    notes = getattr(source, "notes", None) or []
    for note in notes:
        echo(f"note: {note}")
    notes.clear()


def _reason_kind(reason: str) -> str:
    """A reject reason without the row it names, so that the same fault on many rows counts as one kind."""
    return re.sub(r"^interaction row \d+: ", "interaction: ", str(reason))


def _all_rejected(rejected: int, read: int, reasons: Counter, run: ScoringRun) -> str:
    """The error of a run that rejected leads and scored none (its output is left as it was)."""
    main = ""
    if reasons:
        kind, count = reasons.most_common(1)[0]
        main = f", {count:,} for \"{kind}\""
    return (f"no lead scored: {rejected:,} of the {read:,} leads were rejected{main}; every reject with its reason "
            f"-> {run.rejects}; {run.target} not written (an earlier one is left as it was)")


def check_interactions_name_leads(lead_parts: Partitions, event_parts: Partitions, n: int, count: int,
                                  leads: TableSource, interactions: TableSource) -> None:
    """Refuse interactions none of which names a lead of ``leads``: every lead would score as one with no activity.

    Stops at the first partition where one does (a lead and its interactions share a partition), so a good run
    reads a few id columns; the refusal gives an example of each side and a hint when leading zeros explain it.
    """
    event_ids, lead_ids = [], []
    for k in range(n):
        ids, own = lead_parts.read(k, [LEAD_ID])[LEAD_ID], event_parts.read(k, [LEAD_ID])[LEAD_ID]
        if is_among(own, ids).any():
            return
        event_ids.append(own.head(1000)), lead_ids.append(ids)
    unknown = pd.concat(event_ids, ignore_index=True).dropna()
    unknown = unknown[unknown != ""].head(1000)
    known = pd.concat(lead_ids, ignore_index=True)
    known = known[known != ""]
    if unknown.empty or known.empty:
        return  # empty ids only: each such row is rejected with its reason
    pair = zeros_match(unknown, known)
    event, lead = pair or (unknown.iloc[0], known.iloc[0])
    raise SchemaError(f"none of the {count:,} interactions names a lead of {leads} (e.g. interaction lead id "
                      f"{event!r} in {interactions}; lead ids look like {lead!r})" + (f": {ZEROS_HINT}" if pair else ""))


def _resumable(manifest: dict | None, inputs: dict, echo: Callable[[str], None]) -> dict | None:
    """The manifest of an unfinished run, if it was made from these very inputs; else None (start afresh)."""
    if manifest is None or manifest.get("inputs") == inputs:
        return manifest
    if "partitions" in manifest:  # not a partition step cut short, which starts again silently
        was = manifest.get("inputs") or {}
        changed = [name for name, value in inputs.items() if was.get(name) != value]
        echo(f"inputs changed since the unfinished run ({', '.join(changed)}): starting afresh")
    return None


def _partition(scorer: LeadScorer, params: Params, as_of: pd.Timestamp, leads: TableSource,
               interactions: TableSource | None, run: ScoringRun, chunk_size: int, inputs: dict,
               echo: Callable[[str], None]) -> dict:
    """Step 1 (see the module doc): every row to its lead's partition; returns the manifest."""
    run.save_manifest({"inputs": None})  # the partitions about to be written belong to no manifest until the last
    n = max(1, math.ceil(leads.count() / chunk_size))
    # Months from row order need the whole table in its order: read it at once.
    size = None if params.data.created_from_row_order is not None else READ_BATCH
    lead_parts = run.partitions("leads", n, lead_schema(scorer), fresh=True)
    dates = DateRules.of(params.data)  # one per run: every batch is read in the format the first ones settled
    read = 0
    lead_rows = np.zeros(n, dtype=np.int64)
    for batch in leads.batches(size, lead_columns_read(params, scorer)):
        frame = canonical_leads(batch, str(leads), params, scorer, read + 1, dates)
        lead_rows += np.bincount(partition_of(frame[LEAD_ID], n), minlength=n)
        lead_parts.add(frame)
        read += len(batch)
    lead_parts.close()
    if read == 0:
        raise SchemaError(f"{leads}: no lead rows to score (only a header, or an empty table)")
    echo(f"read {read:,} leads from {leads} into {n} partitions")
    _say_notes(leads, echo)
    events_read = 0
    if interactions is not None:
        event_parts = run.partitions("events", n, event_schema(scorer))
        for batch in interactions.batches(READ_BATCH, event_columns_read(params)):
            event_parts.add(canonical_events(batch, str(interactions), params, events_read + 1, as_of, dates,
                                             funnel_columns(scorer)))
            events_read += len(batch)
        event_parts.close()
        echo(f"read {events_read:,} interactions from {interactions}")
        _say_notes(interactions, echo)
    manifest = {"id": hashlib.sha256(f"{run.target}|{time.time_ns()}".encode()).hexdigest()[:12], "partitions": n,
                "leads": read, "interactions": events_read, "lead_rows": lead_rows.tolist(), "inputs": inputs}
    run.save_manifest(manifest)
    return manifest
