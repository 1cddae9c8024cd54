//! The one `Diagnostic` value every stage reports, the `SourceMap` its spans point into, and its renderers.
//!
//! A diagnostic is data: a stable `Code`, a severity, a message, labels on byte spans of project files, notes and a
//! help line. Line and column are computed only when rendering, from the file's line index. Renderers are separate
//! from the value (as in ruff): `render_human` draws a code frame with miette, `render_short` prints one
//! `file:line:col: severity[code]: message` line for editors and grep, `render_json` prints JSON lines.
//! Nothing here prints; the CLI decides where rendered text goes.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

/// Index of a file in a `SourceMap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A project file a diagnostic can point into: its path relative to the project root and its text.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: Arc<str>) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile { path, text, line_starts }
    }

    /// 1-based line and column (in characters) of a byte offset, clamped to the text.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line_idx = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[line_idx];
        let col = self.text.get(line_start..offset).map_or(0, |s| s.chars().count());
        (line_idx + 1, col + 1)
    }

    /// Byte offset of a 1-based line and column (in characters); clamped to the text.
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let Some(&line_start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let line_text = &self.text[line_start..];
        let line_end = line_text.find('\n').unwrap_or(line_text.len());
        line_text[..line_end]
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(line_start + line_end, |(i, _)| line_start + i)
    }

    pub fn display_path(&self) -> String {
        self.path.to_string_lossy().replace('\\', "/")
    }
}

/// Every file loaded for one compile, addressed by `FileId`.
#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> FileId {
        let id = FileId(self.files.len() as u32);
        self.files.push(SourceFile::new(path.into(), text.into()));
        id
    }

    /// The file of `id`; an empty placeholder for an id this map never gave (a diagnostic rendered against the
    /// wrong map shows no code frame rather than ending the process).
    pub fn get(&self, id: FileId) -> &SourceFile {
        static MISSING: std::sync::OnceLock<SourceFile> = std::sync::OnceLock::new();
        self.files
            .get(id.0 as usize)
            .unwrap_or_else(|| MISSING.get_or_init(|| SourceFile::new(PathBuf::from("<unknown file>"), Arc::from(""))))
    }

    pub fn find(&self, path: &Path) -> Option<FileId> {
        self.files.iter().position(|f| f.path == path).map(|i| FileId(i as u32))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// The diagnostic and run error codes: one row per code (ruff's one-definition-per-rule habit), from which the
/// enum, `Code::ALL`, `id`, `name` and `explanation` are generated. The number never changes meaning; `pipe explain
/// <code>` prints the explanation. P00xx project, P01xx config, P02xx templates, P03xx SQL, P04xx graph, P05xx
/// selection (all at compile); P06xx the build (`warehouse::RunError::code`).
macro_rules! codes {
    ($($variant:ident = $id:literal, $name:literal, $explanation:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The short, stable identifier printed in brackets, e.g. `P0201`.
            pub fn id(self) -> &'static str {
                match self {
                    $(Code::$variant => $id,)*
                }
            }

            /// The kebab-case name, e.g. `ref-not-found`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            /// What the diagnostic means, why it matters and how to fix it.
            pub fn explanation(self) -> &'static str {
                match self {
                    $(Code::$variant => $explanation,)*
                }
            }
        }
    };
}

codes! {
    ProjectNotFound = "P0001", "project-not-found",
        "No `pipe.yml` (or `dbt_project.yml`) was found in the project directory.\nFix: run pipe from the project root, pass `--project-dir`, or create one with `pipe init`.";
    Io = "P0002", "io-error",
        "A project file could not be read.\nFix: check that the file exists and is readable.";
    YamlSyntax = "P0101", "yaml-syntax",
        "A YAML file does not parse, or a value has the wrong type (for example a list where a mapping is expected).\nFix: correct the YAML at the reported line.";
    YamlUnknownKey = "P0102", "yaml-unknown-key",
        "A YAML key is not one pipe knows. It is ignored, which usually hides a typo (`descripton`).\nFix: correct or remove the key; the message names the closest known key, or lists the keys known there.";
    InvalidConfig = "P0103", "invalid-config",
        "A config value is not valid, such as an unknown materialization or layer.\nFix: use one of the values the message lists.";
    NotSupported = "P0104", "not-supported",
        "The project uses a dbt feature pipe does not run yet (snapshots, unit tests, packages, ...). The rest of the project compiles and builds; what uses the feature is left out, and the message says which.\nFix: nothing in the project; the feature comes in a later pipe.";
    JinjaSyntax = "P0201", "jinja-syntax",
        "A model or macro is not valid Jinja, e.g. an unclosed `{{` or `{% if %}`.\nFix: correct the template at the reported position.";
    JinjaUndefined = "P0202", "jinja-undefined",
        "A template uses a variable, macro or `var()` that is not defined.\nFix: define the macro under `macros/`, the var in `pipe.yml` or `--vars`, or give `var()` a default.";
    JinjaRender = "P0203", "jinja-render",
        "Rendering a template failed, for example a macro raised an error or a function got the wrong arguments.\nFix: follow the message at the reported position.";
    SqlSyntax = "P0301", "sql-syntax",
        "The SQL a model renders to does not parse.\nFix: correct the SQL; the position points at the model file where the parser stopped.";
    NotAQuery = "P0302", "not-a-query",
        "A model must be exactly one query (`select` or `with ... select`). DDL, DML and several statements are not allowed: pipe owns the writes.\nFix: keep only the query; pipe materializes it.";
    HiddenDependency = "P0303", "hidden-dependency",
        "A model reads a table that is not a `ref()`, a `source()` or a CTE, so pipe cannot order it in the graph.\nFix: replace the table name with `{{ ref('...') }}` or `{{ source('...', '...') }}`.";
    PlanError = "P0304", "plan-error",
        "DataFusion cannot plan the model against its inputs' schemas: an unknown column, an ambiguous name, a type mismatch or an unknown function. Compile type-checks every model this way before anything runs.\nFix: correct the query (see the suggestion); `--no-plan` skips type-checking.";
    ContractViolation = "P0305", "contract-violation",
        "A model with `contract: {enforced: true}` must produce exactly its declared columns, with the declared types: compile compares the declared columns with the planned output and lists every difference, column by column; the build checks it again before writing.\nFix: change the query or the declared columns (and bump the model's version if consumers rely on them).";
    RefNotFound = "P0401", "ref-not-found",
        "`ref('name')` names a model that does not exist.\nFix: correct the name (see the suggestion) or add the model.";
    SourceNotFound = "P0402", "source-not-found",
        "`source('s', 't')` names a source table not declared in any `sources:` YAML.\nFix: declare it under `sources:` in a YAML file under `models/`.";
    DuplicateModel = "P0403", "duplicate-model",
        "Two model files have the same name; refs to it would be ambiguous.\nFix: rename or remove one of them.";
    Cycle = "P0404", "cycle",
        "Models depend on each other in a loop, so no order can build them.\nFix: break the loop by removing one of the listed refs.";
    LayerViolation = "P0405", "layer-violation",
        "A model reads from a layer its layer may not read. Bronze reads only sources; silver reads bronze or silver; gold reads silver or gold.\nFix: read through the proper layer, or set `layer-rules: warn|off` in `pipe.yml`.";
    SelectorInvalid = "P0501", "selector-invalid",
        "A `--select`/`--exclude` expression does not parse or uses an unknown method.\nFix: use the dbt selector grammar: names, globs, `+m`, `m+`, `@m`, `tag:`, `layer:`, `path:`, `config.<key>:`, `source:`, `state:`.";
    SelectorNoMatch = "P0502", "selector-no-match",
        "A selector matched no node.\nFix: check the spelling; `pipe ls` lists what exists.";
    StateMissing = "P0503", "state-missing",
        "`state:` selection needs a previous manifest, given with `--state <dir>`.\nFix: pass `--state` pointing at a previous `target/` folder.";
    QueryFailed = "P0601", "query-failed",
        "A model's query failed while the build ran it: a value that does not cast, a division by zero, an input file that cannot be read, memory exhausted.\nFix: follow the message; `pipe query` runs the model's compiled SQL (in `target/compiled/`) to try it alone.";
    WriteFailed = "P0602", "write-failed",
        "Writing or committing a model's Delta table failed (a full or read-only disk, a conflicting commit, a schema the table cannot take). Nothing was committed: the table is at its previous version.\nFix: follow the message, free the disk or resolve the conflict, and build again.";
    SourceFailed = "P0603", "source-failed",
        "A source could not be read or registered for the build (a missing file, a bad format, a value that breaks the source contract). Models reading it are skipped; the rest build.\nFix: correct the landed file or the source's declaration.";
    BatchRefused = "P0604", "batch-refused",
        "The model's config cannot be applied to what the query produced: an incremental batch with two rows for one `unique_key`, columns that changed under `on_schema_change: fail`, a microbatch or backfill range too large.\nFix: follow the message: deduplicate the batch, change `on_schema_change`, or `--full-refresh`.";
    TestsFailed = "P0605", "tests-failed",
        "An error-severity test failed on a model's new result, so the result was not published (write-audit-publish): the table keeps its previous version and the model's descendants are skipped.\nFix: fix the data or the model; the failing rows are in the message (and in `pipe_audit.<test>` with `store_failures`).";
    ContractFailed = "P0606", "contract-failed",
        "A model's result did not match its enforced contract when it was built; nothing was written.\nFix: change the query or the declared columns.";
    WarehouseError = "P0607", "warehouse-error",
        "The warehouse could not be read or written as pipe expects: a table whose Delta log is broken or missing commits, a relation name that is not a plain name, a table that does not exist (yet), a version or time outside a table's history.\nFix: follow the message; a broken table can be rebuilt with `--full-refresh` of its model.";
    RunIo = "P0608", "run-io",
        "A file the build reads or writes (run results, locks, landed files, the schema registry) could not be read or written.\nFix: check the path in the message and its permissions.";
    BreakingSchema = "P0609", "breaking-schema",
        "A model's planned columns change in a way its `schema_compatibility` (`backward` by default) does not allow, compared with the schema last registered for it; the build stops before anything runs.\nFix: bump the model's `version` config, set its `schema_compatibility`, or build with `--allow-breaking`.";
    Anomaly = "P0610", "anomaly",
        "A model's row count is outside its normal range in the run history (median +- 3 scaled MADs of its last 20 runs); with `anomaly_severity: error` its result is refused.\nFix: check the data that arrived; if the change is expected, it becomes the norm after a few runs, or set `anomaly_severity: warn`.";
    Internal = "P0699", "internal",
        "Something pipe expects never to happen did (a task that failed to join, a plan without a schema). It is pipe's bug, not the project's.\nFix: report it with the message; rerunning the build is safe (every write is atomic).";
}

impl Code {
    pub fn from_str_any(text: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.id().eq_ignore_ascii_case(text) || c.name() == text)
    }
}

/// A labelled byte span in a project file.
#[derive(Debug, Clone)]
pub struct Label {
    pub file: FileId,
    pub span: Range<usize>,
    pub message: String,
}

impl Label {
    pub fn new(file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        Label { file, span, message: message.into() }
    }
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub primary: Option<Label>,
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
    /// The node (a model's or test's unique id) the error belongs to, when it belongs to one: such an error fails
    /// that node and skips its descendants, and the rest of the project still builds (a partial build).
    pub node: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
            node: None,
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    pub fn with_primary(mut self, file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        self.primary = Some(Label::new(file, span, message));
        self
    }

    pub fn with_secondary(mut self, file: FileId, span: Range<usize>, message: impl Into<String>) -> Self {
        self.secondary.push(Label::new(file, span, message));
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn sort_key(&self, sources: &SourceMap) -> (String, usize, Severity, &'static str, String) {
        match &self.primary {
            Some(label) => (
                sources.get(label.file).display_path(),
                label.span.start,
                self.severity,
                self.code.id(),
                self.message.clone(),
            ),
            None => (String::new(), 0, self.severity, self.code.id(), self.message.clone()),
        }
    }
}

/// Sorts diagnostics by file and offset so output does not depend on thread scheduling.
pub fn sort_diagnostics(diagnostics: &mut [Diagnostic], sources: &SourceMap) {
    diagnostics.sort_by_cached_key(|d| d.sort_key(sources));
}

pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

/// How diagnostics are printed (the CLI's `--diagnostics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagnosticFormat {
    /// Code frames for people.
    Human,
    /// One `file:line:col: severity[code]: message` line per diagnostic.
    Short,
    /// One JSON object per line.
    Json,
    /// GitHub Actions workflow commands (`::error file=...,line=...::message`): annotations on the pull request.
    Github,
}

pub fn render(diagnostic: &Diagnostic, sources: &SourceMap, format: DiagnosticFormat, color: bool) -> String {
    match format {
        DiagnosticFormat::Human => render_human(diagnostic, sources, color),
        DiagnosticFormat::Short => render_short(diagnostic, sources),
        DiagnosticFormat::Json => render_json(diagnostic, sources),
        DiagnosticFormat::Github => render_github(diagnostic, sources),
    }
}

fn location(label: &Label, sources: &SourceMap) -> String {
    let file = sources.get(label.file);
    let (line, col) = file.line_col(label.span.start);
    format!("{}:{line}:{col}", file.display_path())
}

fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// A GitHub Actions annotation: `::error file=models/a.sql,line=3,col=8,title=P0401 ref-not-found::message`, with
/// the escapes GitHub's workflow commands require (`%`, `\r`, `\n`; and `:`, `,` in properties).
pub fn render_github(diagnostic: &Diagnostic, sources: &SourceMap) -> String {
    let data = |text: &str| text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    let property = |text: &str| data(text).replace(':', "%3A").replace(',', "%2C");
    let mut properties = Vec::new();
    if let Some(label) = &diagnostic.primary {
        let file = sources.get(label.file);
        let (line, col) = file.line_col(label.span.start);
        properties.push(format!("file={}", property(&file.display_path())));
        properties.push(format!("line={line}"));
        properties.push(format!("col={col}"));
    }
    properties.push(format!("title={}", property(&format!("{} {}", diagnostic.code.id(), diagnostic.code.name()))));
    let mut message = diagnostic.message.clone();
    if let Some(help) = &diagnostic.help {
        message.push_str(&format!("\nhelp: {help}"));
    }
    format!("::{} {}::{}\n", severity_word(diagnostic.severity), properties.join(","), data(&message))
}

pub fn render_short(diagnostic: &Diagnostic, sources: &SourceMap) -> String {
    let at = diagnostic.primary.as_ref().map(|l| format!("{}: ", location(l, sources))).unwrap_or_default();
    format!("{at}{}[{}]: {}\n", severity_word(diagnostic.severity), diagnostic.code.id(), diagnostic.message)
}

#[derive(Serialize)]
struct JsonLabel {
    path: String,
    line: usize,
    column: usize,
    start: usize,
    end: usize,
    message: String,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'static str,
    name: &'static str,
    severity: Severity,
    message: &'a str,
    primary: Option<JsonLabel>,
    secondary: Vec<JsonLabel>,
    notes: &'a [String],
    help: Option<&'a str>,
}

pub fn render_json(diagnostic: &Diagnostic, sources: &SourceMap) -> String {
    let to_json = |label: &Label| {
        let file = sources.get(label.file);
        let (line, column) = file.line_col(label.span.start);
        JsonLabel {
            path: file.display_path(),
            line,
            column,
            start: label.span.start,
            end: label.span.end,
            message: label.message.clone(),
        }
    };
    let value = JsonDiagnostic {
        code: diagnostic.code.id(),
        name: diagnostic.code.name(),
        severity: diagnostic.severity,
        message: &diagnostic.message,
        primary: diagnostic.primary.as_ref().map(to_json),
        secondary: diagnostic.secondary.iter().map(to_json).collect(),
        notes: &diagnostic.notes,
        help: diagnostic.help.as_deref(),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&value).expect("diagnostic JSON is plain data") + "\n"
}

/// The miette view of one diagnostic: labels restricted to the primary file, which miette draws as one code frame.
#[derive(Debug)]
struct Frame {
    message: String,
    code: String,
    severity: miette::Severity,
    help: Option<String>,
    source: Option<miette::NamedSource<Arc<str>>>,
    labels: Vec<miette::LabeledSpan>,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Frame {}

impl miette::Diagnostic for Frame {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

pub fn render_human(diagnostic: &Diagnostic, sources: &SourceMap, color: bool) -> String {
    let primary_file = diagnostic.primary.as_ref().map(|l| l.file);
    let mut labels = Vec::new();
    let mut elsewhere = Vec::new();
    let clamp = |label: &Label| {
        let len = sources.get(label.file).text.len();
        let start = label.span.start.min(len);
        let end = label.span.end.clamp(start, len);
        (start, end - start)
    };
    if let Some(primary) = &diagnostic.primary {
        let (start, len) = clamp(primary);
        labels.push(miette::LabeledSpan::new_primary_with_span(
            Some(primary.message.clone()).filter(|m| !m.is_empty()),
            (start, len),
        ));
    }
    for label in &diagnostic.secondary {
        if Some(label.file) == primary_file {
            let (start, len) = clamp(label);
            labels.push(miette::LabeledSpan::new_with_span(Some(label.message.clone()), (start, len)));
        } else {
            elsewhere.push(format!("{}: {}", location(label, sources), label.message));
        }
    }
    let source = diagnostic.primary.as_ref().map(|l| {
        let file = sources.get(l.file);
        miette::NamedSource::new(file.display_path(), Arc::clone(&file.text))
    });
    let frame = Frame {
        message: diagnostic.message.clone(),
        code: format!("{}({})", diagnostic.code.id(), diagnostic.code.name()),
        severity: match diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        },
        help: diagnostic.help.clone(),
        source,
        labels,
    };
    let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100).with_context_lines(1);
    let mut out = String::new();
    if handler.render_report(&mut out, &frame).is_err() {
        out = render_short(diagnostic, sources);
    }
    for line in elsewhere {
        let _ = writeln!(out, "  = also: {line}");
    }
    for note in &diagnostic.notes {
        let _ = writeln!(out, "  = note: {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_round_trips() {
        let file = SourceFile::new("a.sql".into(), Arc::from("select 1\nfrom é x\n"));
        for (offset, expected) in [(0, (1, 1)), (9, (2, 1)), (14, (2, 6)), (16, (2, 7))] {
            assert_eq!(file.line_col(offset), expected, "offset {offset}");
        }
        assert_eq!(file.offset_of(2, 6), 14);
        assert_eq!(file.offset_of(2, 7), 16);
        assert_eq!(file.offset_of(9, 1), file.text.len());
    }

    #[test]
    fn codes_are_unique() {
        let mut ids: Vec<_> = Code::ALL.iter().map(|c| c.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Code::ALL.len());
    }
}
