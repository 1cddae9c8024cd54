//! Renders model templates with the one shared minijinja `Environment`.
//!
//! In: a model's text and the project-wide context (relations refs resolve to, declared sources, vars, macros).
//! Out: `RenderedModel`: the SQL, every `ref`/`source`/`config` call the render made, the macros the model uses,
//! and an `OffsetMap` from rendered SQL back to the model file, so later stages can point at what the user wrote.
//! A model that calls `is_incremental()` is rendered twice (full and incremental) so `run` can pick one later
//! without rendering.
//!
//! **Architecture invariant:** this stage never touches DataFusion or the warehouse.

mod calls;
mod context;
mod dbt;
mod introspect;
mod macros;
mod offsets;
mod pycompat;
mod relation;
mod runtime;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Rest, Value as JValue};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

pub use calls::{find_calls, TemplateCall};
pub use introspect::{Catalog, QueryResult};
pub use macros::{MacroDef, MacroSet, MacroSource};
pub use offsets::OffsetMap;
pub use runtime::{DispatchConfig, DISPATCH_PREFIXES};

use crate::diagnostics::{Code, Diagnostic, FileId, SourceFile};
use crate::project::ConfigMap;

/// Prefix of the CTE an ephemeral model is inlined as: what `ref()` of an ephemeral model renders to.
pub const EPHEMERAL_PREFIX: &str = "__pipe_cte__";

/// Names a project macro cannot take over: the core of the render context.
const PROTECTED_NAMES: &[&str] = &[
    "ref",
    "source",
    "config",
    "var",
    "env_var",
    "is_incremental",
    "return",
    "adapter",
    "this",
    "target",
    "run_started_at",
    "invocation_id",
    "pipe",
    "exceptions",
    "__pipe_module",
];

/// Project-wide values models render against.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    /// Model name -> relation `ref()` renders to (e.g. `silver.orders`).
    pub relations: BTreeMap<String, String>,
    /// Declared source tables, as (source, table).
    pub sources: BTreeSet<(String, String)>,
    /// Source tables that are another node's relation (a seed loaded into the warehouse): what `source()` renders
    /// to for them, instead of `<source>.<table>`.
    pub source_relations: BTreeMap<(String, String), String>,
    pub vars: BTreeMap<String, Value>,
    pub env_vars: BTreeMap<String, String>,
    pub run_started_at: String,
    pub invocation_id: String,
    pub target_name: String,
    /// `target.schema`: the schema models go to when they set none.
    pub target_schema: String,
    /// `target.type`: the adapter a profile names (`duckdb`), else `pipe`.
    pub target_type: String,
    /// The root project's name: the package its own macros belong to.
    pub project_name: String,
    /// `adapter.dispatch` search orders from the project file.
    pub dispatch: DispatchConfig,
    /// The command (`flags.WHICH`): `compile`, `build`, `run`, ...
    pub command: String,
    /// `--full-refresh` (`flags.FULL_REFRESH`, `should_full_refresh()`).
    pub full_refresh: bool,
    /// dbt's `graph`: `nodes` and `sources` by unique id, as far as they are known before rendering.
    pub graph: Value,
    /// Versioned models by name: what `ref(name)` and `ref(name, v=...)` read.
    pub versions: BTreeMap<String, crate::project::VersionedModel>,
    /// Models that come from an installed package, by name: the package whose macros their bare names find first.
    pub model_packages: BTreeMap<String, String>,
}

/// A `ref()` or `source()` the render made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// For a ref: `[model]`; for a source: `[source, table]`.
    pub name: Vec<String>,
    /// Where the call is written in the model file, when it is written there (not inside a macro).
    pub span: Option<Range<usize>>,
}

/// The result of rendering one model.
#[derive(Debug, Clone)]
pub struct RenderedModel {
    pub sql: String,
    /// The `is_incremental()` variant, when the model calls it.
    pub sql_incremental: Option<String>,
    pub refs: Vec<Dependency>,
    pub sources: Vec<Dependency>,
    /// Keys set by the in-file `config(...)` call.
    pub config: ConfigMap,
    /// Macros the model calls, directly or through other macros.
    pub macros: BTreeSet<String>,
    pub offsets: OffsetMap,
    /// The render asked the warehouse (`execute`, `run_query`, `statement`, the adapter's columns or relations):
    /// at compile those have no answer, so the build renders the model again just before running it.
    pub introspective: bool,
    /// What the render said with `log(..., info=True)` and `print`, for the caller to show.
    pub logs: Vec<String>,
}

/// What one render records through the template functions. Renders are synchronous on one thread, so the record
/// lives in a thread-local for the duration of a render; macros calling `ref()` record into it too.
#[derive(Default)]
struct Capture {
    refs: Vec<String>,
    sources: Vec<(String, String)>,
    config: ConfigMap,
    /// The model's config from its folders and YAML, which `config.get` reads after what the render set.
    base: ConfigMap,
    incremental: bool,
    called_is_incremental: bool,
    /// What introspection asks at build time; `None` at compile.
    catalog: Option<Arc<dyn Catalog>>,
    /// `execute` is true though no catalog answers: a data test's SQL, rendered at compile as dbt renders it at
    /// test time (its introspection still finds nothing).
    assume_execute: bool,
    introspected: bool,
    /// `statement(name)` results, for `load_result(name)`.
    results: BTreeMap<String, JValue>,
    /// What `log(..., info=True)` and `print` said.
    logs: Vec<String>,
}

thread_local! {
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// What `execute` is during a render.
enum Execution {
    /// Compiling a model, as dbt's parse: `execute` is false and introspection finds nothing.
    Parse,
    /// A data test's SQL: `execute` is true, though introspection still finds nothing.
    Test,
    /// Building: `execute` is true and introspection asks the catalog.
    Build(Arc<dyn Catalog>),
}

fn with_capture<R>(f: impl FnOnce(&mut Capture) -> R) -> Option<R> {
    CAPTURE.with(|c| c.borrow_mut().as_mut().map(f))
}

/// Files being rendered right now. Fuel bounds a template's instructions, not its memory: `{% set ns.s = ns.s ~ ns.s %}`
/// in a 40-step loop asks for a terabyte in 40 instructions, and minijinja has no allocation limit. A caller that
/// watches the process's memory (the CLI) reads this to stop such a render and name the file.
static RENDERING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The files being rendered at this moment, in the order their renders started.
pub fn rendering_now() -> Vec<String> {
    RENDERING.lock().map(|r| r.clone()).unwrap_or_default()
}

/// Marks `name` as being rendered until dropped.
struct Rendering(String);

impl Rendering {
    fn start(name: &str) -> Rendering {
        if let Ok(mut names) = RENDERING.lock() {
            names.push(name.to_string());
        }
        Rendering(name.to_string())
    }
}

impl Drop for Rendering {
    fn drop(&mut self) {
        if let Ok(mut names) = RENDERING.lock() {
            if let Some(at) = names.iter().position(|n| *n == self.0) {
                names.remove(at);
            }
        }
    }
}

/// The shared environment plus the macro catalogue.
pub struct Renderer {
    env: Environment<'static>,
    macros: MacroSet,
    /// Every global name (functions, macros, packages), for the undefined-name check of models.
    globals: std::collections::HashSet<String>,
    /// Packages whose macro template parsed, and so can be imported by a render.
    loaded: Vec<String>,
}

/// The instructions one render may run: far more than any real model and its macros take (the example project's
/// largest render takes a few thousand).
pub const RENDER_FUEL: u64 = 50_000_000;

impl Renderer {
    /// Builds the environment. Macro files that do not parse are reported and left out.
    pub fn new(context: Arc<RenderContext>, macro_files: &[MacroSource<'_>]) -> (Renderer, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let mut env = Environment::new();
        // dbt's Jinja prints an undefined name as nothing, and packages rely on it (`{{ select_gb_cols }}` set only
        // under an `if`); a model's own undefined names are still errors (`undefined_in`).
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_keep_trailing_newline(true);
        env.set_recursion_limit(200);
        // A bound on the work of one render, so a runaway loop ends in a diagnostic instead of a hang.
        env.set_fuel(Some(RENDER_FUEL));
        let (macros, templates) = MacroSet::collect(&context.project_name, macro_files);
        let mut loaded = Vec::new();
        for (name, source) in templates {
            match env.add_template_owned(name.clone(), source) {
                Ok(()) => loaded.extend(name.strip_prefix("__pipe_macros__/").map(str::to_string)),
                Err(err) => diagnostics.push(macros.diagnostic_for(&err, macro_files)),
            }
        }
        register_functions(&mut env, &context);
        pycompat::register(&mut env);
        let functions = dbt::register(&mut env);
        let index = runtime::MacroIndex::new(
            &macros,
            context.dispatch.clone(),
            functions.clone(),
            functions,
            context.target_type.clone(),
        );
        runtime::register(&mut env, Arc::new(index), PROTECTED_NAMES);
        let globals = env.globals().map(|(name, _)| name.to_string()).collect();
        (Renderer { env, macros, globals, loaded }, diagnostics)
    }

    pub fn macros(&self) -> &MacroSet {
        &self.macros
    }

    /// Renders a model; `this` is the model's own relation. Errors are diagnostics on the model (or macro) file.
    pub fn render_model(
        &self,
        file_id: FileId,
        file: &SourceFile,
        this: &str,
        context: &RenderContext,
        macro_files: &[MacroSource<'_>],
    ) -> Result<RenderedModel, Diagnostic> {
        self.render_model_with(file_id, file, this, &ConfigMap::new(), context, macro_files)
    }

    /// `render_model` for a model whose folder and YAML config is `base` (what `config.get` reads).
    pub fn render_model_with(
        &self,
        file_id: FileId,
        file: &SourceFile,
        this: &str,
        base: &ConfigMap,
        context: &RenderContext,
        macro_files: &[MacroSource<'_>],
    ) -> Result<RenderedModel, Diagnostic> {
        self.render(file_id, file, this, base, context, macro_files, Execution::Parse)
    }

    /// A data test's SQL (a generic test's macro call, a singular test): `execute` is true, as when dbt runs tests.
    pub fn render_test(
        &self,
        file_id: FileId,
        file: &SourceFile,
        context: &RenderContext,
        macro_files: &[MacroSource<'_>],
    ) -> Result<RenderedModel, Diagnostic> {
        self.render(file_id, file, "", &ConfigMap::new(), context, macro_files, Execution::Test)
    }

    /// `render_test` when the test runs: introspection asks `catalog`.
    pub fn render_test_at_build(
        &self,
        file_id: FileId,
        file: &SourceFile,
        context: &RenderContext,
        macro_files: &[MacroSource<'_>],
        catalog: Arc<dyn Catalog>,
    ) -> Result<RenderedModel, Diagnostic> {
        self.render(file_id, file, "", &ConfigMap::new(), context, macro_files, Execution::Build(catalog))
    }

    /// `render_model_with` at build time: `execute` is true and introspection asks `catalog`.
    #[allow(clippy::too_many_arguments)]
    pub fn render_model_at_build(
        &self,
        file_id: FileId,
        file: &SourceFile,
        this: &str,
        base: &ConfigMap,
        context: &RenderContext,
        macro_files: &[MacroSource<'_>],
        catalog: Arc<dyn Catalog>,
    ) -> Result<RenderedModel, Diagnostic> {
        self.render(file_id, file, this, base, context, macro_files, Execution::Build(catalog))
    }

    #[allow(clippy::too_many_arguments)]
    fn render(
        &self,
        file_id: FileId,
        file: &SourceFile,
        this: &str,
        base: &ConfigMap,
        context: &RenderContext,
        macro_files: &[MacroSource<'_>],
        execution: Execution,
    ) -> Result<RenderedModel, Diagnostic> {
        let raw: &str = &file.text;
        let used_macros = self.macros.used_by(raw);
        // The imports go on the first line, without a newline, so line numbers stay those of the file.
        let mut prelude = String::new();
        if self.macros.may_call_macros(raw) {
            for package in &self.loaded {
                prelude.push_str(&format!(
                    "{{% import \"__pipe_macros__/{package}\" as __pipe_m %}}{{{{ __pipe_module(\"{package}\", __pipe_m) }}}}"
                ));
            }
        }
        let (rewritten, insertions) = pycompat::rewrite_literals(raw);
        let source = format!("{prelude}{rewritten}");
        let name = file.display_path();
        let model_name = file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let package = context.model_packages.get(&model_name).unwrap_or(&context.project_name);
        let ctx = minijinja::context! {
            this => relation::Relation::parse(this).value(),
            execute => JValue::from_object(introspect::Execute),
            model => minijinja::context! {
                name => file.path.file_stem().map(|s| s.to_string_lossy().into_owned()),
                unique_id => format!("model.{package}.{model_name}"),
                resource_type => "model",
                package_name => package,
                original_file_path => &name,
                path => &name,
                config => JValue::from_serialize(base),
                tags => JValue::from_serialize(base.get("tags")),
                alias => file.path.file_stem().map(|s| s.to_string_lossy().into_owned()),
                schema => this.split('.').next(),
            },
            run_started_at => &context.run_started_at,
            invocation_id => &context.invocation_id,
            target => minijinja::context! {
                name => &context.target_name,
                schema => &context.target_schema,
                type => &context.target_type,
                profile_name => &context.project_name,
                threads => 1,
            },
        };
        let to_diag = |err: minijinja::Error| {
            self.error_diagnostic(&err, file_id, file, (prelude.len(), &insertions), macro_files)
        };
        let template = self.env.template_from_named_str(&name, &source).map_err(to_diag)?;
        if let Some(diagnostic) = self.undefined_in(&template, raw, file_id) {
            return Err(diagnostic);
        }
        let render = |incremental: bool| -> Result<(String, Capture), minijinja::Error> {
            let _rendering = Rendering::start(&name);
            runtime::reset();
            if *package != context.project_name {
                runtime::enter_package(package);
            }
            let capture = Capture {
                incremental,
                base: base.clone(),
                catalog: match &execution {
                    Execution::Build(catalog) => Some(Arc::clone(catalog)),
                    Execution::Parse | Execution::Test => None,
                },
                assume_execute: matches!(execution, Execution::Test),
                ..Capture::default()
            };
            CAPTURE.with(|c| *c.borrow_mut() = Some(capture));
            let result = template.render(ctx.clone());
            let capture = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
            result.map(|sql| (sql, capture))
        };
        let (sql, capture) = render(false).map_err(to_diag)?;
        let sql_incremental = if capture.called_is_incremental { Some(render(true).map_err(to_diag)?.0) } else { None };
        let introspective = capture.introspected;
        let logs = capture.logs.clone();

        let calls = find_calls(raw);
        let locate = |function: &str, args: &[String]| {
            calls.iter().find(|c| c.function == function && c.args.iter().eq(args.iter())).map(|c| c.span.clone())
        };
        let mut refs: Vec<Dependency> = Vec::new();
        for name in capture.refs {
            let name = vec![name];
            if !refs.iter().any(|r| r.name == name) {
                refs.push(Dependency { span: locate("ref", &name), name });
            }
        }
        let mut sources: Vec<Dependency> = Vec::new();
        for (source_name, table) in capture.sources {
            let name = vec![source_name, table];
            if !sources.iter().any(|s| s.name == name) {
                sources.push(Dependency { span: locate("source", &name), name });
            }
        }
        let offsets = OffsetMap::build(raw, &sql);
        Ok(RenderedModel {
            sql,
            sql_incremental,
            refs,
            sources,
            config: capture.config,
            macros: used_macros,
            offsets,
            introspective,
            logs,
        })
    }

    /// A name the model's own text uses that nothing defines (a typo, mostly): an error at its first use. Names
    /// tested with `is defined` / `is undefined` are meant to be optional and are left alone.
    fn undefined_in(&self, template: &minijinja::Template<'_, '_>, raw: &str, file_id: FileId) -> Option<Diagnostic> {
        const RENDER_NAMES: &[&str] = &[
            "this",
            "execute",
            "model",
            "run_started_at",
            "invocation_id",
            "target",
            "loop",
            "caller",
            "self",
            "varargs",
            "kwargs",
        ];
        let mut undefined: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !self.globals.contains(name) && !RENDER_NAMES.contains(&name.as_str()))
            .filter(|name| {
                !raw.contains(&format!("{name} is defined")) && !raw.contains(&format!("{name} is undefined"))
            })
            .filter(|name| !raw.contains(&format!("{name} is not defined")))
            // minijinja's static scopes are narrower than Jinja's (a `set` inside an `if` is visible after it): a
            // name the model assigns anywhere is taken as defined.
            .filter(|name| !assigned_in(raw, name))
            .collect();
        undefined.sort();
        let name = undefined.into_iter().next()?;
        let at = find_word(raw, &name).unwrap_or(0);
        // `pkg.macro(...)` of a package that is not installed: say so, with the whole dotted name.
        let dotted: String = raw[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.').collect();
        Some(undefined_diagnostic(dotted.trim_end_matches('.'), file_id, at..at + dotted.len(), &self.macros))
    }

    fn error_diagnostic(
        &self,
        err: &minijinja::Error,
        file_id: FileId,
        file: &SourceFile,
        (prelude_len, insertions): (usize, &pycompat::Insertions),
        macro_files: &[MacroSource<'_>],
    ) -> Diagnostic {
        if err.name().is_some_and(|n| n.starts_with("__pipe_macros__/")) {
            return self.macros.diagnostic_for(err, macro_files);
        }
        let span = err
            .range()
            .map(|r| {
                let at = |offset: usize| pycompat::original_offset(offset.saturating_sub(prelude_len), insertions);
                at(r.start)..at(r.end)
            })
            .or_else(|| err.line().map(|l| file.offset_of(l, 1)..file.offset_of(l, 1)))
            .unwrap_or(0..0);
        let span_text = file.text.get(span.clone()).unwrap_or("").trim().to_string();
        // `adapter.dispatch(...)`, `dbt_utils.star(...)`: a method called on a name that is not defined. The error
        // points at the method; the name is the identifier before the dot.
        if let Some(method) = err.detail().and_then(|d| d.strip_prefix("undefined has no method named ")) {
            let before = file.text.get(..span.start).unwrap_or("").trim_end_matches('.');
            let receiver: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !receiver.is_empty() {
                let ident = format!("{receiver}.{}", method.trim());
                if let Some(diagnostic) = not_supported(&ident, file_id, span.clone(), &self.macros) {
                    return diagnostic;
                }
            }
        }
        template_error(err, file_id, span, &span_text, &self.macros)
    }
}

/// `config`: called, it sets the model's config (`config(materialized='table')`); `config.get(key, default)`
/// reads it (what this render set, else the folder and YAML config), and `config.require(key)` fails when it is
/// not set, as in dbt.
#[derive(Debug)]
struct ConfigFunction;

impl minijinja::value::Object for ConfigFunction {
    fn call(self: &Arc<Self>, _state: &minijinja::State<'_, '_>, args: &[JValue]) -> Result<JValue, minijinja::Error> {
        let (args, kwargs): (Rest<JValue>, Kwargs) = minijinja::value::from_args(args)?;
        set_config(args, kwargs).map(JValue::from)
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &minijinja::State<'_, '_>,
        method: &str,
        args: &[JValue],
    ) -> Result<JValue, minijinja::Error> {
        let lookup = |key: &str| {
            with_capture(|c| c.config.get(key).or_else(|| c.base.get(key)).cloned())
                .flatten()
                .map(JValue::from_serialize)
        };
        match method {
            "get" => {
                let (key, default): (String, Option<JValue>) = minijinja::value::from_args(args)?;
                Ok(lookup(&key).or(default).unwrap_or(JValue::from(())))
            }
            "require" => {
                let (key,): (String,) = minijinja::value::from_args(args)?;
                lookup(&key).ok_or_else(|| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("config `{key}` is required but not set"),
                    )
                })
            }
            other => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("`config.{other}` is not supported by pipe; use `config.get` or `config.require`"),
            )),
        }
    }
}

fn set_config(args: Rest<JValue>, kwargs: Kwargs) -> Result<String, minijinja::Error> {
    let mut config = ConfigMap::new();
    // `config({'materialized': 'table'})`: a mapping as the only positional argument.
    match (args.first(), args.len()) {
        (None, _) => {}
        (Some(first), 1) if matches!(serde_json::to_value(first), Ok(Value::Object(_))) => {
            if let Ok(Value::Object(map)) = serde_json::to_value(first) {
                config.extend(map);
            }
        }
        (Some(first), _) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "config() takes keyword arguments, like `config(materialized='table')`, or one mapping; it was given {first}"
                ),
            ))
        }
    }
    for key in kwargs.args() {
        let value: JValue = kwargs.get(key)?;
        let json = serde_json::to_value(&value)
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("config({key}=...): {e}")))?;
        config.insert(key.to_string(), json);
    }
    with_capture(|c| {
        for (key, value) in config {
            crate::project::config::merge_config_key(&mut c.config, &key, value);
        }
    });
    Ok(String::new())
}

/// Names of dbt's Jinja context that pipe does not define (yet): using one is "not supported", not a typo.
const DBT_CONTEXT: &[&str] = &[
    "adapter",
    "exceptions",
    "fromjson",
    "tojson",
    "fromyaml",
    "zip",
    "dbt",
    "store_result",
    "set_sql_header",
    "dispatch",
    "context",
    "database",
    "schema",
    "api",
    "modules",
];

/// The diagnostic for a name of dbt's Jinja context, or a package's macro, that pipe does not have: "not supported",
/// never "undefined" (which reads as the user's typo). `None` for any other name.
fn not_supported(ident: &str, file_id: FileId, span: Range<usize>, macros: &MacroSet) -> Option<Diagnostic> {
    let head = ident.split('.').next().unwrap_or_default();
    if DBT_CONTEXT.contains(&head) {
        return Some(
            Diagnostic::error(Code::NotSupported, format!("`{ident}` is not supported by pipe yet"))
                .with_primary(file_id, span, "dbt's Jinja context has this; pipe's does not")
                .with_note("this model does not build; the rest of the project does (a partial build)")
                .with_help("write the SQL it would produce, or a macro under `macros/` that does"),
        );
    }
    if ident.contains('.') && !head.is_empty() && !macros.names().any(|m| m == head) {
        return Some(
            Diagnostic::error(
                Code::NotSupported,
                format!("`{ident}` comes from the package `{head}`, which is not installed"),
            )
            .with_primary(file_id, span, "a package's macro")
            .with_note("this model does not build; the rest of the project does (a partial build)")
            .with_help(format!(
                "install `{head}` into `dbt_packages/` (`dbt deps`, or a `local:` entry and `pipe deps`), or copy the macro into `macros/` and call it as `{}`",
                &ident[head.len() + 1..]
            )),
        );
    }
    None
}

/// Turns a minijinja error into a diagnostic at `span`, naming what is undefined when it can.
fn template_error(
    err: &minijinja::Error,
    file_id: FileId,
    span: Range<usize>,
    span_text: &str,
    macros: &MacroSet,
) -> Diagnostic {
    let detail = err.detail().unwrap_or("").to_string();
    match err.kind() {
        ErrorKind::OutOfFuel => Diagnostic::error(
            Code::JinjaRender,
            format!("the template ran more than {RENDER_FUEL} instructions and was stopped"),
        )
        .with_primary(file_id, span, "while rendering this")
        .with_help("look for a loop that never ends or runs far longer than meant (nested `range()`s)"),
        ErrorKind::SyntaxError | ErrorKind::UnknownBlock | ErrorKind::BadEscape => {
            Diagnostic::error(Code::JinjaSyntax, format!("Jinja syntax error: {detail}"))
                .with_primary(file_id, span, "the template does not parse here")
                .with_help("check that every `{{`, `{%` and block is closed")
        }
        ErrorKind::UndefinedError | ErrorKind::UnknownFunction => {
            let ident: String = span_text
                .trim_start_matches(['{', '%', '-', ' '])
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            if !detail.is_empty() && detail.starts_with("var") {
                return Diagnostic::error(Code::JinjaUndefined, detail)
                    .with_primary(file_id, span, "used here")
                    .with_help("define it under `vars:` in `pipe.yml`, pass `--vars`, or give `var()` a default");
            }
            // Raised by pipe's macro resolution (`runtime`): the detail already says what is missing and where.
            if detail.starts_with("macro `") {
                return Diagnostic::error(Code::JinjaUndefined, detail)
                    .with_primary(file_id, span, "called here")
                    .with_help("dbt resolves a bare macro name in the calling package, then the root project");
            }
            if detail.starts_with("adapter.dispatch(") {
                return Diagnostic::error(Code::JinjaUndefined, detail).with_primary(file_id, span, "called here").with_help(
                    "define one of these macros in the project, or list the package that has it under `dispatch:` in the project file",
                );
            }
            if !detail.is_empty() && detail.starts_with("env var") {
                return Diagnostic::error(Code::JinjaUndefined, detail)
                    .with_primary(file_id, span, "used here")
                    .with_help("set the environment variable or give `env_var()` a default");
            }
            undefined_diagnostic(&ident, file_id, span, macros)
        }
        _ if detail.contains("is not supported by pipe") => Diagnostic::error(Code::NotSupported, detail)
            .with_primary(file_id, span, "dbt's Jinja context has this; pipe's does not")
            .with_note("this model does not build; the rest of the project does (a partial build)")
            .with_help("write the SQL it would produce, or a macro under `macros/` that does"),
        _ => Diagnostic::error(Code::JinjaRender, format!("template error: {}", err_text(err))).with_primary(
            file_id,
            span,
            "while rendering this",
        ),
    }
}

/// "undefined `x`", or "not supported" when `x` is a name of dbt's context pipe lacks, with a did-you-mean.
fn undefined_diagnostic(ident: &str, file_id: FileId, span: Range<usize>, macros: &MacroSet) -> Diagnostic {
    if let Some(diagnostic) = not_supported(ident, file_id, span.clone(), macros) {
        return diagnostic;
    }
    let what = if ident.is_empty() { "value".to_string() } else { format!("`{ident}`") };
    let diag = Diagnostic::error(Code::JinjaUndefined, format!("undefined {what} in template")).with_primary(
        file_id,
        span,
        "not defined",
    );
    match crate::suggest::did_you_mean(ident, macros.names().map(String::as_str)) {
        Some(name) => diag.with_help(format!("a macro named `{name}` exists; did you mean `{name}`?")),
        None => diag.with_help("define a macro with this name under `macros/`, or pass the variable"),
    }
}

/// Whether `text` assigns `name` somewhere: `{% set ... name ... = %}`, `{% for ... name ... in %}`, a macro's
/// parameter, `{% set name %}` blocks.
fn assigned_in(text: &str, name: &str) -> bool {
    let name = regex::escape(name);
    let pattern = format!(r"\b(set|for)\s+[\w\s,.]*\b{name}\b|\bmacro\s+\w+\s*\([^)]*\b{name}\b");
    regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(text))
}

/// The offset of the first use of `word` as a whole identifier in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        !text[..at].chars().next_back().is_some_and(is_ident)
            && !text[at + word.len()..].chars().next().is_some_and(is_ident)
    })
}

fn err_text(err: &minijinja::Error) -> String {
    err.detail().map(str::to_string).unwrap_or_else(|| err.kind().to_string())
}

fn string_arg(value: &JValue, what: &str) -> Result<String, minijinja::Error> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, format!("{what} takes string arguments")))
}

/// The node `ref(name)` or `ref(name, v=version)` reads: a versioned model's latest or pinned version.
fn versioned_node(cx: &RenderContext, name: String, version: Option<&str>) -> Result<String, minijinja::Error> {
    match (cx.versions.get(&name), version) {
        (Some(model), _) => model.node(version).map(str::to_string).ok_or_else(|| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "model `{name}` has no version {} (its versions: {})",
                    version.unwrap_or("?"),
                    model.version_list()
                ),
            )
        }),
        (None, None) => Ok(name),
        (None, Some(v)) => Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("`ref('{name}', v={v})`: model `{name}` has no `versions:` in its YAML"),
        )),
    }
}

fn register_functions(env: &mut Environment<'static>, context: &Arc<RenderContext>) {
    let cx = Arc::clone(context);
    let reference =
        JValue::from_function(move |args: Rest<JValue>, kwargs: Kwargs| -> Result<JValue, minijinja::Error> {
            // `ref('model')` or `ref('package', 'model')`; the package is not used by a single project.
            let name = match args.as_slice() {
                [model] | [_, model] => string_arg(model, "ref()")?,
                _ => return Err(minijinja::Error::new(ErrorKind::MissingArgument, "ref() takes a model name")),
            };
            let version = kwargs.get::<Option<JValue>>("v")?.or(kwargs.get::<Option<JValue>>("version")?);
            let version = version.filter(|v| !v.is_none() && !v.is_undefined()).map(|v| match v.as_str() {
                Some(text) => text.to_string(),
                None => crate::project::versions::version_text(&serde_json::to_value(&v).unwrap_or_default()),
            });
            let name = versioned_node(&cx, name, version.as_deref())?;
            with_capture(|c| c.refs.push(name.clone()));
            let relation = cx.relations.get(&name).cloned().unwrap_or(name);
            Ok(relation::Relation::parse(&relation).value())
        });
    let cx = Arc::clone(context);
    let source = JValue::from_function(move |source: String, table: String| -> JValue {
        with_capture(|c| c.sources.push((source.clone(), table.clone())));
        let relation = cx.source_relations.get(&(source.clone(), table.clone())).cloned();
        relation::Relation::parse(&relation.unwrap_or_else(|| format!("{source}.{table}"))).value()
    });
    let config = JValue::from_object(ConfigFunction);
    env.add_global("ref", reference.clone());
    env.add_global("source", source.clone());
    env.add_global("config", config.clone());
    // `builtins.ref` is dbt's own `ref`, for projects that override `ref` with a macro.
    env.add_global("builtins", JValue::from_iter([("ref", reference), ("source", source), ("config", config)]));
    env.add_global("flags", context::flags(context));
    env.add_global("invocation_args_dict", context::invocation_args(context));
    env.add_global("modules", context::modules());
    env.add_global("graph", JValue::from_serialize(&context.graph));
    env.add_global("project_name", JValue::from(context.project_name.clone()));
    env.add_global("selected_resources", JValue::from(Vec::<JValue>::new()));
    context::register_naming(env, context);
    env.add_function("print", context::print);
    env.add_function("local_md5", context::local_md5);
    env.add_function("toyaml", context::toyaml);
    env.add_function("should_store_failures", context::should_store_failures);
    env.add_function("should_full_refresh", context::should_full_refresh(context.full_refresh));
    let cx = Arc::clone(context);
    env.add_function("var", move |name: String, default: Option<JValue>| -> Result<JValue, minijinja::Error> {
        match (cx.vars.get(&name), default) {
            (Some(value), _) => Ok(JValue::from_serialize(value)),
            (None, Some(default)) => Ok(default),
            (None, None) => Err(minijinja::Error::new(
                ErrorKind::UndefinedError,
                format!("var `{name}` is not defined and has no default"),
            )),
        }
    });
    let cx = Arc::clone(context);
    env.add_function("env_var", move |name: String, default: Option<String>| -> Result<String, minijinja::Error> {
        match (cx.env_vars.get(&name), default) {
            (Some(value), _) => Ok(value.clone()),
            (None, Some(default)) => Ok(default),
            (None, None) => Err(minijinja::Error::new(
                ErrorKind::UndefinedError,
                format!("env var `{name}` is not set and has no default"),
            )),
        }
    });
    env.add_function("is_incremental", || -> bool {
        with_capture(|c| {
            c.called_is_incremental = true;
            c.incremental
        })
        .unwrap_or(false)
    });
    env.add_function("log", context::log);
    env.add_global("api", JValue::from_object(relation::Api));
    env.add_function("run_query", introspect::run_query);
    env.add_function("statement", introspect::statement);
    env.add_function("load_result", introspect::load_result);
    env.add_function("load_relation", |relation: JValue| {
        introspect::existing_relation(relation::Relation::parse(&relation.to_string()))
    });
    env.add_global("pipe", windows::namespace());
}

#[cfg(test)]
mod tests;
mod windows;
