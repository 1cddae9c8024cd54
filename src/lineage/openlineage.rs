//! OpenLineage run events (spec 2-0-2): a START when a model begins and a COMPLETE or FAIL when it ends, sharing
//! one run id, with the model's input and output datasets, their schema, the output's column lineage and row
//! count. Events go, in order, to `target/openlineage.ndjson` and, with `--openlineage-url`, by HTTP POST to a
//! collector such as Marquez. Delivery runs on a background task so a slow collector never holds a model back;
//! a collector that is down costs a warning, never the build.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::manifest::{Manifest, Node};
use crate::warehouse::results::{NodeResult, NodeStatus};

pub const SPEC_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
pub const PRODUCER: &str = concat!("urn:pipe:", env!("CARGO_PKG_VERSION"));
const SCHEMA_FACET: &str = "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet";
const COLUMN_LINEAGE_FACET: &str =
    "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet";
const OUTPUT_STATISTICS_FACET: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";
const ERROR_FACET: &str =
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";
const SQL_FACET: &str = "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet";
const JOB_TYPE_FACET: &str = "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet";
/// Every dataset pipe reads or writes is a local path: OpenLineage's naming for local files.
const FILE_NAMESPACE: &str = "file";

/// Where events go.
#[derive(Debug, Clone)]
pub struct Transport {
    pub file: PathBuf,
    /// The collector's endpoint (a bare `http://host:port` gets OpenLineage's `/api/v1/lineage`).
    pub url: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
}

impl Transport {
    pub fn new(target: &Path, url: Option<&str>) -> Transport {
        let url = url.map(|u| match url::Url::parse(u) {
            Ok(parsed) if parsed.path() == "/" || parsed.path().is_empty() => {
                format!("{}/api/v1/lineage", u.trim_end_matches('/'))
            }
            _ => u.to_string(),
        });
        Transport { file: target.join("openlineage.ndjson"), url, timeout: Duration::from_secs(5), retries: 3 }
    }
}

/// What delivery came to, for the end of the build.
#[derive(Debug, Default, Clone)]
pub struct Delivery {
    pub events: usize,
    pub posted: usize,
    pub failed: usize,
    /// Of `failed`, the events not sent because the delivery deadline after the build had passed.
    pub left_at_deadline: usize,
    pub last_error: Option<String>,
}

/// Sends events in the order they are emitted, from a background task.
#[derive(Debug)]
pub struct Emitter {
    sender: Mutex<Option<mpsc::UnboundedSender<Value>>>,
    /// Set by `close`: past it, events are only written to the file.
    deadline: Arc<Mutex<Option<tokio::time::Instant>>>,
    task: Mutex<Option<tokio::task::JoinHandle<Delivery>>>,
    namespace: String,
    /// Each model's, seed's and source's dataset name (an absolute path, or a table's URL in a bucket), by unique
    /// id and by relation.
    names: std::collections::BTreeMap<String, String>,
}

impl Emitter {
    /// Starts the delivery task on the current tokio runtime, for the datasets of `manifest`.
    pub fn start(
        transport: Transport,
        manifest: &Manifest,
        project_root: &Path,
        warehouse: &crate::warehouse::Location,
    ) -> Emitter {
        let (sender, receiver) = mpsc::unbounded_channel();
        let deadline = Arc::new(Mutex::new(None));
        let task = tokio::spawn(deliver(transport, receiver, Arc::clone(&deadline)));
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let project_root = absolute(project_root);
        let mut names = std::collections::BTreeMap::new();
        for node in manifest.nodes.values() {
            let Some(path) = warehouse.table_address(&node.relation) else { continue };
            names.insert(node.relation.clone(), path.clone());
            names.insert(node.unique_id.clone(), path);
        }
        for source in manifest.sources.values() {
            let path = match &source.path {
                Some(path) => project_root.join(path).to_string_lossy().into_owned(),
                None => source.relation.clone(),
            };
            names.insert(source.relation.clone(), path.clone());
            names.insert(source.unique_id.clone(), path);
        }
        Emitter {
            sender: Mutex::new(Some(sender)),
            deadline,
            task: Mutex::new(Some(task)),
            namespace: manifest.project.name.clone(),
            names,
        }
    }

    /// A dataset's name: the absolute path of its Delta table or source files (the relation when unknown).
    fn name(&self, key: &str) -> String {
        self.names.get(key).cloned().unwrap_or_else(|| key.to_string())
    }

    fn emit(&self, event: Value) {
        if let Some(sender) = self.sender.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = sender.send(event);
        }
    }

    /// Stops accepting events and waits for every emitted one to be delivered (or given up on).
    /// Waits for the events still queued, at most `deadline` more: past it, the rest are written to the file only
    /// (a slow collector never holds the end of a build by its latency times the events).
    pub async fn close(&self, deadline: Duration) -> Delivery {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now() + deadline);
        drop(self.sender.lock().unwrap_or_else(|e| e.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        match task {
            Some(task) => task.await.unwrap_or_default(),
            None => Delivery::default(),
        }
    }

    fn event(
        &self,
        event_type: &str,
        run_id: &str,
        manifest: &Manifest,
        node: &Node,
        result: Option<&NodeResult>,
        plan: Option<&datafusion::logical_expr::LogicalPlan>,
    ) -> Value {
        let facet = |schema_url: &str, body: Value| {
            let mut body = body;
            body["_producer"] = json!(PRODUCER);
            body["_schemaURL"] = json!(schema_url);
            body
        };
        // What the node reads, looking through ephemeral models (inlined, so never a dataset).
        let upstreams: std::collections::BTreeSet<&str> =
            node.depends_on.nodes.iter().flat_map(|up| crate::manifest::effective_upstreams(manifest, up)).collect();
        let inputs: Vec<Value> = upstreams
            .into_iter()
            .filter_map(|id| {
                let (name, columns) = self.dataset(manifest, id)?;
                Some(json!({
                    "namespace": FILE_NAMESPACE,
                    "name": name,
                    "facets": { "schema": facet(SCHEMA_FACET, json!({ "fields": columns })) },
                }))
            })
            .collect();
        let (output_name, output_columns) =
            self.dataset(manifest, &node.unique_id).unwrap_or_else(|| (node.relation.clone(), Vec::new()));
        let mut output_facets = json!({ "schema": facet(SCHEMA_FACET, json!({ "fields": output_columns })) });
        if let Some(plan) = plan {
            output_facets["columnLineage"] = facet(COLUMN_LINEAGE_FACET, self.column_lineage(plan));
        }
        let mut output = json!({ "namespace": FILE_NAMESPACE, "name": output_name, "facets": output_facets });
        if let Some(rows) = result.and_then(|r| r.rows_written) {
            output["outputFacets"] =
                json!({ "outputStatistics": facet(OUTPUT_STATISTICS_FACET, json!({ "rowCount": rows })) });
        }
        let mut run_facets = json!({});
        if let Some(result) = result.filter(|r| r.status != NodeStatus::Success) {
            let message = result.message.clone().unwrap_or_else(|| "failed".into());
            run_facets["errorMessage"] =
                facet(ERROR_FACET, json!({ "message": message, "programmingLanguage": "SQL" }));
        }
        let job_type = match node.resource_type {
            crate::manifest::NodeKind::Seed => "SEED",
            crate::manifest::NodeKind::Model => "MODEL",
            crate::manifest::NodeKind::Snapshot => "SNAPSHOT",
        };
        let mut job_facets = json!({
            "jobType": facet(JOB_TYPE_FACET, json!({ "processingType": "BATCH", "integration": "PIPE", "jobType": job_type })),
        });
        if !node.compiled_sql.is_empty() {
            job_facets["sql"] = facet(SQL_FACET, json!({ "query": node.compiled_sql }));
        }
        json!({
            "eventType": event_type,
            "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "producer": PRODUCER,
            "schemaURL": SPEC_URL,
            "run": { "runId": run_id, "facets": run_facets },
            "job": {
                "namespace": self.namespace,
                "name": node.name,
                "facets": job_facets,
            },
            "inputs": inputs,
            "outputs": [output],
        })
    }

    /// A dataset's name and schema fields, for a node or source id of the manifest.
    fn dataset(&self, manifest: &Manifest, id: &str) -> Option<(String, Vec<Value>)> {
        let columns = match manifest.nodes.get(id) {
            Some(node) => &node.planned_columns,
            None => &manifest.sources.get(id)?.planned_columns,
        };
        let fields = columns.iter().flatten().map(|c| json!({ "name": c.name, "type": c.data_type })).collect();
        Some((self.name(id), fields))
    }

    /// The columnLineage facet's body: per output column its input fields, with OpenLineage's transformation
    /// types; the columns that only filter or join as dataset-level indirect inputs.
    fn column_lineage(&self, plan: &datafusion::logical_expr::LogicalPlan) -> Value {
        let lineage = super::model_lineage(plan);
        let mut fields = serde_json::Map::new();
        for (column, sources) in lineage.columns {
            let inputs: Vec<Value> = sources
                .iter()
                .map(|s| {
                    let subtype = match s.kind {
                        super::Kind::Copied => "IDENTITY",
                        super::Kind::Transformed => "TRANSFORMATION",
                        super::Kind::Aggregated => "AGGREGATION",
                    };
                    json!({
                        "namespace": FILE_NAMESPACE,
                        "name": self.name(&s.relation),
                        "field": s.column,
                        "transformations": [{ "type": "DIRECT", "subtype": subtype }],
                    })
                })
                .collect();
            fields.insert(column, json!({ "inputFields": inputs }));
        }
        let dataset: Vec<Value> = lineage
            .row_deciders
            .iter()
            .map(|(relation, column)| {
                json!({
                    "namespace": FILE_NAMESPACE,
                    "name": self.name(relation),
                    "field": column,
                    "transformations": [{ "type": "INDIRECT", "subtype": "FILTER", "description": "filter or join condition" }],
                })
            })
            .collect();
        json!({ "fields": fields, "dataset": dataset })
    }
}

async fn deliver(
    transport: Transport,
    mut events: mpsc::UnboundedReceiver<Value>,
    deadline: Arc<Mutex<Option<tokio::time::Instant>>>,
) -> Delivery {
    let deadline = || *deadline.lock().unwrap_or_else(|e| e.into_inner());
    let passed = || deadline().is_some_and(|at| tokio::time::Instant::now() >= at);
    use std::io::Write as _;
    let mut delivery = Delivery::default();
    let mut file = match std::fs::OpenOptions::new().create(true).append(true).open(&transport.file) {
        Ok(file) => Some(file),
        Err(err) => {
            delivery.last_error = Some(format!("{}: {err}", transport.file.display()));
            None
        }
    };
    let client = reqwest::Client::builder().timeout(transport.timeout).build().ok();
    // A collector that failed two events in a row (each after its retries) is taken to be down: the rest of the
    // run's events are only written to the file.
    let mut failed_in_a_row = 0;
    while let Some(event) = events.recv().await {
        delivery.events += 1;
        // The sql facet and error messages may hold a secret used through `env_var()`.
        let body = crate::secrets::mask(&serde_json::to_string(&event).unwrap_or_default()).into_owned().into_bytes();
        if let Some(file) = file.as_mut() {
            let _ = file.write_all(&body).and_then(|_| file.write_all(b"\n"));
        }
        let (Some(url), Some(client)) = (&transport.url, &client) else { continue };
        if failed_in_a_row >= 2 {
            delivery.failed += 1;
            continue;
        }
        if passed() {
            delivery.failed += 1;
            delivery.left_at_deadline += 1;
            continue;
        }
        let mut attempt = 0;
        loop {
            let post =
                client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone()).send();
            let sent = match deadline() {
                Some(at) => match tokio::time::timeout_at(at, post).await {
                    Ok(sent) => sent.map_err(|e| e.to_string()),
                    Err(_) => Err("the delivery deadline passed".to_string()),
                },
                None => post.await.map_err(|e| e.to_string()),
            };
            let sent = sent.and_then(|r| match r.status().is_success() {
                true => Ok(()),
                false => Err(format!("HTTP {}", r.status())),
            });
            if sent.is_err() && passed() {
                delivery.failed += 1;
                delivery.left_at_deadline += 1;
                break;
            }
            match sent {
                Ok(()) => {
                    delivery.posted += 1;
                    failed_in_a_row = 0;
                    break;
                }
                Err(err) if attempt + 1 < transport.retries => {
                    attempt += 1;
                    delivery.last_error = Some(err);
                    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
                }
                Err(err) => {
                    delivery.failed += 1;
                    delivery.last_error = Some(err);
                    failed_in_a_row += 1;
                    break;
                }
            }
        }
    }
    delivery
}

impl crate::run::BuildEvents for Emitter {
    /// The START event of a model's run; returns the run id its COMPLETE or FAIL repeats.
    fn started(&self, manifest: &Manifest, node: &Node) -> String {
        let run_id = uuid::Uuid::new_v4().to_string();
        let event = self.event("START", &run_id, manifest, node, None, None);
        self.emit(event);
        run_id
    }

    /// The COMPLETE (or FAIL) event of the run `run_id`, with the output's column lineage from `plan`.
    fn finished(
        &self,
        run_id: &str,
        manifest: &Manifest,
        node: &Node,
        result: &NodeResult,
        plan: Option<&datafusion::logical_expr::LogicalPlan>,
    ) {
        let event_type = match result.status {
            NodeStatus::Success => "COMPLETE",
            _ => "FAIL",
        };
        let event = self.event(event_type, run_id, manifest, node, Some(result), plan);
        self.emit(event);
    }
}
