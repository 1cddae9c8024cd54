//! `docs/cli.md` is generated from the clap definitions (their doc comments are the flag docs); this test fails
//! when the file is stale. Regenerate with `PIPE_UPDATE_DOCS=1 cargo test --test cli_docs`.

use clap::CommandFactory;

fn render() -> String {
    let mut command = pipe::cli::Cli::command();
    command.build();
    let mut out = String::from("# pipe command-line reference\n\nGenerated from the clap definitions by `tests/cli_docs.rs`; do not edit by hand.\n\n");
    out.push_str(&format!("```text\n{}\n```\n", command.render_long_help().to_string().trim_end()));
    for sub in command.get_subcommands() {
        let mut sub = sub.clone();
        let name = sub.get_name().to_string();
        let help = sub.render_long_help().to_string();
        out.push_str(&format!("\n## pipe {name}\n\n```text\n{}\n```\n", help.trim_end()));
    }
    out
}

#[test]
fn cli_reference_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let generated = render();
    if std::env::var_os("PIPE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(current == generated, "docs/cli.md is stale: run `PIPE_UPDATE_DOCS=1 cargo test --test cli_docs`");
}
