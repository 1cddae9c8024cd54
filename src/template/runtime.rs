//! Calling macros at render time the way dbt does: bare names resolved in the calling package, then the root
//! project, then dbt's built-ins; `package.name`; `adapter.dispatch(name, namespace)` with the project's
//! `dispatch:` search order and the `pipe__`, `duckdb__`, `default__` prefixes; and `return(value)`, which makes a
//! macro call evaluate to `value` instead of its text.
//!
//! Each render imports the package templates it may need (see `MacroSet::may_call_macros`) and registers them
//! here; a macro value is only callable from the render that imported it, as minijinja binds macros to a render.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minijinja::value::{Object, Value as JValue};
use minijinja::{Error, ErrorKind, State};

use super::macros::{MacroSet, RAW_PREFIX};

/// Prefixes `adapter.dispatch` tries, in order: pipe's own implementations, then dbt-duckdb's (the projects pipe
/// runs were written for it), then the portable default.
pub const DISPATCH_PREFIXES: &[&str] = &["pipe", "duckdb", "default"];

/// Where `adapter.dispatch` looks for a namespace's macros (dbt's `dispatch:` in `dbt_project.yml`).
#[derive(Debug, Clone, Default)]
pub struct DispatchConfig {
    /// Namespace -> packages to search, in order.
    pub search_order: BTreeMap<String, Vec<String>>,
}

/// What the callables need to resolve a macro: which package defines which names.
#[derive(Debug)]
pub(super) struct MacroIndex {
    root: String,
    packages: BTreeMap<String, BTreeSet<String>>,
    dispatch: DispatchConfig,
    /// dbt's built-in functions by bare name (`concat`, `dateadd`, ...), for names a package also defines.
    builtins: BTreeMap<String, JValue>,
    /// The `dbt` namespace.
    dbt: BTreeMap<String, JValue>,
    target_type: String,
}

impl MacroIndex {
    pub(super) fn new(
        macros: &MacroSet,
        dispatch: DispatchConfig,
        builtins: BTreeMap<String, JValue>,
        dbt: BTreeMap<String, JValue>,
        target_type: String,
    ) -> MacroIndex {
        let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for key in macros.names() {
            if let Some(def) = macros.get(key) {
                packages.entry(def.package.clone()).or_default().insert(def.name.clone());
            }
        }
        MacroIndex { root: macros.root().to_string(), packages, dispatch, builtins, dbt, target_type }
    }

    fn defines(&self, package: &str, name: &str) -> bool {
        self.packages.get(package).is_some_and(|names| names.contains(name))
    }

    /// The packages whose macros are visible by bare name from `package`: itself, then the root project.
    fn bare_scope<'a>(&'a self, package: &'a str) -> impl Iterator<Item = &'a str> {
        std::iter::once(package).chain((package != self.root).then_some(self.root.as_str()))
    }

    /// The callable `adapter.dispatch(name, namespace)` returns.
    fn dispatch(self: &Arc<Self>, name: &str, namespace: Option<&str>) -> Result<JValue, Error> {
        let current = current_package().unwrap_or_else(|| self.root.clone());
        let search: Vec<String> = match namespace {
            Some(ns) => match self.dispatch.search_order.get(ns) {
                Some(order) => order.clone(),
                None if self.packages.contains_key(ns) && ns != self.root => vec![self.root.clone(), ns.to_string()],
                None => vec![ns.to_string()],
            },
            None => self.bare_scope(&current).map(str::to_string).collect(),
        };
        for package in &search {
            for prefix in DISPATCH_PREFIXES {
                let candidate = format!("{prefix}__{name}");
                if self.defines(package, &candidate) {
                    return Ok(self.macro_value(package, &candidate));
                }
            }
            if package == "dbt" {
                if let Some(builtin) = self.dbt.get(name) {
                    return Ok(builtin.clone());
                }
            }
        }
        if namespace.is_none() || namespace == Some("dbt") {
            if let Some(builtin) = self.dbt.get(name) {
                return Ok(builtin.clone());
            }
        }
        let tried: Vec<String> = DISPATCH_PREFIXES.iter().map(|p| format!("{p}__{name}")).collect();
        Err(Error::new(
            ErrorKind::UndefinedError,
            format!(
                "adapter.dispatch('{name}'{}) found no implementation: looked for {} in {}",
                namespace.map(|n| format!(", '{n}'")).unwrap_or_default(),
                tried.join(", "),
                if search.is_empty() { "no package".to_string() } else { search.join(", ") }
            ),
        ))
    }

    fn macro_value(&self, package: &str, name: &str) -> JValue {
        JValue::from_object(MacroCall { package: package.to_string(), name: name.to_string() })
    }
}

thread_local! {
    /// The package templates the current render imported, by package.
    static MODULES: RefCell<BTreeMap<String, JValue>> = const { RefCell::new(BTreeMap::new()) };
    /// The packages of the macros being called, innermost last: a bare name resolves in the innermost first.
    static CALLING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The undeclared keyword arguments of each macro being called, innermost last.
    static EXTRA_KWARGS: RefCell<Vec<Named>> = const { RefCell::new(Vec::new()) };
    /// The value `return()` was given, until the call of the macro it returns from takes it.
    static RETURNED: RefCell<Option<JValue>> = const { RefCell::new(None) };
}

/// Forgets the previous render's modules and calls; called when a render starts.
pub(super) fn reset() {
    MODULES.with(|m| m.borrow_mut().clear());
    CALLING.with(|c| c.borrow_mut().clear());
    EXTRA_KWARGS.with(|k| k.borrow_mut().clear());
    RETURNED.with(|r| r.borrow_mut().take());
}

/// Renders what follows as code of `package` (a package's model): its bare names find the package's macros first.
pub(super) fn enter_package(package: &str) {
    CALLING.with(|c| c.borrow_mut().push(package.to_string()));
}

fn current_package() -> Option<String> {
    CALLING.with(|c| c.borrow().last().cloned())
}

/// `__pipe_module(package, module)`: the render's prelude registers each package template it imported.
pub(super) fn register_module(package: String, module: JValue) -> String {
    MODULES.with(|m| m.borrow_mut().insert(package, module));
    String::new()
}

/// dbt's `return(value)`: ends the macro being called, which then evaluates to `value`.
pub(super) fn return_value(value: Option<JValue>) -> Result<JValue, Error> {
    RETURNED.with(|r| *r.borrow_mut() = Some(value.unwrap_or(JValue::from(()))));
    Err(Error::new(ErrorKind::InvalidOperation, "return() was called outside a macro"))
}

/// Calls macro `name` of `package`, catching its `return()`.
fn call_macro(state: &State<'_, '_>, package: &str, name: &str, args: &[JValue]) -> Result<JValue, Error> {
    let module = MODULES.with(|m| m.borrow().get(package).cloned()).ok_or_else(|| {
        Error::new(ErrorKind::InvalidOperation, format!("the macros of `{package}` are not loaded in this render"))
    })?;
    let raw = module.get_attr(&format!("{RAW_PREFIX}{name}"))?;
    if raw.is_undefined() {
        return Err(Error::new(ErrorKind::UndefinedError, format!("`{package}` has no macro `{name}`")));
    }
    // Keyword arguments the macro does not declare are its `kwargs` (Jinja2's catch-all, which dbt packages use and
    // minijinja's macros lack): they are taken out of the call and served by the `kwargs` global meanwhile.
    let (args, extra) = split_kwargs(&raw, args)?;
    CALLING.with(|c| c.borrow_mut().push(package.to_string()));
    EXTRA_KWARGS.with(|k| k.borrow_mut().push(extra));
    let result = raw.call(state, &args);
    EXTRA_KWARGS.with(|k| k.borrow_mut().pop());
    CALLING.with(|c| c.borrow_mut().pop());
    match result {
        Ok(value) => Ok(value),
        Err(err) => match RETURNED.with(|r| r.borrow_mut().take()) {
            Some(value) => Ok(value),
            None => Err(err),
        },
    }
}

/// Keyword arguments by name.
type Named = Vec<(String, JValue)>;

/// `args` without the keyword arguments `raw` does not declare, and those, as (name, value).
fn split_kwargs(raw: &JValue, args: &[JValue]) -> Result<(Vec<JValue>, Named), Error> {
    let declared: Vec<String> = match raw.get_attr("arguments") {
        Ok(list) if !list.is_undefined() => list.try_iter()?.map(|v| v.to_string()).collect(),
        _ => return Ok((args.to_vec(), Vec::new())),
    };
    let (positional, kwargs): (minijinja::value::Rest<JValue>, minijinja::value::Kwargs) =
        minijinja::value::from_args(args)?;
    let names: Vec<String> = kwargs.args().map(str::to_string).collect();
    if names.iter().all(|n| declared.contains(n) || n == "caller") {
        return Ok((args.to_vec(), Vec::new()));
    }
    let mut kept = Vec::new();
    let mut extra = Vec::new();
    for name in names {
        let value: JValue = kwargs.get(&name)?;
        if declared.contains(&name) || name == "caller" {
            kept.push((name, value));
        } else {
            extra.push((name, value));
        }
    }
    let mut call: Vec<JValue> = positional.0;
    if !kept.is_empty() {
        call.push(JValue::from(kept.into_iter().collect::<minijinja::value::Kwargs>()));
    }
    Ok((call, extra))
}

/// `kwargs`: the undeclared keyword arguments of the macro being called.
#[derive(Debug)]
pub(super) struct ExtraKwargs;

impl Object for ExtraKwargs {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let key = key.as_str()?;
        EXTRA_KWARGS.with(|k| k.borrow().last().and_then(|e| e.iter().find(|(n, _)| n == key).map(|(_, v)| v.clone())))
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        let keys: Vec<JValue> = EXTRA_KWARGS
            .with(|k| k.borrow().last().map(|e| e.iter().map(|(n, _)| JValue::from(n.clone())).collect()))
            .unwrap_or_default();
        minijinja::value::Enumerator::Values(keys)
    }

    fn call_method(self: &Arc<Self>, state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        super::pycompat::call_method(state, &JValue::from_dyn_object(Arc::clone(self)), method, args)
    }
}

/// A macro of a known package: `package.name`, or what `adapter.dispatch` chose.
#[derive(Debug)]
struct MacroCall {
    package: String,
    name: String,
}

impl Object for MacroCall {
    fn call(self: &Arc<Self>, state: &State<'_, '_>, args: &[JValue]) -> Result<JValue, Error> {
        call_macro(state, &self.package, &self.name, args)
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<macro {}.{}>", self.package, self.name)
    }
}

/// A macro called by its bare name: found in the calling package, then the root project, then dbt's built-ins.
#[derive(Debug)]
pub(super) struct BareMacro {
    index: Arc<MacroIndex>,
    name: String,
}

impl Object for BareMacro {
    fn call(self: &Arc<Self>, state: &State<'_, '_>, args: &[JValue]) -> Result<JValue, Error> {
        let current = current_package().unwrap_or_else(|| self.index.root.clone());
        if let Some(package) = self.index.bare_scope(&current).find(|p| self.index.defines(p, &self.name)) {
            let package = package.to_string();
            return call_macro(state, &package, &self.name, args);
        }
        if let Some(builtin) = self.index.builtins.get(&self.name) {
            return builtin.call(state, args);
        }
        let owners: Vec<&String> =
            self.index.packages.iter().filter(|(_, names)| names.contains(&self.name)).map(|(p, _)| p).collect();
        Err(Error::new(
            ErrorKind::UndefinedError,
            format!(
                "macro `{}` is not defined in `{current}` or the root project; it is in {}: call it as `{}.{}`",
                self.name,
                owners.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", "),
                owners.first().map(|o| o.as_str()).unwrap_or("package"),
                self.name
            ),
        ))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<macro {}>", self.name)
    }
}

/// A package's namespace: `dbt_utils.star` is the macro `star` of `dbt_utils`.
#[derive(Debug)]
pub(super) struct Namespace {
    index: Arc<MacroIndex>,
    package: String,
}

impl Object for Namespace {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        let name = key.as_str()?;
        self.index.defines(&self.package, name).then(|| self.index.macro_value(&self.package, name))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<package {}>", self.package)
    }
}

/// dbt's `adapter`: `dispatch`, `quote`, `type`. Methods that need the warehouse are not supported yet.
#[derive(Debug)]
pub(super) struct Adapter {
    index: Arc<MacroIndex>,
}

impl Object for Adapter {
    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        match method {
            "dispatch" => {
                let (name, namespace, kwargs): (String, Option<String>, minijinja::value::Kwargs) =
                    minijinja::value::from_args(args)?;
                let namespace = match namespace {
                    Some(ns) => Some(ns),
                    None => kwargs.get::<Option<String>>("macro_namespace")?,
                };
                // `packages=` is dbt's deprecated spelling of a search order; `macro_namespace` wins.
                let _: Option<JValue> = kwargs.get("packages")?;
                kwargs.assert_all_used()?;
                self.index.dispatch(&name, namespace.as_deref())
            }
            "quote" => {
                let (identifier,): (String,) = minijinja::value::from_args(args)?;
                Ok(JValue::from_safe_string(format!("\"{}\"", identifier.replace('"', "\"\""))))
            }
            "type" => Ok(JValue::from(self.index.target_type.clone())),
            "get_columns_in_relation" => {
                let (relation,): (JValue,) = minijinja::value::from_args(args)?;
                super::introspect::columns_in_relation(&relation)
            }
            "get_relation" => {
                let (database, schema, identifier, kwargs): (
                    Option<JValue>,
                    Option<String>,
                    Option<String>,
                    minijinja::value::Kwargs,
                ) = minijinja::value::from_args(args)?;
                let _ = database.or(kwargs.get::<Option<JValue>>("database")?);
                let schema = schema.or(kwargs.get::<Option<String>>("schema")?);
                let identifier = identifier.or(kwargs.get::<Option<String>>("identifier")?).unwrap_or_default();
                kwargs.assert_all_used()?;
                let relation = super::relation::Relation { database: None, schema, identifier, kind: None };
                super::introspect::existing_relation(relation)
            }
            // Not `UnknownMethod`: minijinja would then ask the Python-method hook, which knows no `adapter`.
            other => {
                Err(Error::new(ErrorKind::InvalidOperation, format!("`adapter.{other}` is not supported by pipe yet")))
            }
        }
    }
}

/// Registers the macro callables, the package namespaces, `adapter` and `return` in `env`.
pub(super) fn register(env: &mut minijinja::Environment<'static>, index: Arc<MacroIndex>, protected: &[&str]) {
    let names: BTreeSet<String> = index.packages.values().flatten().cloned().collect();
    for name in names {
        if protected.contains(&name.as_str()) {
            continue;
        }
        env.add_global(name.clone(), JValue::from_object(BareMacro { index: Arc::clone(&index), name }));
    }
    for package in index.packages.keys() {
        if package != "dbt" {
            let namespace = Namespace { index: Arc::clone(&index), package: package.clone() };
            env.add_global(package.clone(), JValue::from_object(namespace));
        }
    }
    env.add_global("adapter", JValue::from_object(Adapter { index }));
    env.add_function("return", return_value);
    env.add_global("kwargs", JValue::from_object(ExtraKwargs));
    env.add_function("__pipe_module", register_module);
}
