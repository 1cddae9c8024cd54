//! Tidy checks on pipe's own source (rust-analyzer's `tidy` habit): the architecture `docs/ARCHITECTURE.md` states
//! holds because this test fails when it stops holding.
//!
//! - **One-way layers.** Each top-level module of `src/` may import (`crate::<module>`) only modules below it in
//!   `LAYERS`; nothing imports upward, so there is no cycle between top-level modules.
//! - **Every file says what it is**: each `.rs` file under `src/` starts with a `//!` doc comment.
//! - **Only `cli` talks to the outside**: below `cli`, no code prints (`println!`, `eprintln!`, `print!`,
//!   `eprint!`, `dbg!`, `std::io::stdout/stderr`), reads the environment (`std::env::var`, `env::args`) or ends
//!   the process (`process::exit`, `process::abort`). A line may be let through with a `tidy: allow(<rule>)`
//!   comment saying why (the build's test failpoints abort the process on purpose).
//! - **No library module depends on clap.**
//! - **Config is typed before the build**: from `warehouse` up (the build, tests, lineage, docs), no code looks a
//!   model's config or a source's options up by key (`.config.get(`, `.str_value(`, `.options.get(`); it reads
//!   the `settings` the compile parsed (`project::settings`).

use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, lowest first. A module imports only modules before it.
const LAYERS: &[&str] = &[
    "suggest",
    "secrets",
    "files",
    "diagnostics",
    "project",
    "template",
    "sql",
    "graph",
    "manifest",
    "compile",
    "warehouse",
    "quality",
    "run",
    "lineage",
    "docs",
    "cli",
];

/// Files outside the layers: the crate root and the binary.
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

/// A broken rule, as `path:line: message`.
#[derive(Debug, PartialEq)]
struct Violation {
    path: String,
    line: usize,
    message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// The top-level module a path under `src/` belongs to (`run/materialize/table.rs` -> `run`).
fn module_of(relative: &str) -> Option<&str> {
    if ROOTS.contains(&relative) {
        return None;
    }
    let first = relative.split('/').next()?;
    Some(first.strip_suffix(".rs").unwrap_or(first))
}

/// The code of a line, without a trailing `//` comment (string contents are kept: a rule word inside a string
/// literal is rare in pipe and would be flagged, which is the safe side).
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    match line.find("// ") {
        Some(at) if !line[..at].contains('"') => &line[..at],
        _ => line,
    }
}

/// Every `crate::<module>` a line of code names, also inside `use crate::{a, b::c}` groups.
fn crate_imports(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
        rest = after;
    }
    found
}

/// What a file below `cli` must not do: (rule, the text that breaks it).
const OUTSIDE: &[(&str, &str)] = &[
    ("print", "println!("),
    ("print", "eprintln!("),
    ("print", "print!("),
    ("print", "eprint!("),
    ("print", "dbg!("),
    ("print", "io::stdout()"),
    ("print", "io::stderr()"),
    ("env", "env::var("),
    ("env", "env::var_os("),
    ("env", "env::vars("),
    ("env", "env::args("),
    ("env", "env::set_var("),
    ("exit", "process::exit("),
    ("exit", "process::abort("),
    ("clap", "clap::"),
];

/// Config lookups by key, which the layers from `warehouse` up must not make.
const CONFIG_LOOKUPS: &[&str] = &[".config.get(", ".str_value(", ".options.get("];

/// Checks one file; `relative` is its path under `src/`.
fn check_file(relative: &str, text: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let violation = |line: usize, message: String| Violation { path: format!("src/{relative}"), line, message };
    if !text.trim_start().starts_with("//!") {
        violations.push(violation(1, "the file has no `//!` doc comment saying what it is".to_string()));
    }
    let Some(module) = module_of(relative) else { return violations };
    let Some(rank) = LAYERS.iter().position(|m| *m == module) else {
        violations.push(violation(1, format!("`{module}` is not in tidy's LAYERS; place it in the layer order")));
        return violations;
    };
    for (index, line) in text.lines().enumerate() {
        let code = code_of(line);
        for imported in crate_imports(code) {
            if imported == module {
                continue;
            }
            match LAYERS.iter().position(|m| *m == imported) {
                Some(other) if other < rank => {}
                Some(_) => violations.push(violation(
                    index + 1,
                    format!("`{module}` imports `crate::{imported}`, a layer above it (see LAYERS and docs/ARCHITECTURE.md)"),
                )),
                None => {}
            }
        }
        let typed_config = LAYERS.iter().position(|m| *m == "warehouse").is_some_and(|w| rank >= w);
        if typed_config && module != "cli" {
            for lookup in CONFIG_LOOKUPS {
                if code.contains(lookup) && !line.contains("tidy: allow(config)") {
                    violations.push(violation(
                        index + 1,
                        format!(
                            "`{lookup}` in `{module}`: read the typed `settings` the compile parsed, not a config key"
                        ),
                    ));
                }
            }
        }
        if module == "cli" {
            continue;
        }
        for (rule, text) in OUTSIDE {
            let hit = code.match_indices(text).any(|(at, _)| {
                let before = code[..at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if hit && !line.contains(&format!("tidy: allow({rule})")) {
                violations.push(violation(
                    index + 1,
                    format!(
                        "`{text}` below `cli` (rule `{rule}`): only the CLI prints, reads the environment or exits"
                    ),
                ));
            }
        }
    }
    violations
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_source_keeps_its_layers_docs_and_boundaries() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        violations.extend(check_file(&relative, &std::fs::read_to_string(&path).unwrap()));
    }
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(listed.is_empty(), "tidy found {} problem(s):\n{}", listed.len(), listed.join("\n"));
}

#[test]
fn every_top_level_module_is_placed_in_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: Vec<&str> =
        lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    assert!(!declared.is_empty());
    for module in &declared {
        assert!(LAYERS.contains(module), "`{module}` is declared in lib.rs but not placed in LAYERS");
    }
    assert_eq!(declared.len(), LAYERS.len(), "LAYERS names a module lib.rs does not declare");
}

/// The checks catch what they are meant to: each planted violation is found, at its line.
#[test]
fn planted_violations_are_caught() {
    let upward = "//! Manifest.\nuse crate::run::RunError;\n";
    let found = check_file("manifest/mod.rs", upward);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, 2);
    assert!(found[0].message.contains("`manifest` imports `crate::run`"));

    let grouped = "//! Quality.\nuse crate::{manifest::Node, run::build};\n";
    assert_eq!(check_file("quality/observe.rs", grouped).len(), 1);

    let no_doc = "use std::fs;\n";
    assert!(check_file("run/x.rs", no_doc)[0].message.contains("no `//!` doc comment"));

    for planted in [
        "println!(\"hi\");",
        "eprintln!(\"hi\");",
        "let v = std::env::var(\"HOME\");",
        "std::process::exit(1);",
        "#[derive(clap::ValueEnum)]",
        "let out = std::io::stdout();",
    ] {
        let text = format!("//! Run.\nfn f() {{\n    {planted}\n}}\n");
        let found = check_file("run/mod.rs", &text);
        assert_eq!(found.len(), 1, "{planted}: {found:?}");
        assert_eq!(found[0].line, 3);
        // The same line is the CLI's to write.
        assert!(check_file("cli/mod.rs", &text).is_empty(), "{planted}");
    }

    let lookup = "//! Run.\nfn f(node: &Node) -> bool {\n    node.config.str_value(\"anomaly_severity\") == Some(\"error\")\n}\n";
    let found = check_file("run/materialize/table.rs", lookup);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].message.contains("typed `settings`"));
    // The compile is where config is parsed.
    assert!(check_file("compile/checks.rs", lookup).is_empty());

    // Allowed with a reason; mentioned in a comment; a longer name that only ends like a rule word.
    let allowed = "//! Run.\nfn f() {\n    std::process::abort(); // tidy: allow(exit) failpoint\n}\n";
    assert!(check_file("run/mod.rs", allowed).is_empty());
    let commented = "//! Run.\n// never println!(\"x\") here\nfn reprint!() {}\n";
    assert!(check_file("run/mod.rs", commented).is_empty());
}
