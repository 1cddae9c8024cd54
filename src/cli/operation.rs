//! `pipe run-operation <macro> --args '{...}'`: calls a project or package macro outside a build, as dbt's
//! `run-operation` does. `run_query` and `statement` read the warehouse; what the macro logs (`log(..., info=True)`,
//! `print`) is the output. pipe writes the warehouse only through builds, so a statement that would change it
//! (`create`, `insert`, `drop`, `grant`, ...) fails the operation with a message instead of running.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::{compile_reported_with, Partial, ProjectArgs};
use crate::template::{Catalog, QueryResult};

#[derive(Debug, Args)]
pub struct RunOperationArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The macro to call: `name`, or `package.name` for a package's.
    pub macro_name: String,
    /// Its keyword arguments, as YAML or JSON: `--args '{table: orders, days: 7}'`.
    #[arg(long)]
    pub args: Option<String>,
}

/// The warehouse as an operation sees it: queries run, statements that would write are refused.
struct ReadOnly(crate::warehouse::catalog::SessionCatalog);

impl Catalog for ReadOnly {
    fn columns(&self, relation: &str) -> Result<Option<Vec<(String, String)>>, String> {
        self.0.columns(relation)
    }

    fn query(&self, sql: &str) -> Result<QueryResult, String> {
        if let Some(kind) = writing_statement(sql) {
            return Err(format!(
                "`{kind}` is not run: pipe changes the warehouse only through builds (`pipe build`), where every \
                 write is atomic and recorded; an operation may read it with queries"
            ));
        }
        self.0.query(sql)
    }
}

/// The first keyword of `sql` when it is a statement that changes something, not a query.
fn writing_statement(sql: &str) -> Option<String> {
    let text = sql.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
    let word: String = text.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_lowercase();
    let reading = ["select", "with", "values", "show", "describe", "desc", "explain", "from", "table", "summarize"];
    (!word.is_empty() && !reading.contains(&word.as_str())).then_some(word)
}

pub(super) fn run(args: &RunOperationArgs) -> anyhow::Result<ExitCode> {
    let arguments = super::parse_vars(args.args.as_deref())
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace("`--vars`", "`--args`")))?;
    let (compilation, manifest) = match compile_reported_with(&args.project, false, Partial::Read)? {
        Ok(done) => done,
        Err(code) => return Ok(code),
    };
    let Some(project) = compilation.project.as_ref() else {
        return Ok(ExitCode::from(1));
    };
    let (package, name) = match args.macro_name.split_once('.') {
        Some((package, name)) => (Some(package), name),
        None => (None, args.macro_name.as_str()),
    };
    let known = manifest
        .macros
        .values()
        .any(|m| m.name == name && package.is_none_or(|p| m.unique_id.split('.').nth(1) == Some(p)));
    if !known {
        let names = manifest.macros.values().map(|m| m.name.as_str());
        let hint =
            crate::suggest::did_you_mean(name, names).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
        eprintln!("error: no macro `{}` in the project or its packages{hint}", args.macro_name);
        return Ok(ExitCode::from(1));
    }
    let options = super::compile_options(&args.project)?;
    let renderer = crate::compile::BuildRenderer::always(project, &options, &manifest);
    let runtime = super::runtime(None)?;
    let (ctx, _warehouse, _) =
        runtime.block_on(crate::run::open_session(&manifest, &args.project.project_dir, None))?;
    let catalog =
        Arc::new(ReadOnly(crate::warehouse::catalog::SessionCatalog { ctx, handle: runtime.handle().clone() }));
    let started = std::time::Instant::now();
    // The catalog blocks on the runtime: the render runs off its workers, on this thread.
    match renderer.render_operation(&args.macro_name, &arguments, catalog) {
        Ok(logs) => {
            let mut out = String::new();
            for line in logs {
                out.push_str(&line);
                out.push('\n');
            }
            super::write_stdout(&out);
            eprintln!("Ran `{}` in {:.2}s", args.macro_name, started.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
        Err(diagnostic) => {
            super::report(&[diagnostic], compilation.sources(), args.project.diagnostics, None);
            eprintln!("error: `{}` failed", args.macro_name);
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::writing_statement;

    #[test]
    fn queries_read_and_everything_else_is_named() {
        assert_eq!(writing_statement("  select 1"), None);
        assert_eq!(writing_statement("(with x as (select 1) select * from x)"), None);
        assert_eq!(writing_statement("DROP TABLE main.orders"), Some("drop".into()));
        assert_eq!(writing_statement("grant select on t to r"), Some("grant".into()));
    }
}
