//! The schemas of source tables and seeds, read from their files: the CSV header and values, JSON keys, Parquet
//! metadata or the Delta log, with declared column types applied by name. Compile plans against these schemas, and
//! the build registers sources with exactly the same ones.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTableUrl};

use crate::project::SourceFormat;

/// Arrow type of a SQL type name as written in YAML (`bigint`, `varchar`, `decimal(10,2)`, `timestamp`, ...).
pub fn arrow_type(sql_type: &str) -> Option<DataType> {
    let lower = sql_type.trim().to_ascii_lowercase();
    let (base, args) = match lower.split_once('(') {
        Some((base, rest)) => (base.trim(), Some(rest.trim_end_matches(')'))),
        None => (lower.as_str(), None),
    };
    Some(match base {
        "bigint" | "int8" | "long" | "integer64" => DataType::Int64,
        "int" | "integer" | "int4" => DataType::Int32,
        "smallint" | "int2" => DataType::Int16,
        "tinyint" => DataType::Int8,
        "double" | "double precision" | "float8" => DataType::Float64,
        "float" | "real" | "float4" => DataType::Float32,
        "varchar" | "string" | "text" | "char" | "character varying" => DataType::Utf8,
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "timestamp" | "datetime" | "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" | "timestamp_tz" | "timestamp with time zone" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        "decimal" | "numeric" => {
            let mut parts = args.unwrap_or("38,9").split(',').map(|p| p.trim().parse::<i64>().ok());
            let precision = parts.next().flatten().unwrap_or(38).clamp(1, 38) as u8;
            let scale = parts.next().flatten().unwrap_or(0).clamp(0, precision as i64) as i8;
            DataType::Decimal128(precision, scale)
        }
        _ => return None,
    })
}

/// How to list and read a file source: its URL (path or glob) and listing options.
pub fn listing(
    project_root: &Path,
    path: &str,
    format: SourceFormat,
    settings: &crate::project::SourceSettings,
) -> Result<(ListingTableUrl, ListingOptions), String> {
    let (file_format, extension): (Arc<dyn FileFormat>, &str) = match format {
        SourceFormat::Csv => {
            let format =
                CsvFormat::default().with_has_header(settings.header).with_delimiter(settings.delimiter_byte());
            (Arc::new(format), ".csv")
        }
        SourceFormat::Json => (Arc::new(JsonFormat::default()), ".json"),
        SourceFormat::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
        SourceFormat::Delta => return Err("a Delta source is read through the Delta log, not listed".into()),
    };
    let location = project_root.join(path).to_string_lossy().to_string();
    // A JSON file holding one array of objects, rather than one object per line: DuckDB's `read_json` detects
    // which, and so does pipe, from the first file the path names.
    let file_format: Arc<dyn FileFormat> = match format {
        SourceFormat::Json if first_file(&location).is_some_and(|f| holds_json_array(&f)) => {
            Arc::new(JsonFormat::default().with_newline_delimited(false))
        }
        _ => file_format,
    };
    if format == SourceFormat::Parquet {
        // A file that is not Parquet (a truncated upload, a wrong extension) is named here: the Parquet reader
        // given a footer that points outside the file does not fail cleanly.
        for file in glob::glob(&location).into_iter().flatten().filter_map(Result::ok).filter(|p| p.is_file()) {
            if let Some(problem) = parquet_problem(&file) {
                let shown = file.strip_prefix(project_root).unwrap_or(&file).display().to_string();
                return Err(format!("`{shown}` is not a Parquet file: {problem}"));
            }
        }
    }
    let url = ListingTableUrl::parse(&location).map_err(|e| e.to_string())?;
    Ok((url, ListingOptions::new(file_format).with_file_extension(extension)))
}

/// The first file a path or glob names (a folder: the first file in it).
fn first_file(location: &str) -> Option<std::path::PathBuf> {
    let matched = glob::glob(location).ok()?.filter_map(Result::ok).next()?;
    if matched.is_file() {
        return Some(matched);
    }
    walkdir::WalkDir::new(matched)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
}

/// Whether a JSON file's first value is an array (`[{...}, {...}]`), not one object per line.
fn holds_json_array(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 512];
    let Ok(read) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else { return false };
    let text = head[..read].strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&head[..read]);
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// Why a file cannot be Parquet, from its size, magic bytes and footer length: `None` when it may be.
fn parquet_problem(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) => return Some(err.to_string()),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < 12 {
        return Some(format!("it is {len} bytes, shorter than the smallest Parquet file"));
    }
    let mut head = [0u8; 4];
    let mut tail = [0u8; 8];
    let read =
        file.read_exact(&mut head).and_then(|()| file.seek(SeekFrom::End(-8))).and_then(|_| file.read_exact(&mut tail));
    if let Err(err) = read {
        return Some(err.to_string());
    }
    if &head != b"PAR1" || &tail[4..] != b"PAR1" {
        return Some("it does not start and end with Parquet's `PAR1` marker".into());
    }
    let footer = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if footer + 12 > len {
        return Some(format!("its footer claims {footer} bytes, more than the file holds ({len} bytes)"));
    }
    None
}

/// The schema of the files behind `url`, with `declared` types (column name -> SQL type) applied by name; every
/// column is nullable, as raw data is.
pub async fn infer(
    session: &dyn Session,
    url: &ListingTableUrl,
    listing: &ListingOptions,
    path: &str,
    declared: &BTreeMap<String, String>,
) -> Result<SchemaRef, String> {
    let inferred = listing.infer_schema(session, url).await.map_err(|e| {
        let text = e.strip_backtrace();
        match text.contains("No files found at") {
            true => format!("no file matches `{path}`"),
            false => format!("cannot read `{path}`: {}", crate::sql::clean_message(&text)),
        }
    })?;
    if inferred.fields().is_empty() {
        return Err(format!("`{path}` has no columns: its files are empty (a CSV file needs a header line)"));
    }
    Ok(Arc::new(apply_declared_types(&inferred, declared)))
}

fn apply_declared_types(inferred: &Schema, declared: &BTreeMap<String, String>) -> Schema {
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|field| {
            let declared_type = declared
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(field.name()))
                .and_then(|(_, data_type)| arrow_type(data_type));
            Field::new(field.name(), declared_type.unwrap_or_else(|| field.data_type().clone()), true)
        })
        .collect();
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_type_names() {
        let cases = [
            ("bigint", Some(DataType::Int64)),
            ("VARCHAR", Some(DataType::Utf8)),
            ("decimal(10, 2)", Some(DataType::Decimal128(10, 2))),
            ("timestamp", Some(DataType::Timestamp(TimeUnit::Microsecond, None))),
            ("geometry", None),
        ];
        for (input, expected) in cases {
            assert_eq!(arrow_type(input), expected, "{input}");
        }
    }
}
