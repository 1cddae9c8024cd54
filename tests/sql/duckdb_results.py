#!/usr/bin/env python3
"""Writes DuckDB's own answers into the sqllogictest files of `tests/sql/duckdb/` (and, given `--tpch DIR`, of
`tests/sql/tpch/`).

Each `query` record's expected rows are replaced by what DuckDB (the `duckdb` Python package) returns, formatted the
way `tests/sql_logic.rs` formats pipe's results; `statement ok` records are run first, in order, in one connection per
file. Run it after adding or changing a case, and commit the result:

    pip install duckdb && python3 tests/sql/duckdb_results.py

TPC-H's answers need the generated tables: `PIPE_TPCH_DIR=/tmp/tpch cargo test --test sql_logic tpch` writes them
(SF 0.1, tpchgen's `.tbl` files) and then

    python3 tests/sql/duckdb_results.py --tpch /tmp/tpch

creates the tables of `tests/sql/tpch/schema.sql` in DuckDB, loads those files, and answers `tests/sql/tpch/*.slt`.

A query DuckDB refuses is reported and left as it is (make it a `statement error` case, or drop it).
"""

import datetime
import decimal
import math
import pathlib
import sys

import duckdb


def canonical(value):
    """One value as text: the same rules as `canonical` in tests/sql_logic.rs."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        rounded = round(value, 9)
        if rounded == int(rounded) and abs(rounded) < 1e15:
            return f"{int(rounded)}.0"
        return repr(rounded)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return canonical(value.total_seconds()) + "s"
    if isinstance(value, datetime.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        if value.microsecond:
            text += (".%06d" % value.microsecond).rstrip("0")
        return text
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {canonical(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if text != "" else "(empty)"


def records(lines):
    """Splits a file into records: (kind, header line, sql lines, the lines that follow up to the next record)."""
    i = 0
    out = []
    while i < len(lines):
        line = lines[i]
        if line.startswith("query ") or line.startswith("statement "):
            header = line
            i += 1
            sql = []
            while i < len(lines) and lines[i].strip() not in ("", "----"):
                sql.append(lines[i])
                i += 1
            rest = []
            if i < len(lines) and lines[i].strip() == "----":
                i += 1
                while i < len(lines) and lines[i].strip() != "":
                    i += 1
            out.append(("record", header, sql))
        else:
            out.append(("text", line, None))
            i += 1
    return out


def answer(path, connection):
    """Rewrites one `.slt` file with DuckDB's answers; returns the number of problems."""
    failures = 0
    lines = path.read_text().splitlines()
    written = []
    for kind, header, sql in records(lines):
        if kind == "text":
            written.append(header)
            continue
        text = "\n".join(sql)
        written.append(header)
        written.extend(sql)
        if header.startswith("statement"):
            try:
                connection.execute(text)
                if header.strip() == "statement error":
                    print(f"{path.name}: DuckDB accepted `{text}`, marked an error", file=sys.stderr)
                    failures += 1
            except duckdb.Error as err:
                if header.strip() != "statement error":
                    print(f"{path.name}: DuckDB refused `{text}`: {err}", file=sys.stderr)
                    failures += 1
            continue
        try:
            rows = connection.execute(text).fetchall()
        except duckdb.Error as err:
            print(f"{path.name}: DuckDB refused `{text}`: {err}", file=sys.stderr)
            failures += 1
            continue
        if "rowsort" in header.split():
            rows = sorted(rows, key=lambda row: [canonical(v) for v in row])
        written.append("----")
        written.extend(" ".join(canonical(v) for v in row) for row in rows)
    path.write_text("\n".join(written).rstrip("\n") + "\n")
    return failures


def tpch_connection(data):
    """A connection holding TPC-H's tables, loaded from the `.tbl` files in `data`."""
    connection = duckdb.connect()
    schema = pathlib.Path(__file__).parent / "tpch" / "schema.sql"
    for line in schema.read_text().splitlines():
        if not line.startswith("create table"):
            continue
        connection.execute(line)
        table = line.split()[2]
        source = pathlib.Path(data) / f"{table}.tbl"
        connection.execute(f"copy {table} from '{source}' (delimiter '|', header false, quote '')")
    return connection


def main():
    here = pathlib.Path(__file__).parent
    failures = 0
    for path in sorted((here / "duckdb").glob("*.slt")):
        failures += answer(path, duckdb.connect())
    if len(sys.argv) == 3 and sys.argv[1] == "--tpch":
        connection = tpch_connection(sys.argv[2])
        for path in sorted((here / "tpch").glob("*.slt")):
            failures += answer(path, connection)
    print(f"duckdb {duckdb.__version__}: {failures} problem(s)", file=sys.stderr)
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
