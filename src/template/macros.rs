//! The project's macros: every `{% macro %}` (and dbt's `{% test %}`) in the macro files, gathered into one
//! template so macros can call each other across files, plus which macros each macro calls, so a model's checksum
//! can include exactly the macros it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use crate::diagnostics::{Code, Diagnostic, FileId, SourceFile};

/// One macro definition.
#[derive(Debug, Clone)]
pub struct MacroDef {
    pub name: String,
    pub file: FileId,
    /// The whole definition, `{% macro ... %}` to `{% endmacro %}`.
    pub span: Range<usize>,
    pub text: String,
    /// Other project macros this macro calls.
    pub calls: BTreeSet<String>,
}

/// Every macro of the project and where each macro file sits in the combined template.
#[derive(Debug, Default)]
pub struct MacroSet {
    defs: BTreeMap<String, MacroDef>,
    /// (first line of the file in the combined template, file).
    file_lines: Vec<(usize, FileId)>,
}

impl MacroSet {
    /// Collects the macros of `files` and builds the combined template source.
    pub fn collect(files: &[(FileId, &SourceFile)]) -> (MacroSet, String) {
        let mut set = MacroSet::default();
        let mut combined = String::new();
        let mut line = 1;
        for (file_id, file) in files {
            set.file_lines.push((line, *file_id));
            let text = rewrite_test_blocks(&file.text);
            line += text.matches('\n').count() + 1;
            combined.push_str(&text);
            combined.push('\n');
            for (name, span) in definitions(&file.text) {
                let text = file.text[span.clone()].to_string();
                set.defs.insert(name.clone(), MacroDef { name, file: *file_id, span, text, calls: BTreeSet::new() });
            }
        }
        let names: BTreeSet<String> = set.defs.keys().cloned().collect();
        for def in set.defs.values_mut() {
            def.calls = called_names(&def.text, &names).into_iter().filter(|n| *n != def.name).collect();
        }
        (set, combined)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.defs.keys()
    }

    pub fn get(&self, name: &str) -> Option<&MacroDef> {
        self.defs.get(name)
    }

    /// Macros `text` calls, directly or through other macros.
    pub fn used_by(&self, text: &str) -> BTreeSet<String> {
        if self.defs.is_empty() {
            return BTreeSet::new();
        }
        let names: BTreeSet<String> = self.defs.keys().cloned().collect();
        let mut used = BTreeSet::new();
        let mut pending: Vec<String> = called_names(text, &names).into_iter().collect();
        while let Some(name) = pending.pop() {
            if used.insert(name.clone()) {
                if let Some(def) = self.defs.get(&name) {
                    pending.extend(def.calls.iter().cloned());
                }
            }
        }
        used
    }

    /// A diagnostic for an error raised in the combined macro template, pointing into the macro file.
    pub fn diagnostic_for(&self, err: &minijinja::Error, files: &[(FileId, &SourceFile)]) -> Diagnostic {
        let line = err.line().unwrap_or(1);
        let idx = self.file_lines.partition_point(|&(start, _)| start <= line).saturating_sub(1);
        let located = self.file_lines.get(idx).and_then(|&(start, file_id)| {
            let file = files.iter().find(|(id, _)| *id == file_id)?.1;
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

/// dbt writes custom generic tests as `{% test name(...) %}`; they are macros named `test_<name>`.
fn rewrite_test_blocks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        let end = tag.find("%}").map_or(tag.len(), |e| e + 2);
        let inner = tag[2..end.saturating_sub(2).max(2)].trim_matches('-').trim();
        if let Some(name) = inner.strip_prefix("test ") {
            out.push_str(&format!("{{% macro test_{} %}}", name.trim()));
        } else if inner == "endtest" {
            out.push_str("{% endmacro %}");
        } else {
            out.push_str(&tag[..end]);
        }
        rest = &tag[end..];
    }
    out.push_str(rest);
    out
}

/// (name, span of the whole definition) of every macro or test block in a file.
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
        let (keyword, prefix) = if inner.starts_with("macro ") {
            ("macro", "")
        } else if inner.starts_with("test ") {
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

/// Names from `names` that `text` calls as `name(`.
fn called_names(text: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if !(c.is_ascii_alphabetic() || c == b'_')
            || (i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let mut j = i;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if bytes.get(j) == Some(&b'(') && names.contains(&text[start..i]) {
            found.insert(text[start..i].to_string());
        }
    }
    found
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
        let (set, combined) = MacroSet::collect(&[(FileId(0), &a), (FileId(1), &b)]);
        assert_eq!(set.names().cloned().collect::<Vec<_>>(), vec!["cents", "money", "test_positive"]);
        assert_eq!(set.get("money").unwrap().calls, BTreeSet::from(["cents".to_string()]));
        assert_eq!(
            set.used_by("select {{ money('amount') }}"),
            BTreeSet::from(["cents".to_string(), "money".to_string()])
        );
        assert!(set.used_by("select money_total from x").is_empty());
        assert!(combined.contains("{% macro test_positive(model, column_name) %}select 1{% endmacro %}"));
    }
}
