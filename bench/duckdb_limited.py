#!/usr/bin/env python3
"""DuckDB alone under a memory limit: runs a dbt project's compiled models (target/compiled, after `dbt compile`)
as tables in dependency order in one DuckDB database, with `memory_limit` set (DuckDB spills to its temp folder).
usage: duckdb_limited.py PROJECT_DIR [MEMORY_LIMIT]   (e.g. 4GiB; default: DuckDB's own, 80% of RAM)"""
import os, re, sys, time
from pathlib import Path

import duckdb

project = Path(sys.argv[1])
limit = sys.argv[2] if len(sys.argv) > 2 else None
models = {path.stem: path.read_text() for path in (project / "target" / "compiled").rglob("*.sql")}
con = duckdb.connect(":memory:")
if limit:
    con.execute(f"set memory_limit = '{limit}'")
con.execute(f"set temp_directory = '{project / '.duckdb_tmp'}'")
os.chdir(project)
reference = re.compile(r'(?:"[^"]*"\.)?"main"\."(\w+)"')
built, started = set(), time.time()
while len(built) < len(models):
    progress = False
    for name, sql in models.items():
        needs = {m for m in reference.findall(sql) if m in models}
        if name in built or not needs <= built:
            continue
        con.execute(f'create table "{name}" as {reference.sub(lambda m: m.group(1), sql)}')
        built.add(name)
        progress = True
    if not progress:
        sys.exit(f"models waiting on each other: {sorted(set(models) - built)}")
print(f"duckdb alone: {len(built)} tables in {time.time() - started:.2f} s (memory_limit={limit or 'default'})")
