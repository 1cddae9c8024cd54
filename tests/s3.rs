//! A warehouse in a bucket (cargo feature `s3`): a real S3-compatible server (moto's, `moto_server`, which
//! `.ci/run` installs) on 127.0.0.1, started and stopped here. pipe reads its endpoint and credentials from the
//! standard AWS variables.
#![cfg(feature = "s3")]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use pipe::warehouse::lease::Lease;

/// An S3-compatible server, killed when dropped.
struct Server {
    endpoint: String,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// HTTP/1.1 `method` on `path` of the server; the status code.
fn request(endpoint: &str, method: &str, path: &str) -> Option<u16> {
    let address = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_millis(200)).ok()?;
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// moto's S3 server with the bucket `warehouse`.
fn server() -> Server {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("`moto_server` (pip install 'moto[server]') runs the S3-compatible server of these tests");
    let server = Server { endpoint, child };
    let started = Instant::now();
    while request(&server.endpoint, "GET", "/").is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(request(&server.endpoint, "PUT", "/warehouse"), Some(200), "bucket not created");
    server
}

const AWS: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "pipe-test"),
    ("AWS_SECRET_ACCESS_KEY", "pipe-test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ALLOW_HTTP", "true"),
];

/// `pipe args` in `dir`, with the server's endpoint and credentials in the standard AWS variables.
fn pipe_command(server: &Server, dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
    command.current_dir(dir).env("NO_COLOR", "1").env_remove("PIPE_LOG").env("AWS_ENDPOINT_URL", &server.endpoint);
    for (key, value) in AWS {
        command.env(key, value);
    }
    command.args(args);
    command
}

fn pipe(server: &Server, dir: &Path, args: &[&str]) -> Output {
    pipe_command(server, dir, args).output().unwrap()
}

/// The example project with its warehouse at `url`.
fn example_in(url: &str) -> tempfile::TempDir {
    let project = support::example_project();
    let file = project.path().join("pipe.yml");
    let text =
        std::fs::read_to_string(&file).unwrap().replace("warehouse: warehouse\n", &format!("warehouse: {url}\n"));
    std::fs::write(&file, text).unwrap();
    project
}

/// Every table of the example project as `support::dump` gives it, read with `pipe query` with the bucket's variables.
fn dump(server: &Server, dir: &Path) -> String {
    support::dump_with(&|args| pipe(server, dir, args))
}

fn query(server: &Server, dir: &Path, sql: &str) -> String {
    let output = pipe(server, dir, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{sql}: {}", support::text(&output.stderr));
    support::text(&output.stdout)
}

/// CSV with its rows sorted.
fn sorted(csv: &str) -> Vec<String> {
    let mut rows: Vec<String> = csv.lines().map(str::to_string).collect();
    rows[1..].sort();
    rows
}

/// The store of the bucket as a test sees it (the server's endpoint and credentials as options, not variables).
fn store(server: &Server, prefix: &str) -> Arc<dyn ObjectStore> {
    let url = url::Url::parse(&format!("s3://warehouse/{prefix}/")).unwrap();
    let mut options: Vec<(String, String)> = vec![("aws_endpoint".into(), server.endpoint.clone())];
    options.extend(AWS.iter().map(|(k, v)| (k.to_lowercase(), v.to_string())));
    deltalake::logstore::store_for(&url, options).unwrap()
}

/// Tables, views, run history, the schema registry, time travel and `pipe query` with the warehouse in a bucket
/// (named by the profile's target): the example project's tables are a local folder's, and no warehouse folder is
/// made.
#[test]
fn the_example_project_builds_in_a_bucket_with_the_tables_of_a_local_folder() {
    let server = server();
    let local = support::example_project();
    let built = support::pipe(local.path(), &["build"]);
    assert_eq!(built.status.code(), Some(0), "{}", support::text(&built.stderr));

    // The profile's target names the bucket (the project file's `warehouse: warehouse` is the dev folder).
    let remote = support::example_project();
    std::fs::write(
        remote.path().join("profiles.yml"),
        "shop:\n  target: prod\n  outputs:\n    dev: {type: duckdb}\n    prod: {type: duckdb, warehouse: 's3://warehouse/example'}\n",
    )
    .unwrap();
    let built = pipe(&server, remote.path(), &["build"]);
    assert_eq!(built.status.code(), Some(0), "{}", support::text(&built.stderr));
    assert_eq!(dump(&server, remote.path()), dump(&server, local.path()));
    assert!(!remote.path().join("warehouse").exists(), "nothing is written to a local warehouse folder");
    assert!(!remote.path().join("s3:").exists());

    // The objects are where any Delta reader finds them.
    let store = store(&server, "example");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let logs: Vec<String> = runtime.block_on(async {
        use futures::TryStreamExt;
        let listed: Vec<_> = store.list(Some(&"gold/gld_daily_revenue/_delta_log".into())).try_collect().await.unwrap();
        listed.into_iter().map(|o| o.location.to_string()).collect()
    });
    assert!(logs.iter().any(|l| l.ends_with("00000000000000000000.json")), "{logs:?}");

    // Again: one more version of each table; the first is read back as it was.
    let before = sorted(&query(&server, remote.path(), "select * from gold.gld_daily_revenue"));
    let again = pipe(&server, remote.path(), &["build"]);
    assert_eq!(again.status.code(), Some(0), "{}", support::text(&again.stderr));
    let history = pipe(&server, remote.path(), &["history", "gld_daily_revenue", "-o", "csv"]);
    let shown = support::text(&history.stdout);
    assert_eq!(history.status.code(), Some(0), "{}", support::text(&history.stderr));
    assert_eq!(
        shown.lines().count(),
        3,
        "a header and two versions:
{shown}"
    );
    let as_of = query(&server, remote.path(), "select * from gold.gld_daily_revenue version as of 0");
    assert_eq!(sorted(&as_of), before);

    // Run history and the schema registry live in the bucket too.
    let runs = query(&server, remote.path(), "select count(*) as runs from pipe.runs");
    assert_eq!(runs, "runs\n2\n");
    let schemas = query(&server, remote.path(), "select count(distinct relation) as n from pipe.schemas");
    assert_ne!(schemas, "n\n0\n", "{schemas}");
    let diff = pipe(&server, remote.path(), &["schema", "diff", "slv_orders"]);
    assert!(support::text(&diff.stdout).contains("registered version 1"), "{}", support::text(&diff.stdout));

    // `pipe debug` checks the bucket can be written.
    let debug = pipe(&server, remote.path(), &["debug"]);
    let said = support::text(&debug.stderr);
    assert!(said.contains("s3://warehouse/example/ [OK writable"), "{said}");
}

/// The bucket's endpoint, region and credentials from the profile target, as a dbt-duckdb project writes them
/// (`settings: s3_*`), with no AWS variable set: the build, `pipe query` and `pipe debug` reach the bucket, and
/// the secret is not written to the manifest.
#[test]
fn a_profile_targets_s3_settings_reach_the_bucket_without_aws_variables() {
    let server = server();
    let project = support::example_project();
    let host = server.endpoint.trim_start_matches("http://");
    std::fs::write(
        project.path().join("profiles.yml"),
        format!(
            "shop:\n  target: prod\n  outputs:\n    prod:\n      type: duckdb\n      warehouse: s3://warehouse/profile\n      \
             settings:\n        s3_endpoint: '{host}'\n        s3_use_ssl: false\n        s3_url_style: path\n        \
             s3_region: us-east-1\n        s3_access_key_id: pipe-test\n        \
             s3_secret_access_key: \"{{{{ env_var('SHOP_S3_SECRET') }}}}\"\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("pipe"));
        command.current_dir(project.path()).env("NO_COLOR", "1").env_remove("PIPE_LOG");
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
            command.env_remove(key);
        }
        command.env("SHOP_S3_SECRET", "very-secret-value").args(args).output().unwrap()
    };
    let built = run(&["build"]);
    assert_eq!(built.status.code(), Some(0), "{}", support::text(&built.stderr));
    let revenue = run(&["query", "select count(*) as n from gold.gld_daily_revenue", "-o", "csv"]);
    assert_eq!(revenue.status.code(), Some(0), "{}", support::text(&revenue.stderr));
    assert_ne!(support::text(&revenue.stdout), "n\n0\n");
    let debug = run(&["debug"]);
    assert!(
        support::text(&debug.stderr).contains("s3://warehouse/profile/ [OK writable"),
        "{}",
        support::text(&debug.stderr)
    );
    let manifest = std::fs::read_to_string(project.path().join("target/manifest.json")).unwrap();
    assert!(manifest.contains(host), "the endpoint is the project's record");
    assert!(!manifest.contains("very-secret-value"), "the secret is not written down");
    // The tables are in the bucket, where the test's own client finds them.
    let store = store(&server, "profile");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let found = runtime.block_on(store.head(&"gold/gld_daily_revenue/_delta_log/00000000000000000000.json".into()));
    assert!(found.is_ok(), "{found:?}");
}

/// Two builds of one project into one bucket at once: each model is written by one of them at a time (its lease),
/// every commit is whole, and no raw file is ingested twice: the tables are one build's. A third build ingests
/// nothing again.
#[test]
fn two_builds_at_once_in_a_bucket_neither_lose_nor_double_a_commit() {
    let server = server();
    let local = support::example_project();
    let built = support::pipe(local.path(), &["build"]);
    assert_eq!(built.status.code(), Some(0), "{}", support::text(&built.stderr));

    let url = "s3://warehouse/shared";
    let (first, second) = (example_in(url), example_in(url));
    let mut running: Vec<Child> = [&first, &second]
        .iter()
        .map(|p| {
            pipe_command(&server, p.path(), &["build"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let outputs: Vec<Output> = running.drain(..).map(|c| c.wait_with_output().unwrap()).collect();
    for output in &outputs {
        assert_eq!(output.status.code(), Some(0), "{}", support::text(&output.stderr));
    }
    assert_eq!(dump(&server, first.path()), dump(&server, local.path()));

    // Each raw file was ingested by one build: one commit with rows per bronze table.
    for relation in ["bronze.brz_orders", "bronze.brz_customers", "bronze.brz_events"] {
        let files =
            query(&server, first.path(), &format!("select count(distinct _pipe_batch_id) as batches from {relation}"));
        assert_eq!(files, "batches\n1\n", "{relation}");
    }
    let again = pipe(&server, second.path(), &["build"]);
    assert_eq!(again.status.code(), Some(0), "{}", support::text(&again.stderr));
    assert_eq!(dump(&server, second.path()), dump(&server, local.path()));
    let runs = query(&server, first.path(), "select count(*) as runs from pipe.runs");
    assert_eq!(runs, "runs\n3\n", "every build's run is recorded");
}

/// The lease of a table: a second writer waits until the first gives it back; a lease its holder stopped renewing
/// (a killed build) is taken over once expired; a live one never is.
#[test]
fn a_write_lease_is_held_by_one_writer_at_a_time_and_an_expired_one_is_taken_over() {
    let server = server();
    let store = store(&server, "leases");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let path: deltalake::Path = "_pipe/locks/silver.orders.lock".into();
        let first = Lease::acquire(Arc::clone(&store), path.clone(), "silver.orders").await.unwrap();
        let waiting = tokio::spawn(Lease::acquire(Arc::clone(&store), path.clone(), "silver.orders"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!waiting.is_finished(), "a held lease is not taken");
        first.release().await;
        let second = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
        second.release().await;

        // A lease whose holder died: its expiry has passed.
        let stale =
            serde_json::json!({"owner": "dead", "pid": 1, "expires_at": chrono::Utc::now().timestamp_millis() - 1000});
        store.put(&path, PutPayload::from(serde_json::to_vec(&stale).unwrap())).await.unwrap();
        let taken =
            tokio::time::timeout(Duration::from_secs(10), Lease::acquire(Arc::clone(&store), path.clone(), "x"))
                .await
                .expect("an expired lease is taken over")
                .unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&store.get(&path).await.unwrap().bytes().await.unwrap()).unwrap();
        assert_ne!(body["owner"], "dead");
        assert_eq!(body["pid"], std::process::id());
        taken.release().await;
        assert!(store.head(&path).await.is_err(), "a released lease is gone");
    });
}

/// A scheduler and two executors of pipe's (one task slot each), with the bucket's variables; killed when dropped.
#[cfg(feature = "ballista")]
fn cluster(server: &Server, dir: &Path) -> (String, Vec<Child>) {
    let scheduler = format!("127.0.0.1:{}", free_port());
    let start = |args: &[&str]| {
        let mut command = pipe_command(server, dir, args);
        command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    };
    let mut processes = vec![start(&["ballista", "scheduler", "--bind", &scheduler, "--executor-timeout", "10s"])];
    for i in 0..2 {
        let work_dir = dir.join(format!("executor{i}"));
        std::fs::create_dir_all(&work_dir).unwrap();
        let (port, grpc) = (free_port().to_string(), free_port().to_string());
        processes.push(start(&[
            "ballista",
            "executor",
            "--scheduler",
            &scheduler,
            "--bind-host",
            "127.0.0.1",
            "--port",
            &port,
            "--grpc-port",
            &grpc,
            "--concurrent-tasks",
            "1",
            "--work-dir",
            work_dir.to_str().unwrap(),
        ]));
    }
    let started = Instant::now();
    while TcpStream::connect(&scheduler).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the scheduler did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The executors register within their first heartbeat.
    std::thread::sleep(Duration::from_secs(3));
    (format!("df://{scheduler}"), processes)
}

/// The example project on a Ballista cluster with its warehouse in a bucket: the executors read the tables' files
/// from the bucket and write the new ones there; the tables are a local folder's.
#[cfg(feature = "ballista")]
#[test]
fn the_example_project_builds_on_a_cluster_into_a_bucket() {
    let server = server();
    let local = support::example_project();
    let built = support::pipe(local.path(), &["build"]);
    assert_eq!(built.status.code(), Some(0), "{}", support::text(&built.stderr));

    let dir = tempfile::tempdir().unwrap();
    let (scheduler, mut processes) = cluster(&server, dir.path());
    let remote = example_in("s3://warehouse/cluster");
    let built = pipe(&server, remote.path(), &["build", "--scheduler", &scheduler]);
    let log = support::text(&built.stderr);
    for process in &mut processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    assert_eq!(built.status.code(), Some(0), "{log}");
    assert_eq!(log.matches("not the cluster").count(), 1, "only the seed ran here:\n{log}");
    assert_eq!(dump(&server, remote.path()), dump(&server, local.path()));
}
