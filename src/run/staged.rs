//! A query's result computed once and held for the several readers a write has: an incremental batch is checked
//! for duplicate keys, audited and applied; a microbatch slice audited and written; a snapshot's query compared
//! twice. The rows are held in memory while they fit the run's memory budget (a quarter of `--memory-limit`'s
//! pool, so the checks and the write that read them keep the rest), and otherwise staged on local disk as Arrow
//! IPC files, one per partition of the query, in a temporary folder removed when the [`Staged`] is dropped. Either
//! way the readers get the same rows through [`Staged::frame`]; only the rows staged on disk are re-read from it.
//!
//! Staging also counts the rows and, when asked, digests them (an order-independent digest: the sum of each row's
//! SHA-256 in Arrow's row format), so a batch's identity costs no second pass.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::physical_plan::execute_stream_partitioned;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;

/// The share of a bounded memory pool a staged result may hold before it goes to disk.
const MEMORY_SHARE: usize = 4;

/// A query's rows, computed once: in memory or staged on disk.
pub struct Staged {
    schema: SchemaRef,
    rows: u64,
    digest: Option<RowDigest>,
    held: Held,
}

enum Held {
    /// Per partition of the query, its batches; the reservation accounts for them in the memory pool.
    Memory { partitions: Vec<Vec<RecordBatch>>, _reservation: MemoryReservation },
    /// One Arrow IPC file per partition in `dir` (removed with it).
    Disk { dir: tempfile::TempDir, bytes: u64 },
}

/// What each partition's task shares: the memory held so far and whether the result has gone to disk.
struct Shared {
    reservation: MemoryReservation,
    budget: usize,
    spilling: bool,
    dir: Option<tempfile::TempDir>,
}

/// One partition's rows as its task leaves them.
enum Part {
    Memory(Vec<RecordBatch>),
    Disk { bytes: u64 },
}

impl Staged {
    /// Runs `frame` and holds its rows; with `digest`, also digests them (`None` later when a column's type has
    /// no row format).
    pub async fn new(session: &SessionContext, frame: DataFrame, digest: bool) -> Result<Staged> {
        let plan = frame.create_physical_plan().await?;
        // The executed plan's schema: the one its batches carry (the logical plan's may differ in nullability).
        let schema = plan.schema();
        let streams = execute_stream_partitioned(plan, session.task_ctx())?;
        Staged::from_streams(session, schema, streams, digest).await
    }

    /// `new` for rows computed elsewhere (on a cluster): `streams` carry batches of `schema`, held within
    /// `session`'s memory budget.
    pub async fn from_streams(
        session: &SessionContext,
        schema: SchemaRef,
        streams: Vec<datafusion::physical_plan::SendableRecordBatchStream>,
        digest: bool,
    ) -> Result<Staged> {
        let task = session.task_ctx();
        let pool = Arc::clone(&task.runtime_env().memory_pool);
        let budget = match pool.memory_limit() {
            MemoryLimit::Finite(limit) => limit / MEMORY_SHARE,
            _ => usize::MAX,
        };
        let reservation = MemoryConsumer::new("pipe staged result").register(&pool);
        let shared = Arc::new(Mutex::new(Shared { reservation, budget, spilling: false, dir: None }));
        let mut tasks = tokio::task::JoinSet::new();
        for (partition, mut stream) in streams.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let schema = Arc::clone(&schema);
            tasks.spawn(async move {
                let mut digest = digest.then(RowDigest::default);
                let mut rows = 0u64;
                let mut held: Vec<RecordBatch> = Vec::new();
                let mut file: Option<(PathBuf, FileWriter<std::io::BufWriter<std::fs::File>>)> = None;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    rows += batch.num_rows() as u64;
                    if let Some(d) = digest.as_mut() {
                        if !d.add(&batch) {
                            digest = None;
                        }
                    }
                    if file.is_none() {
                        match keep_in_memory(&shared, &batch) {
                            true => {
                                held.push(batch);
                                continue;
                            }
                            false => {
                                let path = partition_file(&shared, partition)?;
                                let mut writer = open(&path, &schema)?;
                                let size: usize = held.iter().map(RecordBatch::get_array_memory_size).sum();
                                for kept in held.drain(..) {
                                    writer.write(&kept)?;
                                }
                                lock(&shared).reservation.shrink(size);
                                file = Some((path, writer));
                            }
                        }
                    }
                    if let Some((_, writer)) = file.as_mut() {
                        writer.write(&batch)?;
                    }
                }
                let part = match file {
                    Some((path, writer)) => {
                        finish(writer)?;
                        Part::Disk { bytes: std::fs::metadata(&path)?.len() }
                    }
                    None => Part::Memory(held),
                };
                Ok::<_, DataFusionError>((partition, part, rows, digest))
            });
        }
        let mut parts = Vec::new();
        let mut rows = 0;
        let mut total: Option<RowDigest> = digest.then(RowDigest::default);
        let mut digests_complete = digest;
        while let Some(joined) = tasks.join_next().await {
            let (partition, part, partition_rows, partition_digest) =
                joined.map_err(|e| DataFusionError::External(Box::new(e)))??;
            rows += partition_rows;
            match (total.as_mut(), partition_digest) {
                (Some(total), Some(d)) => total.merge(&d),
                _ => digests_complete = false,
            }
            parts.push((partition, part));
        }
        parts.sort_by_key(|(partition, _)| *partition);
        let mut shared = lock(&shared);
        let digest = total.filter(|_| digests_complete);
        let held = match shared.dir.take() {
            None => {
                let partitions = parts
                    .into_iter()
                    .filter_map(|(_, part)| match part {
                        Part::Memory(batches) => Some(batches),
                        Part::Disk { .. } => None,
                    })
                    .collect();
                let reservation = shared.reservation.take();
                Held::Memory { partitions, _reservation: reservation }
            }
            Some(dir) => {
                // Some partitions went to disk: the ones still in memory follow them, so the rows are read from one
                // place.
                let mut bytes = 0;
                for (partition, part) in parts {
                    bytes += match part {
                        Part::Disk { bytes } => bytes,
                        Part::Memory(batches) if batches.is_empty() => 0,
                        Part::Memory(batches) => {
                            let path = dir.path().join(file_name(partition));
                            let mut writer = open(&path, &schema)?;
                            for batch in &batches {
                                writer.write(batch)?;
                            }
                            finish(writer)?;
                            std::fs::metadata(&path)?.len()
                        }
                    };
                }
                shared.reservation.free();
                Held::Disk { dir, bytes }
            }
        };
        Ok(Staged { schema, rows, digest, held })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The rows' digest: their count and the sum of their SHA-256s, as text. `None` when not asked for or when a
    /// column's type has no row format.
    pub fn digest(&self) -> Option<String> {
        self.digest.as_ref().map(|d| d.to_string(self.rows))
    }

    /// Bytes staged on disk (0 when the rows are held in memory).
    pub fn spilled_bytes(&self) -> u64 {
        match &self.held {
            Held::Memory { .. } => 0,
            Held::Disk { bytes, .. } => *bytes,
        }
    }

    /// "staged on disk: 12.5 MiB" when the rows went to disk.
    pub fn spill_note(&self) -> Option<String> {
        match self.spilled_bytes() {
            0 => None,
            bytes => Some(format!("staged on disk: {}", mib(bytes))),
        }
    }

    /// The rows as a table. It reads the staged files while this `Staged` lives, so keep it until the plans
    /// reading the table have run.
    pub fn provider(&self) -> Result<Arc<dyn TableProvider>> {
        match &self.held {
            Held::Memory { partitions, .. } => {
                let mut partitions = partitions.clone();
                if partitions.is_empty() {
                    partitions.push(Vec::new());
                }
                Ok(Arc::new(MemTable::try_new(Arc::clone(&self.schema), partitions)?))
            }
            Held::Disk { dir, .. } => {
                let url = ListingTableUrl::parse(format!("{}/", dir.path().display()))?;
                let options = ListingOptions::new(Arc::new(ArrowFormat)).with_file_extension(".arrow");
                let config =
                    ListingTableConfig::new(url).with_listing_options(options).with_schema(Arc::clone(&self.schema));
                Ok(Arc::new(ListingTable::try_new(config)?))
            }
        }
    }

    /// The rows as a frame of `session` (see [`Staged::provider`]).
    pub fn frame(&self, session: &SessionContext) -> Result<DataFrame> {
        session.read_table(self.provider()?)
    }
}

/// Bytes as MiB with one decimal: "12.5 MiB".
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `batch` may stay in memory: the result has not gone to disk, and the batch fits the budget and the pool.
fn keep_in_memory(shared: &Mutex<Shared>, batch: &RecordBatch) -> bool {
    let mut shared = lock(shared);
    let size = batch.get_array_memory_size();
    if shared.spilling || shared.reservation.size().saturating_add(size) > shared.budget {
        shared.spilling = true;
        return false;
    }
    match shared.reservation.try_grow(size) {
        Ok(()) => true,
        Err(_) => {
            shared.spilling = true;
            false
        }
    }
}

fn file_name(partition: usize) -> String {
    format!("{partition:05}.arrow")
}

/// The file a partition stages its rows in, in the result's folder (made by the first partition that spills).
fn partition_file(shared: &Mutex<Shared>, partition: usize) -> Result<PathBuf> {
    let mut shared = lock(shared);
    if shared.dir.is_none() {
        shared.dir = Some(tempfile::Builder::new().prefix("pipe-staged-").tempdir()?);
    }
    let dir = shared.dir.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default();
    Ok(dir.join(file_name(partition)))
}

fn open(path: &std::path::Path, schema: &SchemaRef) -> Result<FileWriter<std::io::BufWriter<std::fs::File>>> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    Ok(FileWriter::try_new(file, schema)?)
}

/// Writes the file's footer and everything buffered.
fn finish(mut writer: FileWriter<std::io::BufWriter<std::fs::File>>) -> Result<()> {
    use std::io::Write;
    writer.finish()?;
    writer.into_inner()?.flush()?;
    Ok(())
}

/// An order-independent digest of rows: the wrapping sum of each row's SHA-256 (in Arrow's row format), in four
/// 64-bit lanes. Partitions digested apart add up to the digest of the whole.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RowDigest {
    lanes: [u64; 4],
}

impl RowDigest {
    /// Adds a batch's rows; `false` when a column's type has no row format.
    pub fn add(&mut self, batch: &RecordBatch) -> bool {
        use datafusion::arrow::row::{RowConverter, SortField};
        use sha2::{Digest, Sha256};
        let fields: Vec<SortField> =
            batch.schema().fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let Ok(converter) = RowConverter::new(fields) else { return false };
        let Ok(rows) = converter.convert_columns(batch.columns()) else { return false };
        for row in rows.iter() {
            let digest = Sha256::digest(row.as_ref());
            for (lane, chunk) in self.lanes.iter_mut().zip(digest.chunks_exact(8)) {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(chunk);
                *lane = lane.wrapping_add(u64::from_le_bytes(bytes));
            }
        }
        true
    }

    pub fn merge(&mut self, other: &RowDigest) {
        for (lane, other) in self.lanes.iter_mut().zip(other.lanes) {
            *lane = lane.wrapping_add(other);
        }
    }

    /// The digest with the row count in front: `rows(hex)-lanes(hex)`.
    pub fn to_string(&self, rows: u64) -> String {
        let [a, b, c, d] = self.lanes;
        format!("{rows:x}-{a:016x}{b:016x}{c:016x}{d:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::SessionConfig;

    fn session(pool: Option<usize>) -> SessionContext {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = pool {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        let config = SessionConfig::new().with_target_partitions(4).with_batch_size(1000);
        SessionContext::new_with_config_rt(config, runtime.build_arc().unwrap())
    }

    const QUERY: &str = "select v, v % 7 as k, concat('row ', cast(v as varchar)) as s, \
                         arrow_cast(v * 1000, 'Timestamp(Microsecond, Some(\"UTC\"))') as t \
                         from generate_series(1, 50000) as g(v)";

    async fn lines(staged: &Staged, ctx: &SessionContext) -> Vec<String> {
        let batches = staged.frame(ctx).unwrap().collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// Without a limit the rows stay in memory; under a pool too small for them they are staged on disk, and both
    /// read back as the same rows, with the same count and digest and the exact column types.
    #[tokio::test]
    async fn stages_on_disk_under_a_memory_limit_and_reads_back_the_same_rows() {
        let unlimited = session(None);
        let in_memory = Staged::new(&unlimited, unlimited.sql(QUERY).await.unwrap(), true).await.unwrap();
        assert_eq!(in_memory.spilled_bytes(), 0);
        let bounded = session(Some(1 << 20));
        let on_disk = Staged::new(&bounded, bounded.sql(QUERY).await.unwrap(), true).await.unwrap();
        assert!(on_disk.spilled_bytes() > 0, "nothing staged on disk under a 1 MiB pool");
        assert_eq!(on_disk.rows(), 50_000);
        assert_eq!(in_memory.rows(), 50_000);
        assert_eq!(on_disk.digest(), in_memory.digest());
        assert!(in_memory.digest().is_some());
        assert_eq!(on_disk.frame(&bounded).unwrap().schema().as_arrow(), in_memory.schema().as_ref());
        assert_eq!(lines(&on_disk, &bounded).await, lines(&in_memory, &unlimited).await);
        // An aggregate over the staged rows runs from the files.
        let counted = on_disk
            .frame(&bounded)
            .unwrap()
            .aggregate(vec![], vec![datafusion::functions_aggregate::expr_fn::count(datafusion::prelude::lit(1))])
            .unwrap();
        let batches = counted.collect().await.unwrap();
        assert!(pretty_format_batches(&batches).unwrap().to_string().contains("50000"));
        // The staged files go with it.
        let Held::Disk { dir, .. } = &on_disk.held else { panic!("not on disk") };
        let path = dir.path().to_path_buf();
        assert!(path.exists());
        drop(on_disk);
        assert!(!path.exists(), "staged files left behind at {}", path.display());
    }

    /// The digest does not depend on the order of the rows nor on how they are split into batches.
    #[tokio::test]
    async fn the_digest_ignores_row_order() {
        let ctx = session(None);
        let asc = ctx.sql("select v from generate_series(1, 3000) as g(v) order by v").await.unwrap();
        let desc = ctx.sql("select v from generate_series(1, 3000) as g(v) order by v desc").await.unwrap();
        let other = ctx.sql("select v + 1 as v from generate_series(1, 3000) as g(v)").await.unwrap();
        let digest = |frame| {
            let ctx = ctx.clone();
            async move { Staged::new(&ctx, frame, true).await.unwrap().digest().unwrap() }
        };
        let (a, d, o) = (digest(asc).await, digest(desc).await, digest(other).await);
        assert_eq!(a, d);
        assert_ne!(a, o);
        assert!(a.starts_with("bb8-"), "{a}");
    }

    /// An empty result stages nothing and still reads back as an empty table with the query's columns.
    #[tokio::test]
    async fn an_empty_result_reads_back_empty() {
        let ctx = session(None);
        let staged = Staged::new(&ctx, ctx.sql("select 1 as a where false").await.unwrap(), false).await.unwrap();
        assert_eq!(staged.rows(), 0);
        assert_eq!(staged.digest(), None);
        let batches = staged.frame(&ctx).unwrap().collect().await.unwrap();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    }
}
