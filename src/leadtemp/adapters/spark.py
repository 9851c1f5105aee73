"""``leadtemp score --engine spark``: the batch scoring of :mod:`leadtemp.workflows.score` on a Spark cluster.

Leads and interactions are co-partitioned by a hash of the lead id (``cogroup``), and each
partition is scored by :func:`leadtemp.modelling.partition.score_partition`, the very function the local engine
runs, inside ``applyInPandas``. Ranks are then assigned over the whole run by a distributed sort
(probability, margin, lead id byte-wise: the order of :func:`leadtemp.modelling.scorer.rank_order`), so the
output equals the local engine's row for row.

Inputs: CSV/Parquet files or folders (any path Spark reads: local, ``hdfs://``, ``s3a://``,
``abfss://``, ``dbfs:/``) or tables of the Spark catalog (Hive metastore, Unity Catalog). Outputs: a
Parquet or CSV folder written by Spark's job committer (it appears when the job succeeds), or a
catalog table partitioned by ``as_of`` and ``model_version`` where only this run's partition is
overwritten, so a rerun leaves one row per lead. A failed task is retried by Spark; a failed job
can be rerun as it is.

Every worker needs leadtemp and its dependencies installed, and ``PYSPARK_PYTHON`` pointing at
that Python (see docs/spark.md).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable

import pandas as pd

from leadtemp.adapters.sources import Source, Target
from leadtemp.core.config import Params
from leadtemp.core.errors import ConfigError
from leadtemp.core.lifecycle import LOST_SINCE
from leadtemp.core.metrics import BUCKETS
from leadtemp.modelling.buckets import bucket_warnings
from leadtemp.modelling.horizons import timing_columns
from leadtemp.modelling.partition import (
    DEFAULT_CHUNK,
    EVENT_SCHEMA,
    REJECT_COLUMNS,
    ROW,
    canonical_events,
    canonical_leads,
    interactions_read,
    score_partition,
)
from leadtemp.modelling.results import BatchResult
from leadtemp.modelling.scorer import CHANGE_COLUMNS, REASON_COLUMNS, LeadScorer

PART, ROW_INDEX = "_leadtemp_part", "_leadtemp_row"
RESULT_SCHEMA = ("kind string, lead_id string, probability double, score long, bucket string, margin double, "
                 "reason_1 string, reason_2 string, reason_3 string, source string, row long, reason string, "
                 "not_eligible long, lost long, lost_since timestamp, previous_probability double, "
                 "previous_bucket string, trend string, what_changed string")


def session(app_name: str = "leadtemp score"):
    """The active Spark session, or a new one (``local[*]`` unless spark-submit or SPARK_MASTER says otherwise)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if "SPARK_MASTER" in os.environ:
        builder = builder.master(os.environ["SPARK_MASTER"])
    spark = builder.getOrCreate()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # naive timestamps pass through unchanged
    return spark


def _read(spark, source: Source, separator: str, text: tuple[str, ...] = ()):
    """A source as a Spark DataFrame with a row number column (from 1, in source order).

    CSV columns in ``text`` (ids, categories) are read as strings, never inferred: ``000123`` stays so.
    """
    if source.url is not None:
        raise ConfigError("--engine spark reads files or Spark catalog tables, not --db URLs: leave out --db "
                          "(tables are then catalog tables), or score the database with --engine local")
    if source.table is not None:
        frame = spark.table(source.table)
    else:
        path = source.location or str(source.path)
        is_csv = path.lower().endswith(".csv") or (source.path.is_dir() and any(
            p.suffix.lower() == ".csv" for p in source.path.iterdir()))
        if is_csv:
            from pyspark.sql.types import StringType, StructField, StructType

            inferred = spark.read.csv(path, header=True, sep=separator, inferSchema=True).schema
            schema = StructType([StructField(f.name, StringType(), True) if f.name in text else f
                                 for f in inferred.fields])
            frame = spark.read.csv(path, header=True, sep=separator, schema=schema)
        else:
            frame = spark.read.parquet(path)
    columns = frame.columns
    numbered = frame.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1] + 1))
    from pyspark.sql.types import LongType, StructField, StructType

    return numbered.toDF(StructType([*frame.schema.fields, StructField(ROW_INDEX, LongType(), False)])), columns


def _scorer_for_workers(scorer: LeadScorer) -> LeadScorer:
    return dataclasses.replace(scorer)  # a fresh copy: no compiled fast-reasons tables travel to the workers


def score_spark(
    scorer: LeadScorer,
    params: Params,
    as_of: pd.Timestamp,
    leads: Source,
    interactions: Source | None,
    target: Target,
    reasons: bool = True,
    echo: Callable[[str], None] = print,
    partitions: int | None = None,
    spark=None,
    include_lost: bool = False,
    since: pd.Timestamp | None = None,
) -> BatchResult:
    """Score every lead as of ``as_of`` on Spark; same rows as :func:`leadtemp.workflows.score.score_in_batches`
    (``include_lost``: leads lost at ``as_of`` too, marked by ``lost_since``; ``since``: how each lead moved since
    then, in ``CHANGE_COLUMNS``)."""
    from pyspark.sql import functions as F

    started = time.monotonic()
    as_of = pd.Timestamp(as_of)
    d = params.data
    if d.columns.lead_id is None or d.created_from_row_order is not None:
        raise ConfigError("--engine spark needs a lead id column (data.columns.lead_id) and no "
                          "data.created_from_row_order: both depend on one machine reading the table in order")
    if scorer.spec.referral_columns:
        raise ConfigError("--engine spark: this model has referral features (data.columns.referred_by), which look up "
                          "referrers across partitions; score it with the local engine")
    if scorer.spec.funnel_features:
        raise ConfigError("--engine spark: this model has funnel features (a kind: stage type, task outcomes or "
                          "ratings), which the Spark engine does not read yet; score it with the local engine")
    interactions = interactions_read(scorer, interactions)
    spark = spark or session()
    version, run_id = str(scorer.meta.get("model_version", "")), str(scorer.meta.get("run_id") or "")
    lead_frame, lead_columns = _read(spark, leads, d.csv_separator, (d.columns.lead_id, *scorer.spec.categorical))
    n_leads = lead_frame.count()
    n = partitions or max(1, -(-n_leads // DEFAULT_CHUNK))
    spark.conf.set("spark.sql.shuffle.partitions", str(n))  # one task per lead partition
    part = lambda column: F.pmod(F.xxhash64(F.trim(F.col(column).cast("string"))), F.lit(n))  # noqa: E731
    lead_frame = lead_frame.withColumn(PART, part(d.columns.lead_id))
    if interactions is not None:
        ic = d.interaction_columns
        event_frame, event_columns = _read(spark, interactions, d.csv_separator, (ic.lead_id, ic.type, ic.direction))
        event_frame = event_frame.withColumn(PART, part(d.interaction_columns.lead_id))
    else:
        event_frame, event_columns = lead_frame.limit(0).select(PART), []
    worker_scorer, lead_source, event_source = _scorer_for_workers(scorer), str(leads), str(interactions)
    steady_within = params.buckets.steady_within
    changes = list(CHANGE_COLUMNS) if since is not None else []
    when = timing_columns(scorer.timing_days)  # p_<h>d and expected_days of a model that has them
    schema = RESULT_SCHEMA + "".join(f", {c} double" for c in when)

    def score_group(raw_leads: pd.DataFrame, raw_events: pd.DataFrame) -> pd.DataFrame:
        rows = raw_leads.sort_values(ROW_INDEX)
        canon = canonical_leads(rows[lead_columns].reset_index(drop=True), lead_source, params, worker_scorer, 1)
        canon[ROW] = rows[ROW_INDEX].to_numpy()
        if event_columns:
            ev = raw_events.sort_values(ROW_INDEX)
            events = canonical_events(ev[event_columns].reset_index(drop=True), event_source, params, 1, as_of)
            events[ROW] = ev[ROW_INDEX].to_numpy()[events.index.to_numpy()]
        else:
            events = EVENT_SCHEMA.empty_table().to_pandas()
        scored, rejects, not_eligible, lost = score_partition(canon, events, worker_scorer, as_of, reasons, include_lost,
                                                              since, steady_within)
        out = [scored.drop(columns=["as_of", "model_version", "run_id"]).assign(kind="scored"),
               rejects.assign(kind="rejected"),
               pd.DataFrame({"kind": ["count"], "not_eligible": [not_eligible], "lost": [lost]})]
        columns = [c.split()[0] for c in schema.split(", ")]
        result = pd.concat(out, ignore_index=True).reindex(columns=columns)
        for column in CHANGE_COLUMNS[1:]:  # text: empty without --since, and on the rejected and count rows
            result[column] = result[column].astype(object).where(result[column].notna(), None)
        # PySpark's Arrow path takes plain object columns for text, not pandas 3's Arrow-backed str.
        return result.astype({c: object for c in columns if pd.api.types.is_string_dtype(result[c])})

    results = (lead_frame.groupBy(PART).cogroup(event_frame.groupBy(PART))
               .applyInPandas(score_group, schema)).cache()
    scored = results.where(F.col("kind") == "scored")
    ordered = scored.orderBy(F.col("probability").desc(), F.col("margin").desc(), F.col("lead_id").asc())
    base = ordered.select("lead_id", "probability", "score", "bucket", *when, *REASON_COLUMNS,
                          *([LOST_SINCE] if include_lost else []), *changes)
    from pyspark.sql.types import LongType, StructField, StructType

    ranked = base.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1] + 1)).toDF(
        StructType([*base.schema.fields, StructField("rank", LongType(), False)]))
    stamp = F.lit(as_of.to_pydatetime()).cast("timestamp")
    ranked = ranked.withColumn("as_of", stamp).withColumn("model_version", F.lit(version)).withColumn(
        "run_id", F.lit(run_id)).select(
        *scorer.output_columns(), *([LOST_SINCE] if include_lost else []), *changes)
    rejected = (results.where(F.col("kind") == "rejected").withColumn("as_of", stamp)
                .withColumn("model_version", F.lit(version)).select(*REJECT_COLUMNS))
    if target.url is not None:
        raise ConfigError("--engine spark writes files or Spark catalog tables, not --db URLs")
    file_output = target.path is not None
    _write(spark, ranked.orderBy("rank"), str(target) if file_output else None, None if file_output else target.table)
    rejects_name = target.rejects_name
    _write(spark, rejected, rejects_name if file_output else None, None if file_output else rejects_name)
    counts = dict(results.groupBy("kind").count().collect())
    buckets = dict(scored.groupBy("bucket").count().collect())
    sources = dict(rejected.groupBy("source").count().collect())
    totals = results.where(F.col("kind") == "count").agg(F.sum("not_eligible"), F.sum("lost")).first()
    not_eligible, lost = totals[0] or 0, totals[1] or 0
    results.unpersist()
    echo(f"spark: {n_leads:,} leads in {n} partitions")
    buckets = {b: int(buckets.get(b, 0)) for b in BUCKETS}
    return BatchResult(
        scored=int(counts.get("scored", 0)), rejected_leads=int(sources.get("leads", 0)),
        rejected_interactions=int(sources.get("interactions", 0)), not_eligible=int(not_eligible), leads_read=n_leads,
        partitions=n, resumed_partitions=0, buckets=buckets, seconds=time.monotonic() - started, target=str(target),
        rejects=str(rejects_name), warnings=bucket_warnings(buckets), lost=int(lost), include_lost=include_lost)


def _write(spark, frame, path, table) -> None:
    """A folder of part files (CSV or Parquet by the name's extension), or a catalog table partition."""
    if path is not None:
        writer = frame.write.mode("overwrite")
        if str(path).lower().endswith(".csv"):
            writer.option("header", True).csv(str(path))
        else:
            writer.parquet(str(path))
        return
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    if spark.catalog.tableExists(table):
        frame.select(*spark.table(table).columns).write.insertInto(table, overwrite=True)
    else:
        frame.write.partitionBy("as_of", "model_version").saveAsTable(table)
