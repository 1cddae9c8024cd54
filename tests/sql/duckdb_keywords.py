#!/usr/bin/env python3
"""Writes `src/sql/duckdb/keywords.rs`: DuckDB's keywords, from `duckdb_keywords()` of the `duckdb` Python package.

DuckDB quotes a name that is one of its keywords when it names an unaliased column (`lower("name")`); pipe's DuckDB
mode names columns the same way (`src/sql/duckdb/names.rs`). Run after a DuckDB upgrade and commit the result:

    python3 tests/sql/duckdb_keywords.py
"""

import pathlib

import duckdb

words = sorted(row[0] for row in duckdb.connect().execute("select keyword_name from duckdb_keywords()").fetchall())
target = pathlib.Path(__file__).parents[2] / "src" / "sql" / "duckdb" / "keywords.rs"
lines = [
    f"//! DuckDB {duckdb.__version__}'s keywords (`duckdb_keywords()`), sorted; written by `tests/sql/duckdb_keywords.py`.",
    "",
    "pub(super) const KEYWORDS: &[&str] = &[",
]
lines += [f'    "{word}",' for word in words]
lines += ["];", ""]
target.write_text("\n".join(lines))
print(f"{len(words)} keywords written to {target}")
