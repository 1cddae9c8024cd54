//! The project's macros and its packages' macros: every `{% macro %}` (and dbt's `{% test %}`) of each package
//! gathered into one template per package, so a package's macros call each other by bare name as in dbt, plus
//! which macros each macro calls, so a model's checksum can include exactly the macros it uses.
//!
//! In each package template a macro `name` is defined as `__raw__name`: every call, bare or `package.name`, goes
//! through a callable that resolves the name with dbt's rules (the calling package first, then the root project,
//! then dbt's built-ins) and catches `return()`, which a raw call between siblings would bypass.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::diagnostics::{Code, Diagnostic, FileId, SourceFile};

/// Prefix of a macro's name inside its package template.
pub(super) const RAW_PREFIX: &str = "__raw__";

/// Name of the template that holds a package's macros.
pub(super) fn template_name(package: &str) -> String {
    format!("__pipe_macros__/{package}")
}

/// One macro file and the package it belongs to.
#[derive(Debug, Clone, Copy)]
pub struct MacroSource<'a> {
    pub package: &'a str,
    pub file: FileId,
    pub source: &'a SourceFile,
}

/// One macro definition.
#[derive(Debug, Clone)]
pub struct MacroDef {
    pub name: String,
    /// The package that defines it (the root project's name for the project's own macros).
    pub package: String,
    pub file: FileId,
    /// The whole definition, `{% macro ... %}` to `{% endmacro %}`.
    pub span: Range<usize>,
    pub text: String,
    /// Keys (see `MacroSet::key`) of the macros this macro calls, directly or by `adapter.dispatch`.
    pub calls: BTreeSet<String>,
}

/// The macros of one package and where each of its files sits in the package's template.
#[derive(Debug, Default)]
struct PackageMacros {
    /// Macro name -> key in `MacroSet::defs`.
    names: BTreeSet<String>,
    /// (first line of the file in the package template, file).
    file_lines: Vec<(usize, FileId)>,
}

/// Every macro of the project and its packages.
#[derive(Debug, Default)]
pub struct MacroSet {
    root: String,
    /// Keyed by `key(package, name)`: the bare name for the root project's macros, `package.name` for others.
    defs: BTreeMap<String, MacroDef>,
    packages: BTreeMap<String, PackageMacros>,
}

impl MacroSet {
    /// Collects the macros of `files` (the root project is `root`) and builds each package's template source.
    pub fn collect(root: &str, files: &[MacroSource<'_>]) -> (MacroSet, Vec<(String, String)>) {
        let mut set = MacroSet { root: root.to_string(), ..MacroSet::default() };
        let mut sources: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for file in files {
            let (combined, line) = sources.entry(file.package.to_string()).or_insert_with(|| (String::new(), 1));
            let package = set.packages.entry(file.package.to_string()).or_default();
            package.file_lines.push((*line, file.file));
            let text = super::pycompat::rewrite_literals(&rewrite_definitions(&file.source.text)).0;
            *line += text.matches('\n').count() + 1;
            combined.push_str(&text);
            combined.push('\n');
            for (name, span) in definitions(&file.source.text) {
                let text = file.source.text[span.clone()].to_string();
                package.names.insert(name.clone());
                let def = MacroDef {
                    name: name.clone(),
                    package: file.package.to_string(),
                    file: file.file,
                    span,
                    text,
                    calls: BTreeSet::new(),
                };
                let key = if file.package == root { name.clone() } else { format!("{}.{name}", file.package) };
                set.defs.insert(key, def);
            }
        }
        let calls: Vec<(String, BTreeSet<String>)> =
            set.defs.iter().map(|(key, def)| (key.clone(), set.called_by(&def.text, &def.package))).collect();
        for (key, mut called) in calls {
            called.remove(&key);
            if let Some(def) = set.defs.get_mut(&key) {
                def.calls = called;
            }
        }
        let templates = sources.into_iter().map(|(package, (text, _))| (template_name(&package), text)).collect();
        (set, templates)
    }

    /// The key a macro is known by: its bare name in the root project, `package.name` in a package.
    pub fn key(&self, package: &str, name: &str) -> String {
        if package == self.root {
            name.to_string()
        } else {
            format!("{package}.{name}")
        }
    }

    /// dbt's unique id of the macro with key `key`: `macro.<package>.<name>`.
    pub fn unique_id(&self, key: &str) -> String {
        match self.defs.get(key) {
            Some(def) => format!("macro.{}.{}", def.package, def.name),
            None => format!("macro.{}.{key}", self.root),
        }
    }

    /// The root project's name.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Every macro's key, root project's first by name, then the packages'.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.defs.keys()
    }

    pub fn get(&self, key: &str) -> Option<&MacroDef> {
        self.defs.get(key)
    }

    /// Whether `package` (the root project or an installed package) defines `name`.
    pub fn defines(&self, package: &str, name: &str) -> bool {
        self.packages.get(package).is_some_and(|p| p.names.contains(name))
    }

    /// The packages that define macros (the root project among them when it does).
    pub fn packages(&self) -> impl Iterator<Item = &String> {
        self.packages.keys()
    }

    /// Every name defined by some package: the names a template may call bare.
    pub fn all_names(&self) -> BTreeSet<&str> {
        self.packages.values().flat_map(|p| p.names.iter().map(String::as_str)).collect()
    }

    /// Keys of the macros `text` (written in `package`) calls directly: bare names of the package's own macros or
    /// the root project's, `package.name`, and every implementation `adapter.dispatch('name', ...)` may pick.
    fn called_by(&self, text: &str, package: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for (qualifier, name) in call_names(text) {
            match qualifier {
                Some(qualifier) if self.defines(qualifier, name) => {
                    found.insert(self.key(qualifier, name));
                }
                Some(_) => {}
                None => {
                    if self.defines(package, name) {
                        found.insert(self.key(package, name));
                    } else if self.defines(&self.root, name) {
                        found.insert(self.key(&self.root, name));
                    }
                }
            }
        }
        for name in dispatched_names(text) {
            let suffix = format!("__{name}");
            for def in self.defs.values() {
                if def.name.ends_with(&suffix) || def.name == name {
                    found.insert(self.key(&def.package, &def.name));
                }
            }
        }
        found
    }

    /// Keys of the macros `text` (a model, test or hook of the root project) calls, directly or through other
    /// macros.
    pub fn used_by(&self, text: &str) -> BTreeSet<String> {
        if self.defs.is_empty() {
            return BTreeSet::new();
        }
        let mut used = BTreeSet::new();
        let mut pending: Vec<String> = self.called_by(text, &self.root).into_iter().collect();
        while let Some(key) = pending.pop() {
            if used.insert(key.clone()) {
                if let Some(def) = self.defs.get(&key) {
                    pending.extend(def.calls.iter().cloned());
                }
            }
        }
        used
    }

    /// Whether rendering `text` may call a macro: it names one, a package, or `adapter`. A template reaches a
    /// macro only through a name written in it, so a model that names none renders without loading them.
    pub fn may_call_macros(&self, text: &str) -> bool {
        if self.defs.is_empty() {
            return false;
        }
        identifiers(text).any(|word| {
            word == "adapter"
                || self.packages.contains_key(word)
                || self.packages.values().any(|p| p.names.contains(word))
        })
    }

    /// A diagnostic for an error raised in a package's macro template, pointing into the macro file.
    pub fn diagnostic_for(&self, err: &minijinja::Error, files: &[MacroSource<'_>]) -> Diagnostic {
        let line = err.line().unwrap_or(1);
        let package = err.name().and_then(|n| n.strip_prefix("__pipe_macros__/")).unwrap_or(&self.root);
        let file_lines = self.packages.get(package).map(|p| p.file_lines.as_slice()).unwrap_or_default();
        let idx = file_lines.partition_point(|&(start, _)| start <= line).saturating_sub(1);
        let located = file_lines.get(idx).and_then(|&(start, file_id)| {
            let file = files.iter().find(|f| f.file == file_id)?.source;
            let local_line = line + 1 - start;
            let begin = file.offset_of(local_line, 1);
            let end = file.text[begin..].find('\n').map_or(file.text.len(), |e| begin + e);
            Some((file_id, begin..end, file.text[begin..end].to_string()))
        });
        match located {
            Some((file_id, span, text)) => super::template_error(err, file_id, span, &text, self),
            None => Diagnostic::error(Code::JinjaRender, format!("macro error: {err}")),
        }
    }
}

/// A macro file as its package template holds it: dbt's `{% test name(...) %}` blocks are macros named
/// `test_<name>`, and every macro `name` is defined as `__raw__name`. Only the keyword and the name change, so
/// line numbers stay those of the file.
fn rewrite_definitions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        let end = tag.find("%}").map_or(tag.len(), |e| e + 2);
        let head = tag[2..].trim_start_matches('-');
        let lead = tag.len() - head.len();
        let keyword_at = lead + (head.len() - head.trim_start().len());
        let after_keyword = |keyword: &str| {
            tag[keyword_at..end].strip_prefix(keyword).filter(|r| r.starts_with(char::is_whitespace)).map(|r| {
                let name_at = keyword_at + keyword.len() + (r.len() - r.trim_start().len());
                name_at
            })
        };
        if let Some(name_at) = after_keyword("test") {
            out.push_str(&tag[..keyword_at]);
            out.push_str("macro");
            out.push_str(&tag[keyword_at + 4..name_at]);
            out.push_str(RAW_PREFIX);
            out.push_str("test_");
            out.push_str(&tag[name_at..end]);
        } else if let Some(name_at) = after_keyword("macro") {
            out.push_str(&tag[..name_at]);
            out.push_str(RAW_PREFIX);
            out.push_str(&tag[name_at..end]);
        } else if tag[keyword_at..end].starts_with("endtest") {
            out.push_str(&tag[..keyword_at]);
            out.push_str("endmacro");
            out.push_str(&tag[keyword_at + "endtest".len()..end]);
        } else {
            out.push_str(&tag[..end]);
        }
        rest = &tag[end..];
    }
    out.push_str(rest);
    out
}

/// (name, span of the whole definition) of every macro or test block in a file; a test `name` is `test_name`.
fn definitions(text: &str) -> Vec<(String, Range<usize>)> {
    let mut defs = Vec::new();
    let mut search = 0;
    while let Some(pos) = text[search..].find("{%") {
        let start = search + pos;
        let Some(end_rel) = text[start..].find("%}") else {
            break;
        };
        let inner = text[start + 2..start + end_rel].trim_matches('-').trim();
        search = start + end_rel + 2;
        let (keyword, prefix) = if inner.starts_with("macro ") || inner.starts_with("macro\n") {
            ("macro", "")
        } else if inner.starts_with("test ") || inner.starts_with("test\n") {
            ("test", "test_")
        } else {
            continue;
        };
        let name: String =
            inner[keyword.len()..].trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue;
        }
        let closing = format!("end{keyword}");
        let mut end = text.len();
        let mut scan = search;
        while let Some(p) = text[scan..].find("{%") {
            let tag_start = scan + p;
            let Some(e) = text[tag_start..].find("%}") else {
                break;
            };
            let tag_inner = text[tag_start + 2..tag_start + e].trim_matches('-').trim();
            scan = tag_start + e + 2;
            if tag_inner == closing {
                end = scan;
                break;
            }
        }
        defs.push((format!("{prefix}{name}"), start..end));
        search = end;
    }
    defs
}

/// Identifiers of `text` (words of letters, digits and `_` not starting with a digit).
fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

/// Every `name(` and `qualifier.name(` call written in `text`, as (qualifier, name).
fn call_names(text: &str) -> Vec<(Option<&str>, &str)> {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let mut j = i;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if bytes.get(j) == Some(&b'(') {
            let name = &text[start..i];
            let qualifier = (start > 1 && bytes[start - 1] == b'.').then(|| {
                let end = start - 1;
                let mut q = end;
                while q > 0 && is_ident(bytes[q - 1]) {
                    q -= 1;
                }
                &text[q..end]
            });
            found.push((qualifier.filter(|q| !q.is_empty()), name));
        }
    }
    found
}

/// The macro names `adapter.dispatch('name', ...)` calls in `text` ask for.
fn dispatched_names(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("dispatch(") {
        rest = &rest[at + "dispatch(".len()..];
        let trimmed = rest.trim_start();
        let Some(quote) = trimmed.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        if let Some(end) = trimmed[1..].find(quote) {
            names.push(&trimmed[1..1 + end]);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn collects_definitions_and_transitive_use() {
        let a = SourceFile::new(
            "macros/a.sql".into(),
            Arc::from("{% macro cents(x) %}{{ x }} * 100{% endmacro %}\n{%- macro money(x) -%}round({{ cents(x) }}, 2){%- endmacro %}\n"),
        );
        let b = SourceFile::new(
            "macros/b.sql".into(),
            Arc::from("{% test positive(model, column_name) %}select 1{% endtest %}\n"),
        );
        let files = [
            MacroSource { package: "shop", file: FileId(0), source: &a },
            MacroSource { package: "shop", file: FileId(1), source: &b },
        ];
        let (set, templates) = MacroSet::collect("shop", &files);
        assert_eq!(set.names().cloned().collect::<Vec<_>>(), vec!["cents", "money", "test_positive"]);
        assert_eq!(set.get("money").unwrap().calls, BTreeSet::from(["cents".to_string()]));
        assert_eq!(
            set.used_by("select {{ money('amount') }}"),
            BTreeSet::from(["cents".to_string(), "money".to_string()])
        );
        assert!(set.used_by("select money_total from x").is_empty());
        let (_, shop) = &templates[0];
        assert!(shop.contains("{% macro __raw__test_positive(model, column_name) %}select 1{% endmacro %}"), "{shop}");
        assert!(shop.contains("{%- macro __raw__money(x) -%}"), "{shop}");
    }

    #[test]
    fn package_macros_are_keyed_by_package_and_found_through_dispatch() {
        let root =
            SourceFile::new("macros/a.sql".into(), Arc::from("{% macro local() %}{{ util.sk(['a']) }}{% endmacro %}"));
        let util = SourceFile::new(
            "dbt_packages/util/macros/sk.sql".into(),
            Arc::from("{% macro sk(cols) %}{{ return(adapter.dispatch('sk', 'util')(cols)) }}{% endmacro %}\n{% macro default__sk(cols) %}md5({{ helper() }}){% endmacro %}\n{% macro helper() %}x{% endmacro %}"),
        );
        let files = [
            MacroSource { package: "shop", file: FileId(0), source: &root },
            MacroSource { package: "util", file: FileId(1), source: &util },
        ];
        let (set, _) = MacroSet::collect("shop", &files);
        assert_eq!(
            set.used_by("{{ local() }}"),
            BTreeSet::from(["local", "util.sk", "util.default__sk", "util.helper"].map(String::from))
        );
        assert!(set.may_call_macros("select {{ util.sk(['id']) }}"));
        assert!(!set.may_call_macros("select {{ ref('x') }}"));
    }
}
