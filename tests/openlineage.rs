//! OpenLineage events of `pipe build`: to `target/openlineage.ndjson` and by HTTP POST to a real local collector
//! (a TCP server in the test speaking HTTP/1.1), checked against the spec's required fields.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use support::{example_project, pipe, text};

/// A collector on 127.0.0.1 that records every POSTed body; it answers the first `fail_first` requests with
/// HTTP 503, then 200.
struct Collector {
    url: String,
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    requests: Arc<Mutex<usize>>,
}

impl Collector {
    fn start(fail_first: usize) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (seen, count) = (Arc::clone(&bodies), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    // One request: request line, headers, then a body of Content-Length bytes.
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        if header == "\r\n" || header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let n = {
                        let mut count = count.lock().unwrap();
                        *count += 1;
                        *count
                    };
                    let status = if n <= fail_first {
                        "503 Service Unavailable"
                    } else {
                        seen.lock().unwrap().push((path, serde_json::from_slice(&body).unwrap()));
                        "200 OK"
                    };
                    let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                }
            }
        });
        Collector { url, bodies, requests }
    }
}

/// Every facet object (a member of a `facets`, `inputFacets` or `outputFacets` map) in `value`.
fn facets(value: &Value, found: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if ["facets", "outputFacets", "inputFacets"].contains(&key.as_str()) {
                    for (name, facet) in child.as_object().unwrap() {
                        found.push((name.clone(), facet.clone()));
                    }
                }
                facets(child, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| facets(i, found)),
        _ => {}
    }
}

fn check_required_fields(event: &Value) {
    for field in ["eventTime", "producer", "schemaURL", "eventType"] {
        assert!(event[field].is_string(), "{field} in {event}");
    }
    assert!(chrono::DateTime::parse_from_rfc3339(event["eventTime"].as_str().unwrap()).is_ok());
    assert!(event["schemaURL"].as_str().unwrap().starts_with("https://openlineage.io/spec/2-0-2/OpenLineage.json"));
    assert!(uuid::Uuid::parse_str(event["run"]["runId"].as_str().unwrap()).is_ok(), "{event}");
    assert!(event["job"]["namespace"].is_string() && event["job"]["name"].is_string());
    for side in ["inputs", "outputs"] {
        for dataset in event[side].as_array().unwrap() {
            assert!(dataset["namespace"].is_string() && dataset["name"].is_string(), "{dataset}");
        }
    }
    let mut found = Vec::new();
    facets(event, &mut found);
    assert!(!found.is_empty());
    for (name, facet) in found {
        assert!(facet["_producer"].is_string(), "facet {name} without _producer: {facet}");
        assert!(facet["_schemaURL"].as_str().is_some_and(|u| u.starts_with("https://openlineage.io/spec/")), "{name}");
    }
}

#[test]
fn each_model_run_posts_start_and_complete_events_to_the_collector_and_the_file() {
    // The first two POSTs fail with 503: the transport retries them.
    let collector = Collector::start(2);
    let dir = example_project();
    let output = pipe(dir.path(), &["build", "--openlineage-url", &collector.url]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("OpenLineage"), "every event delivered: {stderr}");

    let posted = collector.bodies.lock().unwrap().clone();
    assert_eq!(posted.len(), 22, "START and COMPLETE for each of 11 nodes");
    assert_eq!(*collector.requests.lock().unwrap(), 24, "two retried requests");
    assert!(posted.iter().all(|(path, _)| path == "/api/v1/lineage"));
    let file = std::fs::read_to_string(dir.path().join("target/openlineage.ndjson")).unwrap();
    let written: Vec<Value> = file.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let events: Vec<Value> = posted.into_iter().map(|(_, e)| e).collect();
    assert_eq!(written, events, "the file holds the same events, in the same order");

    for event in &events {
        check_required_fields(event);
    }
    // START then COMPLETE per run id, for each model.
    let runs = |job: &str| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["job"]["name"] == job)
            .map(|e| (e["eventType"].as_str().unwrap().to_string(), e["run"]["runId"].as_str().unwrap().to_string()))
            .collect()
    };
    let orders = runs("slv_orders");
    assert_eq!(orders.len(), 2);
    assert_eq!((orders[0].0.as_str(), orders[1].0.as_str()), ("START", "COMPLETE"));
    assert_eq!(orders[0].1, orders[1].1, "START and COMPLETE share the run id");

    let complete =
        events.iter().find(|e| e["job"]["name"] == "gld_daily_revenue" && e["eventType"] == "COMPLETE").unwrap();
    assert_eq!(complete["job"]["namespace"], "shop");
    let inputs: Vec<&str> =
        complete["inputs"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(
        inputs.iter().any(|n| n.ends_with("/warehouse/silver/slv_orders")),
        "through the ephemeral model: {inputs:?}"
    );
    let output = &complete["outputs"][0];
    assert!(output["name"].as_str().unwrap().ends_with("/warehouse/gold/gld_daily_revenue"));
    assert_eq!(output["outputFacets"]["outputStatistics"]["rowCount"], 2);
    let schema: Vec<&str> =
        output["facets"]["schema"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(schema, ["order_date", "orders", "revenue"]);
    let revenue = &output["facets"]["columnLineage"]["fields"]["revenue"]["inputFields"][0];
    assert_eq!(revenue["field"], "amount");
    assert!(revenue["name"].as_str().unwrap().ends_with("/warehouse/silver/slv_orders"));
    assert_eq!(revenue["transformations"][0], serde_json::json!({"type": "DIRECT", "subtype": "AGGREGATION"}));
}

#[test]
fn a_failing_model_sends_fail_and_a_collector_that_is_down_is_a_warning() {
    let dir = example_project();
    std::fs::write(
        dir.path().join("models/gold/gld_broken.sql"),
        "select cast(customer_name as int) as x from {{ ref('slv_customers') }}\n",
    )
    .unwrap();
    // Nothing listens on this port: every POST fails, the build does not.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let output = pipe(dir.path(), &["build", "--openlineage-url", &url]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "the broken model fails the build: {stderr}");
    assert!(
        stderr.contains(&format!("warning: OpenLineage collector {url}: 24 of 24 events not delivered")),
        "{stderr}"
    );
    let file = std::fs::read_to_string(dir.path().join("target/openlineage.ndjson")).unwrap();
    let events: Vec<Value> = file.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let fail = events.iter().find(|e| e["job"]["name"] == "gld_broken" && e["eventType"] == "FAIL").unwrap();
    check_required_fields(fail);
    assert!(fail["run"]["facets"]["errorMessage"]["message"].as_str().unwrap().contains("cast"), "{fail}");
    let start = events.iter().find(|e| e["job"]["name"] == "gld_broken" && e["eventType"] == "START").unwrap();
    assert_eq!(start["run"]["runId"], fail["run"]["runId"]);
}

/// A collector that answers each request after 3 seconds: the build waits at most `--openlineage-deadline` for it
/// once its models are done, says how many events it left, and every event is still in the file.
#[test]
fn a_slow_collector_holds_the_end_of_a_build_no_longer_than_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 65536];
                while let Ok(n) = std::io::Read::read(&mut stream, &mut buffer) {
                    if n == 0 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(3));
                    let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    let dir = example_project();
    let started = std::time::Instant::now();
    let output = pipe(dir.path(), &["build", "--openlineage-url", &url, "--openlineage-deadline", "1s"]);
    let elapsed = started.elapsed();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("left undelivered when the 1s delivery deadline passed"), "{stderr}");
    // 22 events at 3 s each would be over a minute; the wait after the build is bounded by the deadline.
    assert!(elapsed < std::time::Duration::from_secs(45), "{elapsed:?}: {stderr}");
    let file = std::fs::read_to_string(dir.path().join("target/openlineage.ndjson")).unwrap();
    assert_eq!(file.lines().count(), 22, "every event is in the file");
}
