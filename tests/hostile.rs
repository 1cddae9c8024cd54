//! The hostile-input corpus: `tests/hostile/*.case`, each a small project (or none) and a pipe command that a
//! careless user or an attacker would run, with the diagnostic it must end in. Every case must end within its time
//! bound, never by a panic (exit 101) or an abort (134, or any signal), with the expected exit code and messages.
//!
//! A case file: directives, then files.
//! ```text
//! # what the case is about
//! args: build --threads 0          (the command; words split on spaces, '...' and "..." keep them)
//! exit: 2                          (the expected exit code; default 1)
//! expect: P0101                    (a text the output (stderr + stdout) must hold; any number)
//! reject: panicked                 (a text it must not hold; any number)
//! base: small                      (start from a small project: a CSV source `raw.items`, `bronze.brz_items`)
//! before: build                    (a command run first, its outcome not checked; any number)
//! remove: warehouse/x/_delta_log/00000000000000000000.json  (a path removed after the `before` commands)
//! corrupt: warehouse/x/*.parquet   (files, by glob, overwritten with garbage after the `before` commands)
//! env: NAME=value                  (any number)
//! timeout: 30                      (seconds; default 60)
//! --- models/a.sql                 (a file, its text up to the next `--- ` line)
//! select 1
//! --- data/x.parquet (hex)         (a file given as hex bytes)
//! 50415231
//! ```
//! In a file's text, a line `@repeat N: TEXT` stands for TEXT written N times (no newline between).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Case {
    name: String,
    args: Vec<String>,
    exit: i32,
    expect: Vec<String>,
    reject: Vec<String>,
    before: Vec<Vec<String>>,
    env: Vec<(String, String)>,
    base: bool,
    remove: Vec<String>,
    corrupt: Vec<String>,
    timeout: Duration,
    files: Vec<(String, Vec<u8>)>,
}

/// Splits a command line on spaces; `'...'` and `"..."` keep spaces (and the other quote), `\n` is a newline.
fn words(text: &str) -> Vec<String> {
    let text = text.replace("\\n", "\n");
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in text.chars() {
        match c {
            '\'' | '"' if quote.is_none() => {
                quote = Some(c);
                any = true;
            }
            c if quote == Some(c) => quote = None,
            ' ' if quote.is_none() => {
                if any {
                    words.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            _ => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(current);
    }
    words
}

fn expand(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("@repeat ").and_then(|rest| rest.split_once(": ")) {
            Some((count, what)) => {
                let count: usize = count.trim().parse().expect("@repeat count");
                out.push_str(&what.trim_end_matches('\n').repeat(count));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

fn parse(name: &str, text: &str) -> Case {
    let mut case = Case { name: name.to_string(), exit: 1, timeout: Duration::from_secs(60), ..Case::default() };
    let mut file: Option<(String, bool, String)> = None;
    let finish = |file: Option<(String, bool, String)>, case: &mut Case| {
        if let Some((path, hex, body)) = file {
            let bytes = if hex {
                let digits: String = body.chars().filter(|c| c.is_ascii_hexdigit()).collect();
                (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect()
            } else {
                expand(&body).into_bytes()
            };
            case.files.push((path, bytes));
        }
    };
    for line in text.split_inclusive('\n') {
        if let Some(header) = line.strip_prefix("--- ") {
            finish(file.take(), &mut case);
            let header = header.trim_end_matches('\n');
            let (path, hex) = match header.strip_suffix(" (hex)") {
                Some(path) => (path, true),
                None => (header, false),
            };
            file = Some((path.to_string(), hex, String::new()));
            continue;
        }
        if let Some((_, _, body)) = file.as_mut() {
            body.push_str(line);
            continue;
        }
        let line = line.trim_end_matches('\n');
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.split_once(':').unwrap_or_else(|| panic!("{name}: `{line}` is not a directive"));
        let value = value.trim();
        match key {
            "args" => case.args = words(value),
            "exit" => case.exit = value.parse().unwrap(),
            "expect" => case.expect.push(value.to_string()),
            "reject" => case.reject.push(value.to_string()),
            "before" => case.before.push(words(value)),
            "env" => {
                let (k, v) = value.split_once('=').unwrap();
                case.env.push((k.to_string(), v.to_string()));
            }
            "timeout" => case.timeout = Duration::from_secs(value.parse().unwrap()),
            "base" if value == "small" => case.base = true,
            "remove" => case.remove.push(value.to_string()),
            "corrupt" => case.corrupt.push(value.to_string()),
            other => panic!("{name}: unknown directive `{other}`"),
        }
    }
    finish(file.take(), &mut case);
    case
}

/// Runs pipe with a time bound; the outcome is `(exit code or None for a signal, output)`, or an error for a hang.
fn run_bounded(dir: &Path, case: &Case, args: &[String]) -> Result<(Option<i32>, String), String> {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("PIPE_LOG")
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > case.timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {:?} (a hang)", case.timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = format!("{}{}", err.join().unwrap(), out.join().unwrap());
    Ok((status.code(), output))
}

/// The `base: small` project.
const SMALL: &[(&str, &str)] = &[
    ("pipe.yml", "name: hostile\n"),
    (
        "models/sources.yml",
        "sources:\n  - name: raw\n    tables:\n      - name: items\n        format: csv\n        path: data/items.csv\n",
    ),
    ("data/items.csv", "id,value\n1,a\n2,b\n"),
    ("models/bronze/brz_items.sql", "{{ config(materialized='table') }}\nselect * from {{ source('raw', 'items') }}\n"),
];

fn check(case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let base = SMALL.iter().filter(|_| case.base).map(|(path, text)| (path.to_string(), text.as_bytes().to_vec()));
    let files: Vec<(String, Vec<u8>)> = base.chain(case.files.iter().cloned()).collect();
    for (path, bytes) in &files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    for before in &case.before {
        run_bounded(dir.path(), case, before).map_err(|e| format!("before `{}`: {e}", before.join(" ")))?;
    }
    for path in &case.remove {
        let path = dir.path().join(path);
        let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
    }
    for pattern in &case.corrupt {
        let pattern = dir.path().join(pattern).to_string_lossy().into_owned();
        for path in glob::glob(&pattern).unwrap().filter_map(Result::ok) {
            std::fs::write(path, b"not parquet at all").unwrap();
        }
    }
    let (code, output) = run_bounded(dir.path(), case, &case.args)?;
    let mut problems = Vec::new();
    match code {
        None => problems.push("ended by a signal".to_string()),
        Some(101) => problems.push("panicked (exit 101)".to_string()),
        Some(134) => problems.push("aborted (exit 134)".to_string()),
        Some(code) if code != case.exit => problems.push(format!("exit {code}, expected {}", case.exit)),
        Some(_) => {}
    }
    for text in ["panicked at", "RUST_BACKTRACE", "please file a bug report", "stack overflow"] {
        if output.contains(text) {
            problems.push(format!("output holds `{text}`"));
        }
    }
    for text in &case.expect {
        if !output.contains(text.as_str()) {
            problems.push(format!("output lacks `{text}`"));
        }
    }
    for text in &case.reject {
        if output.contains(text.as_str()) {
            problems.push(format!("output holds `{text}`"));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!("{}\n--- output of `pipe {}`:\n{output}", problems.join("; "), case.args.join(" "))),
    }
}

#[test]
fn hostile_inputs_end_in_a_diagnostic() {
    let folder = support::repo().join("tests/hostile");
    let mut cases: Vec<Case> = std::fs::read_dir(&folder)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "case"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            parse(&name, &std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    if let Ok(only) = std::env::var("HOSTILE_CASE") {
        cases.retain(|c| c.name.contains(&only));
    }
    let cases = std::sync::Arc::new(std::sync::Mutex::new(cases.into_iter()));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (cases, failures, count) = (cases.clone(), failures.clone(), count.clone());
            std::thread::spawn(move || loop {
                let Some(case) = cases.lock().unwrap().next() else { break };
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(problem) = check(&case) {
                    failures.lock().unwrap().push(format!("== {}: {problem}", case.name));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let count = count.load(std::sync::atomic::Ordering::Relaxed);
    assert!(failures.is_empty(), "{} of {count} cases failed:\n{}", failures.len(), failures.join("\n\n"));
    eprintln!("{count} hostile cases: no panic, no hang, each with its diagnostic");
}

/// Compiles of one project at once (an editor's and a terminal's) all succeed: `target/` is written atomically.
#[test]
fn concurrent_compiles_all_succeed() {
    let dir = support::example_project();
    let children: Vec<_> = (0..4)
        .map(|_| {
            let root = dir.path().to_path_buf();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        let output = support::pipe(&root, &["compile", "--no-plan"]);
                        (output.status.code(), support::text(&output.stderr))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for child in children {
        for (code, stderr) in child.join().unwrap() {
            assert_eq!(code, Some(0), "{stderr}");
        }
    }
    let leftovers: Vec<_> = walkdir::WalkDir::new(dir.path().join("target"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A property file describing 4,000 models (with columns and tests) loads: the YAML budget is sized for real
/// projects, and entries are found in one pass over the file.
#[test]
fn a_property_file_of_four_thousand_models_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("models/silver")).unwrap();
    std::fs::write(root.join("pipe.yml"), "name: big\n").unwrap();
    let mut yaml = String::from("models:\n");
    for i in 0..4000 {
        yaml.push_str(&format!(
            "  - name: m{i}\n    description: model {i}\n    columns:\n      - name: id\n        tests: [not_null, unique]\n      - name: v\n        description: value\n"
        ));
        std::fs::write(root.join(format!("models/silver/m{i}.sql")), "select 1 as id, 2 as v\n").unwrap();
    }
    std::fs::write(root.join("models/schema.yml"), yaml).unwrap();
    let output = support::pipe(root, &["compile", "--no-plan"]);
    let stderr = support::text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Compiled 4000 models, 8000 tests"), "{stderr}");
}

/// `pipe query ... | head -1` and `pipe build 2>&1 | head -1`: output to a closed pipe ends pipe quietly, never in a
/// panic.
#[test]
fn a_closed_output_pipe_is_no_panic() {
    use std::io::BufRead;
    let dir = support::example_project();
    for (args, stderr_side) in
        [(vec!["query", "select * from range(300000)", "-o", "csv"], false), (vec!["build"], true)]
    {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"));
        command.args(&args).current_dir(dir.path()).env("NO_COLOR", "1");
        let mut child = if stderr_side {
            command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        } else {
            command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap()
        };
        {
            let stream: Box<dyn std::io::Read> = match stderr_side {
                true => Box::new(child.stderr.take().unwrap()),
                false => Box::new(child.stdout.take().unwrap()),
            };
            let mut first = String::new();
            std::io::BufReader::new(stream).read_line(&mut first).unwrap();
            assert!(!first.is_empty(), "{args:?}");
        }
        let status = child.wait().unwrap();
        assert!(status.code().is_some_and(|c| c != 101 && c != 134), "{args:?}: {status:?}");
    }
}

/// A warehouse on a full disk, then on a read-only one (a real tmpfs, mounted by the test: CI runs as root): every
/// write fails with the cause said plainly, nothing is committed half, and nothing panics.
#[test]
fn a_full_or_read_only_disk_fails_writes_plainly() {
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let mount_point = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=120k", "tmpfs"])
        .arg(mount_point.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "this test mounts a small tmpfs and needs root, as CI has");
    let _mount = Mount(mount_point.path().to_path_buf());
    let dir = support::example_project();
    let config = std::fs::read_to_string(dir.path().join("pipe.yml")).unwrap();
    let config: String = config.lines().filter(|l| !l.starts_with("warehouse:")).map(|l| format!("{l}\n")).collect();
    let warehouse = mount_point.path().join("wh");
    std::fs::write(dir.path().join("pipe.yml"), format!("{config}warehouse: {}\n", warehouse.display())).unwrap();
    // The first build fits; the full refresh finds the disk full.
    support::pipe(dir.path(), &["build"]);
    let output = support::pipe(dir.path(), &["build", "--full-refresh"]);
    let stderr = support::text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the disk holding the warehouse is full (No space left on device)"), "{stderr}");
    assert!(!stderr.contains("internal error") && !stderr.contains("panicked"), "{stderr}");
    let remount = std::process::Command::new("mount").args(["-o", "remount,ro"]).arg(mount_point.path()).status();
    assert!(remount.unwrap().success());
    let output = support::pipe(dir.path(), &["build", "--full-refresh"]);
    let stderr = support::text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(!stderr.contains("internal error") && !stderr.contains("panicked"), "{stderr}");
}
