//! DuckDB's SQL semantics on pipe: every `tests/sql/duckdb/*.slt` file (DataFusion's sqllogictest format) runs in a
//! session with pipe's DuckDB dialect (`pipe::sql::duckdb`), and each query's rows must be the ones DuckDB itself
//! returned: `tests/sql/duckdb_results.py` wrote them with the `duckdb` Python package. Records marked
//! `skipif pipe` are DuckDB behaviours pipe does not have yet; each says which.
//!
//! Values are compared as text in one canonical form, the same one the Python script writes: `NULL`, `true`/
//! `false`, floats rounded to 9 decimals (`3.0`, `0.333333333`), decimals with their scale, timestamps as
//! `2024-01-02 03:04:05[.fraction]`, intervals as their length in seconds (`43200.0s`), lists as `[a, b]`, the
//! empty string as `(empty)`.

use std::path::PathBuf;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};

struct Pipe {
    ctx: SessionContext,
}

#[derive(Debug)]
struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Pipe {
    type Error = Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Error> {
        let error = |e: datafusion::error::DataFusionError| Error(e.strip_backtrace());
        let frame = pipe::sql::duckdb::sql(&self.ctx, sql).await.map_err(error)?;
        let columns = frame.schema().fields().len();
        let batches = frame.collect().await.map_err(error)?;
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                let values: Result<Vec<String>, Error> =
                    batch.columns().iter().map(|column| canonical(column, row)).collect();
                rows.push(values?);
            }
        }
        Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; columns], rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "pipe"
    }
}

fn canonical(column: &ArrayRef, row: usize) -> Result<String, Error> {
    let value = ScalarValue::try_from_array(column, row).map_err(|e| Error(e.to_string()))?;
    Ok(scalar_text(&value))
}

fn float_text(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let rounded = (value * 1e9).round() / 1e9;
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        format!("{}.0", rounded as i64)
    } else {
        format!("{rounded}")
    }
}

fn timestamp_text(value: i64, unit: &TimeUnit) -> String {
    let micros = match unit {
        TimeUnit::Second => value * 1_000_000,
        TimeUnit::Millisecond => value * 1_000,
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value / 1_000,
    };
    pipe::sql::duckdb::timestamp_text(micros)
}

fn scalar_text(value: &ScalarValue) -> String {
    if value.is_null() {
        return "NULL".into();
    }
    match value {
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        ScalarValue::Float16(Some(v)) => float_text(f64::from(*v)),
        ScalarValue::Float32(Some(v)) => float_text(f64::from(*v)),
        ScalarValue::Float64(Some(v)) => float_text(*v),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            if s.is_empty() {
                "(empty)".into()
            } else {
                s.clone()
            }
        }
        ScalarValue::TimestampSecond(Some(v), _) => timestamp_text(*v, &TimeUnit::Second),
        ScalarValue::TimestampMillisecond(Some(v), _) => timestamp_text(*v, &TimeUnit::Millisecond),
        ScalarValue::TimestampMicrosecond(Some(v), _) => timestamp_text(*v, &TimeUnit::Microsecond),
        ScalarValue::TimestampNanosecond(Some(v), _) => timestamp_text(*v, &TimeUnit::Nanosecond),
        // An interval or a duration: its length in seconds (DuckDB's INTERVAL; DataFusion's difference of two
        // timestamps is a duration).
        ScalarValue::DurationSecond(Some(v)) => format!("{}s", float_text(*v as f64)),
        ScalarValue::DurationMillisecond(Some(v)) => format!("{}s", float_text(*v as f64 / 1e3)),
        ScalarValue::DurationMicrosecond(Some(v)) => format!("{}s", float_text(*v as f64 / 1e6)),
        ScalarValue::DurationNanosecond(Some(v)) => format!("{}s", float_text(*v as f64 / 1e9)),
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            format!("{}s", float_text(f64::from(v.days) * 86_400.0 + v.nanoseconds as f64 / 1e9))
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            format!("{}s", float_text(f64::from(v.days) * 86_400.0 + f64::from(v.milliseconds) / 1e3))
        }
        ScalarValue::List(list) => list_text(list.value(0)),
        ScalarValue::LargeList(list) => list_text(list.value(0)),
        ScalarValue::FixedSizeList(list) => list_text(list.value(0)),
        ScalarValue::Struct(array) => {
            let fields: Vec<String> = (0..array.num_columns())
                .map(|i| {
                    let name = match array.data_type() {
                        DataType::Struct(fields) => fields[i].name().clone(),
                        _ => i.to_string(),
                    };
                    let value = ScalarValue::try_from_array(array.column(i), 0).map(|v| scalar_text(&v));
                    format!("{name}: {}", value.unwrap_or_default())
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

fn list_text(items: ArrayRef) -> String {
    let texts: Vec<String> = (0..items.len())
        .map(|i| ScalarValue::try_from_array(&items, i).map(|v| scalar_text(&v)).unwrap_or_default())
        .collect();
    format!("[{}]", texts.join(", "))
}

fn slt_files(dir: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

/// Runs every record of `files` (one failure does not hide the next), each file in a fresh runner over a session
/// from `session`; panics listing every query whose rows differ from DuckDB's.
async fn run_files(files: Vec<PathBuf>, session: impl Fn() -> SessionContext + Clone + Send + 'static) {
    let mut failures = Vec::new();
    let (mut queries, mut skipped) = (0, 0);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        queries += text.lines().filter(|l| l.starts_with("query ")).count();
        skipped += text.lines().filter(|l| l.trim() == "skipif pipe").count();
        let session = session.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let ctx = session();
            async move { Ok(Pipe { ctx }) }
        });
        runner.with_column_validator(|_, _| true);
        runner.add_label("pipe");
        let records = sqllogictest::parse_file::<DefaultColumnType>(&file).unwrap();
        for record in records {
            if let Err(err) = runner.run_async(record).await {
                failures.push(format!("{}", err.display(false)));
            }
        }
    }
    eprintln!("{queries} queries, {skipped} marked `skipif pipe`, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {queries} queries differ from DuckDB:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_dialect_answers_as_duckdb_does() {
    run_files(slt_files("tests/sql/duckdb"), pipe::sql::duckdb::session).await;
}

/// TPC-H at scale factor 0.1: tpchgen (a port of the spec's dbgen) writes the eight tables as `.tbl` files once per
/// target directory, or into `PIPE_TPCH_DIR` when set (the directory `duckdb_results.py --tpch` reads).
fn tpch_data() -> PathBuf {
    use std::io::Write;
    use tpchgen::generators as g;

    let dir = match std::env::var_os("PIPE_TPCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tpch-sf0.1"),
    };
    let done = dir.join("generated");
    if done.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    // dbgen's lines end in `|`; the files here are plain `|`-separated values.
    fn write<T: std::fmt::Display>(dir: &std::path::Path, table: &str, rows: impl Iterator<Item = T>) {
        let file = std::fs::File::create(dir.join(format!("{table}.tbl"))).unwrap();
        let mut out = std::io::BufWriter::new(file);
        for row in rows {
            let line = row.to_string();
            writeln!(out, "{}", line.strip_suffix('|').unwrap_or(&line)).unwrap();
        }
        out.flush().unwrap();
    }
    let sf = 0.1;
    write(&dir, "nation", g::NationGenerator::new(sf, 1, 1).iter());
    write(&dir, "region", g::RegionGenerator::new(sf, 1, 1).iter());
    write(&dir, "part", g::PartGenerator::new(sf, 1, 1).iter());
    write(&dir, "supplier", g::SupplierGenerator::new(sf, 1, 1).iter());
    write(&dir, "partsupp", g::PartSuppGenerator::new(sf, 1, 1).iter());
    write(&dir, "customer", g::CustomerGenerator::new(sf, 1, 1).iter());
    write(&dir, "orders", g::OrderGenerator::new(sf, 1, 1).iter());
    write(&dir, "lineitem", g::LineItemGenerator::new(sf, 1, 1).iter());
    std::fs::write(done, "").unwrap();
    dir
}

/// A DuckDB-mode session with TPC-H's tables: each `create table` of `tests/sql/tpch/schema.sql` is planned (in a
/// scratch session) for its schema, and the table's `.tbl` file is registered with that schema.
async fn tpch_session(data: &std::path::Path) -> SessionContext {
    use datafusion::prelude::CsvReadOptions;

    let schema_sql =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sql/tpch/schema.sql")).unwrap();
    let ctx = pipe::sql::duckdb::session();
    let scratch = SessionContext::new();
    for statement in schema_sql.lines().filter(|l| l.starts_with("create table")) {
        scratch.sql(statement).await.unwrap().collect().await.unwrap();
        let table = statement.split_whitespace().nth(2).unwrap();
        let schema = scratch.table(table).await.unwrap().schema().as_arrow().clone();
        let path = data.join(format!("{table}.tbl"));
        let options = CsvReadOptions::new().has_header(false).delimiter(b'|').file_extension(".tbl").schema(&schema);
        ctx.register_csv(table, path.to_str().unwrap(), options).await.unwrap();
    }
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_as_duckdb_does() {
    let ctx = tpch_session(&tpch_data()).await;
    run_files(slt_files("tests/sql/tpch"), move || ctx.clone()).await;
}
