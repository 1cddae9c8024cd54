//! dbt-duckdb's `external`: the model's result written as files at its `location` (one Parquet, CSV or JSON file,
//! or with `partition_by` a folder of Hive-style partitions), then read back under its relation, so downstream
//! models and `pipe query` see it as dbt-duckdb's view over the files.
//!
//! The write is atomic for readers of the location: the files go to a temporary sibling first, which then replaces
//! the location by a rename (a folder: the old one is moved aside, the new one moved in, the old one deleted). A
//! failed build leaves the previous files as they were.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::TableProvider;
use datafusion::common::config::{CsvOptions, JsonOptions};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;

use super::{accounted, plan_query, Materialize, ModelContext, Outcome};
use crate::project::settings::ExternalFormat;
use crate::project::Materialization;
use crate::run::RunError;
use crate::warehouse::ExternalDefinition;

pub struct ExternalMaterialization;

#[async_trait::async_trait]
impl Materialize for ExternalMaterialization {
    fn kind(&self) -> Materialization {
        Materialization::External
    }

    async fn run(&self, cx: &ModelContext<'_>) -> Result<Outcome, RunError> {
        let node = cx.node;
        let settings =
            node.settings.external.as_ref().ok_or_else(|| {
                RunError::Internal(format!("external model `{}` has no external settings", node.name))
            })?;
        let started = Instant::now();
        let frame = plan_query(cx, &node.compiled_sql).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        for column in &settings.partition_by {
            if schema.field_with_name(column).is_err() {
                return Err(RunError::write_text(
                    &node.name,
                    &format!("`partition_by` names `{column}`, which is not a column of the model"),
                ));
            }
        }
        let plan_time = started.elapsed();
        let started = Instant::now();
        let location = absolute(cx.project_root, &settings.location);
        let parent = location.parent().map(Path::to_path_buf).unwrap_or_else(|| cx.project_root.to_path_buf());
        std::fs::create_dir_all(&parent).map_err(|e| RunError::io(&parent, e))?;
        let file_name = location.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let staged = parent.join(format!(".{file_name}.pipe-{}", cx.run_id));
        remove(&staged).map_err(|e| RunError::io(&staged, e))?;
        let partitioned = !settings.partition_by.is_empty();
        let options = DataFrameWriteOptions::new()
            .with_single_file_output(!partitioned)
            .with_partition_by(settings.partition_by.clone());
        // A folder path ends with `/`: DataFusion writes partitions (or files) into it.
        let target = match partitioned {
            true => format!("{}/", staged.display()),
            false => staged.display().to_string(),
        };
        let frame = accounted(cx, frame);
        let written = match settings.format {
            ExternalFormat::Parquet => frame.write_parquet(&target, options, None).await,
            ExternalFormat::Csv => {
                let csv = CsvOptions::default().with_has_header(true).with_delimiter(settings.delimiter as u8);
                frame.write_csv(&target, options, Some(csv)).await
            }
            ExternalFormat::Json => frame.write_json(&target, options, Some(JsonOptions::default())).await,
        };
        let batches = match written {
            Ok(batches) => batches,
            Err(err) => {
                let _ = remove(&staged);
                return Err(RunError::query(&node.name, err));
            }
        };
        let rows: u64 = batches
            .iter()
            .filter_map(|b| b.column(0).as_any().downcast_ref::<UInt64Array>().map(|c| c.iter().flatten().sum::<u64>()))
            .sum();
        replace(&staged, &location).map_err(|e| RunError::io(&location, e))?;
        let definition = ExternalDefinition {
            relation: node.relation.clone(),
            unique_id: node.unique_id.clone(),
            location: location.clone(),
            format: settings.format.extension().to_string(),
            delimiter: settings.delimiter,
            partition_by: settings.partition_by.clone(),
            columns: schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect(),
            checksum: node.checksum.clone(),
            run_id: cx.run_id.to_string(),
        };
        cx.warehouse.write_external(&definition).await?;
        let provider = provider(cx.session, &definition).await.map_err(|e| RunError::query(&node.name, e))?;
        Ok(Outcome {
            rows_written: Some(rows),
            delta_version: None,
            provider: Some(provider),
            note: Some(format!("wrote {} ({})", settings.location, settings.format.extension())),
            plan_time,
            write_time: started.elapsed(),
            execute_time: None,
            tests: None,
            rows_read: None,
        })
    }
}

/// The relation of a built external model: its files, read with the types and column order they were written with.
pub async fn provider(
    session: &SessionContext,
    definition: &ExternalDefinition,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = definition
        .columns
        .iter()
        .map(|(name, data_type)| Ok(Field::new(name, data_type.parse::<DataType>()?, true)))
        .collect::<Result<_, datafusion::arrow::error::ArrowError>>()?;
    let is_partition = |name: &str| definition.partition_by.iter().any(|p| p == name);
    let file_schema = Schema::new(fields.iter().filter(|f| !is_partition(f.name())).cloned().collect::<Vec<_>>());
    let partition_cols: Vec<(String, DataType)> = definition
        .partition_by
        .iter()
        .filter_map(|p| fields.iter().find(|f| f.name() == p).map(|f| (p.clone(), f.data_type().clone())))
        .collect();
    let format: Arc<dyn FileFormat> = match ExternalFormat::parse(&definition.format) {
        Some(ExternalFormat::Csv) => {
            Arc::new(CsvFormat::default().with_has_header(true).with_delimiter(definition.delimiter as u8))
        }
        Some(ExternalFormat::Json) => Arc::new(JsonFormat::default()),
        _ => Arc::new(ParquetFormat::default()),
    };
    let location = match definition.partition_by.is_empty() {
        true => definition.location.display().to_string(),
        false => format!("{}/", definition.location.display()),
    };
    let url = ListingTableUrl::parse(&location)?;
    let options = ListingOptions::new(format).with_file_extension("").with_table_partition_cols(partition_cols);
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(Arc::new(file_schema));
    let table = Arc::new(ListingTable::try_new(config)?);
    // Partition columns come last in a listing; the model's own order is restored on top.
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    let frame = session.read_table(table)?.select_columns(&names)?;
    Ok(Arc::new(ViewTable::new(frame.logical_plan().clone(), None)))
}

fn absolute(project_root: &Path, location: &str) -> PathBuf {
    let path = Path::new(location.trim_end_matches('/'));
    match path.is_absolute() {
        true => path.to_path_buf(),
        false => project_root.join(path),
    }
}

/// Removes a file or folder, if there is one.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Puts `staged` at `location`: a file by one rename; a folder (or a file replaced by a folder, or the reverse) by
/// moving the old one aside first.
fn replace(staged: &Path, location: &Path) -> std::io::Result<()> {
    let same_kind_file = staged.is_file() && !location.is_dir();
    if same_kind_file {
        return std::fs::rename(staged, location);
    }
    let aside = location.with_file_name(format!(
        ".{}.pipe-old",
        location.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    remove(&aside)?;
    if location.exists() {
        std::fs::rename(location, &aside)?;
    }
    std::fs::rename(staged, location)?;
    remove(&aside)
}
