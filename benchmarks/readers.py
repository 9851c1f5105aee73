"""Reading a database table into Python: the candidates for batch scoring's read, on the same tables.

  sqlalchemy   leadtemp's reader before Arrow: rows through SQLAlchemy, made a DataFrame column by column
  adbc         the ADBC driver's Arrow record batches (adbc-driver-sqlite / adbc-driver-postgresql)
  connectorx   connectorx.read_sql(..., return_type="arrow"): the whole result as one Arrow table
  leadtemp     Source.database(...).batches(): what scoring reads now (ADBC, SQLite columns split by storage
               class and put together again, DataFrames)

Reads the interactions table (lead_id, timestamp, type, direction) of benchmarks/scoring.py's CRM.
Usage: python benchmarks/readers.py --sqlite crm.db [--postgres postgresql://user@127.0.0.1:5432/crm]
Prints rows/s per reader (connectorx is a benchmark-only install: pip install connectorx).
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

QUERY = 'SELECT lead_id, "timestamp", type, direction FROM interactions'


def timed(name: str, read) -> None:
    start = time.perf_counter()
    rows = read()
    seconds = time.perf_counter() - start
    print(f"{name:28s} {seconds:7.2f} s {rows / seconds:12,.0f} rows/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite", required=True)
    parser.add_argument("--postgres", help="a libpq URL (postgresql://...)")
    args = parser.parse_args()
    import leadtemp.adapters.sources as sources

    def leadtemp_reader(url: str, arrow: bool = True):
        def read() -> int:
            if arrow:
                return sum(len(b) for b in sources.Source.database(url, "interactions").batches(100_000))
            with mock.patch.object(sources, "_arrow_driver", lambda url: None):
                return sum(len(b) for b in sources.Source.database(url, "interactions").batches(100_000))
        return read

    def adbc(module: str, uri: str):
        def read() -> int:
            import importlib

            dbapi = importlib.import_module(f"{module}.dbapi")
            with dbapi.connect(uri) as conn, conn.cursor() as cursor:
                if module.endswith("sqlite"):
                    cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "100000"})
                cursor.execute(QUERY)
                return sum(b.num_rows for b in cursor.fetch_record_batch())
        return read

    def connectorx(uri: str):
        def read() -> int:
            import connectorx as cx

            return cx.read_sql(uri, QUERY, return_type="arrow").num_rows
        return read

    databases = [("sqlite", f"sqlite:///{args.sqlite}", "adbc_driver_sqlite", args.sqlite, f"sqlite://{args.sqlite}")]
    if args.postgres:
        databases.append(("postgresql", args.postgres.replace("postgresql://", "postgresql+psycopg://"),
                          "adbc_driver_postgresql", args.postgres, args.postgres))
    for name, url, module, adbc_uri, cx_uri in databases:
        timed(f"{name} sqlalchemy", leadtemp_reader(url, arrow=False))
        timed(f"{name} adbc", adbc(module, adbc_uri))
        timed(f"{name} connectorx", connectorx(cx_uri))
        timed(f"{name} leadtemp (adbc, frames)", leadtemp_reader(url))


if __name__ == "__main__":
    main()
