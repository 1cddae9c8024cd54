//! `pipe build --watch` as a real long-running process: a file dropped into a source folder is ingested once and
//! flows to the tables reading it, a table whose inputs did not change is not rebuilt, each cycle's latency is
//! logged, and SIGINT stops it cleanly after the current cycle.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use support::{pipe, text};

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for folder in ["data/events", "data/users", "models/bronze", "models/silver"] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    std::fs::write(root.join("pipe.yml"), "name: live\n").unwrap();
    std::fs::write(
        root.join("models/sources.yml"),
        "sources:\n  - name: raw\n    tables:\n      - name: events\n        format: csv\n        path: data/events/*.csv\n\
         \x20     - name: users\n        format: csv\n        path: data/users/*.csv\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_events.sql"),
        "{{ config(materialized='incremental') }}\nselect id, amount from {{ source('raw', 'events') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/silver/slv_totals.sql"),
        "{{ config(materialized='table') }}\nselect count(*) as n, sum(amount) as total from {{ ref('brz_events') }}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("models/bronze/brz_users.sql"),
        "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'users') }}\n",
    )
    .unwrap();
    std::fs::write(root.join("data/events/1.csv"), "id,amount\n1,10\n2,20\n").unwrap();
    std::fs::write(root.join("data/users/users.csv"), "user_id,name\n1,ada\n").unwrap();
    dir
}

/// Lines of the child's stderr, read on a thread so the test can wait with a timeout.
fn lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

fn wait_for(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!("no line with `{needle}` in:\n{}", seen.join("\n")),
        }
    }
}

fn query(root: &Path, sql: &str) -> String {
    let output = pipe(root, &["query", sql, "-o", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
fn watch_ingests_new_files_rebuilds_only_changed_inputs_and_stops_cleanly() {
    let dir = project();
    let root = dir.path();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["build", "--watch", "--interval", "100ms"])
        .current_dir(root)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines(&mut child);
    let mut seen = Vec::new();
    wait_for(&lines, "cycle 1:", &mut seen);

    std::fs::write(root.join("data/events/2.csv"), "id,amount\n3,30\n").unwrap();
    let cycle = wait_for(&lines, "cycle 2:", &mut seen);
    assert!(cycle.contains("1 changed file(s)"), "{cycle}");
    assert!(cycle.contains("1 not rebuilt (inputs unchanged)"), "brz_users reads nothing new: {cycle}");
    assert!(cycle.contains("latency"), "{cycle}");

    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    wait_for(&lines, "Stopped after 2 cycle(s)", &mut seen);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));

    assert_eq!(query(root, "select n, total from silver.slv_totals"), "n,total\n3,60\n");
    assert_eq!(query(root, "select count(*) as n from bronze.brz_events"), "n\n3\n", "each file once");
    // brz_users kept its first version; slv_totals got a second one.
    let versions = |relation: &str| {
        let log = root.join("warehouse").join(relation.replace('.', "/")).join("_delta_log");
        std::fs::read_dir(log)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    assert_eq!((versions("bronze.brz_users"), versions("silver.slv_totals")), (1, 2));

    let log = std::fs::read_to_string(root.join("target/watch_log.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{log}");
    assert_eq!(records[1]["changed_files"], 1);
    assert_eq!(records[1]["not_rebuilt"], 1);
    let latency = records[1]["latency_seconds"].as_f64().unwrap();
    assert!(latency > 0.0 && latency < 60.0, "{log}");
}
