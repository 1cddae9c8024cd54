//! The Python methods dbt's Jinja code calls on values (`name.lower()`, `cols.append(c)`, `d.items()`,
//! `config.update({...})`), which minijinja does not have: string, list and dict methods through minijinja's
//! unknown-method hook, and mutable lists and dicts.
//!
//! minijinja's values are immutable, and dbt code builds lists with `{% set xs = [] %}{% do xs.append(x) %}`. A
//! `{% set name = [...] %}` or `{% set name = {...} %}` is rewritten to make a mutable list or dict
//! (`__pipe_list([...])`); the rewrite records where it inserted text, so error positions map back to the file.

use std::sync::{Arc, Mutex};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};

/// Text inserted by `rewrite_literals`: (offset in the original text, bytes inserted there).
pub type Insertions = Vec<(usize, usize)>;

/// Wraps the list and dict literals assigned by `{% set %}` in `__pipe_list(...)` / `__pipe_dict(...)`.
pub fn rewrite_literals(text: &str) -> (String, Insertions) {
    let mut out = String::with_capacity(text.len());
    let mut insertions = Vec::new();
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("{%") {
        let start = search + found;
        let Some(close) = text[start..].find("%}") else { break };
        let end = start + close;
        search = end + 2;
        let body = &text[start + 2..end];
        let inner = body.trim_start_matches('-').trim_start();
        let Some(rest) = inner.strip_prefix("set ") else { continue };
        let Some(eq) = rest.find('=') else { continue };
        if rest[..eq].contains(['(', '[', '{', '"', '\'']) || rest[eq + 1..].starts_with('=') {
            continue;
        }
        // The offset just past `=` in `text`; the literal follows it.
        let rhs_start = start + 2 + (body.len() - inner.len()) + "set ".len() + eq + 1;
        let rhs = &text[rhs_start..end];
        let rhs_trimmed_end = rhs.trim_end_matches('-').trim_end();
        let lead = rhs.len() - rhs.trim_start().len();
        let literal_start = rhs_start + lead;
        let literal_end = rhs_start + rhs_trimmed_end.len();
        if literal_start >= literal_end {
            continue;
        }
        let literal = &text[literal_start..literal_end];
        let function = match literal.as_bytes()[0] {
            b'[' => "__pipe_list(",
            b'{' => "__pipe_dict(",
            _ => continue,
        };
        if !encloses_whole(literal) {
            continue;
        }
        out.push_str(&text[copied..literal_start]);
        out.push_str(function);
        insertions.push((literal_start, function.len()));
        out.push_str(literal);
        out.push(')');
        insertions.push((literal_end, 1));
        copied = literal_end;
    }
    out.push_str(&text[copied..]);
    (out, insertions)
}

/// Whether the bracket opening `literal` closes at its last character (outside string literals).
fn encloses_whole(literal: &str) -> bool {
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in literal.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => {
                depth -= 1;
                if depth == 0 {
                    return i + c.len_utf8() == literal.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// The offset in the original text of `offset` in the rewritten text.
pub fn original_offset(offset: usize, insertions: &Insertions) -> usize {
    let mut shift = 0;
    for &(at, len) in insertions {
        if at + shift + len <= offset {
            shift += len;
        } else if at + shift < offset {
            return at;
        } else {
            break;
        }
    }
    offset - shift
}

/// `value` as Python holds it: a list or dict literal (minijinja makes them immutable) becomes a mutable copy,
/// its items too, so `{% do d.update({k: []}) %}{% do d[k].append(x) %}` works; anything else is kept as is.
fn mutable(value: Value) -> Value {
    if let Some(items) = value.downcast_object_ref::<Vec<Value>>() {
        return MutableList::from_values(items.iter().cloned().map(mutable).collect());
    }
    if let Some(map) = value.downcast_object_ref::<std::collections::BTreeMap<Value, Value>>() {
        return MutableDict::from_pairs(map.iter().map(|(k, v)| (k.clone(), mutable(v.clone()))).collect());
    }
    value
}

/// A list that `append`, `extend`, `insert`, `pop`, `remove` and `clear` change in place.
#[derive(Debug, Default)]
pub struct MutableList(Mutex<Vec<Value>>);

/// A dict that `update`, `pop`, `setdefault` and `clear` change in place; keys keep their insertion order.
#[derive(Debug, Default)]
pub struct MutableDict(Mutex<Vec<(Value, Value)>>);

impl MutableList {
    pub fn from_values(values: Vec<Value>) -> Value {
        Value::from_object(MutableList(Mutex::new(values)))
    }

    fn items(&self) -> Vec<Value> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl MutableDict {
    pub fn from_pairs(pairs: Vec<(Value, Value)>) -> Value {
        Value::from_object(MutableDict(Mutex::new(pairs)))
    }

    fn pairs(&self) -> Vec<(Value, Value)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn insert(&self, key: Value, value: Value) {
        let value = mutable(value);
        if let Ok(mut pairs) = self.0.lock() {
            match pairs.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => pairs.push((key, value)),
            }
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

impl Object for MutableList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.0.lock().ok()?;
        let index = key.as_i64()?;
        let index = if index < 0 { items.len() as i64 + index } else { index };
        items.get(usize::try_from(index).ok()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        self.0.lock().ok().map(|v| v.len())
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        let mut items = self.0.lock().map_err(|_| invalid("a list was poisoned"))?;
        match method {
            "append" => {
                let (value,): (Value,) = minijinja::value::from_args(args)?;
                items.push(mutable(value));
                Ok(Value::from(()))
            }
            "extend" => {
                let (more,): (Value,) = minijinja::value::from_args(args)?;
                items.extend(more.try_iter()?.map(mutable));
                Ok(Value::from(()))
            }
            "insert" => {
                let (index, value): (i64, Value) = minijinja::value::from_args(args)?;
                let len = items.len() as i64;
                let at = if index < 0 { (len + index).max(0) } else { index.min(len) };
                items.insert(at as usize, mutable(value));
                Ok(Value::from(()))
            }
            "pop" => {
                let (index,): (Option<i64>,) = minijinja::value::from_args(args)?;
                let len = items.len() as i64;
                let index = index.map(|i| if i < 0 { len + i } else { i }).unwrap_or(len - 1);
                if index < 0 || index >= len {
                    return Err(invalid("pop index out of range"));
                }
                Ok(items.remove(index as usize))
            }
            "remove" => {
                let (value,): (Value,) = minijinja::value::from_args(args)?;
                let at =
                    items.iter().position(|v| *v == value).ok_or_else(|| invalid("list.remove(x): x not in list"))?;
                items.remove(at);
                Ok(Value::from(()))
            }
            "clear" => {
                items.clear();
                Ok(Value::from(()))
            }
            "reverse" => {
                items.reverse();
                Ok(Value::from(()))
            }
            "copy" => Ok(MutableList::from_values(items.clone())),
            "index" => {
                let (value,): (Value,) = minijinja::value::from_args(args)?;
                items.iter().position(|v| *v == value).map(Value::from).ok_or_else(|| invalid("value is not in list"))
            }
            "count" => {
                let (value,): (Value,) = minijinja::value::from_args(args)?;
                Ok(Value::from(items.iter().filter(|v| **v == value).count()))
            }
            other => Err(Error::new(ErrorKind::UnknownMethod, format!("list has no method `{other}`"))),
        }
    }
}

impl Object for MutableDict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.lock().ok()?.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.pairs().into_iter().map(|(k, _)| k).collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        self.0.lock().ok().map(|v| v.len())
    }

    fn call_method(self: &Arc<Self>, state: &State<'_, '_>, method: &str, args: &[Value]) -> Result<Value, Error> {
        match method {
            "update" => {
                let (other, kwargs): (Option<Value>, Kwargs) = minijinja::value::from_args(args)?;
                if let Some(other) = other {
                    for key in other.try_iter()? {
                        let value = other.get_item(&key)?;
                        self.insert(key, value);
                    }
                }
                for key in kwargs.args() {
                    self.insert(Value::from(key), kwargs.get::<Value>(key)?);
                }
                Ok(Value::from(()))
            }
            "pop" => {
                let (key, default): (Value, Option<Value>) = minijinja::value::from_args(args)?;
                let mut pairs = self.0.lock().map_err(|_| invalid("a dict was poisoned"))?;
                match pairs.iter().position(|(k, _)| *k == key) {
                    Some(at) => Ok(pairs.remove(at).1),
                    None => default.ok_or_else(|| invalid(format!("key {key} is not in the dict"))),
                }
            }
            "setdefault" => {
                let (key, default): (Value, Option<Value>) = minijinja::value::from_args(args)?;
                if let Some(existing) = self.get_value(&key) {
                    return Ok(existing);
                }
                self.insert(key.clone(), default.unwrap_or(Value::from(())));
                Ok(self.get_value(&key).unwrap_or_default())
            }
            "clear" => {
                if let Ok(mut pairs) = self.0.lock() {
                    pairs.clear();
                }
                Ok(Value::from(()))
            }
            "copy" => Ok(MutableDict::from_pairs(self.pairs())),
            _ => map_method(state, &Value::from_dyn_object(self.clone()), method, args),
        }
    }
}

/// `__pipe_list(value)`: a mutable copy of a list.
pub fn pipe_list(value: Option<Value>) -> Result<Value, Error> {
    let items: Vec<Value> = match value {
        Some(value) => value.try_iter()?.map(mutable).collect(),
        None => Vec::new(),
    };
    Ok(MutableList::from_values(items))
}

/// `__pipe_dict(value)`: a mutable copy of a dict.
pub fn pipe_dict(value: Option<Value>) -> Result<Value, Error> {
    let mut pairs = Vec::new();
    if let Some(value) = value {
        for key in value.try_iter()? {
            let item = value.get_item(&key)?;
            pairs.push((key, mutable(item)));
        }
    }
    Ok(MutableDict::from_pairs(pairs))
}

/// The unknown-method hook: Python's string, dict and list methods.
pub fn call_method(state: &State<'_, '_>, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::String => string_method(value.as_str().unwrap_or_default(), method, args),
        ValueKind::Map => map_method(state, value, method, args),
        ValueKind::Seq => match method {
            "copy" => pipe_list(Some(value.clone())),
            "index" | "count" => {
                let (needle,): (Value,) = minijinja::value::from_args(args)?;
                let items: Vec<Value> = value.try_iter()?.collect();
                if method == "count" {
                    return Ok(Value::from(items.iter().filter(|v| **v == needle).count()));
                }
                items.iter().position(|v| *v == needle).map(Value::from).ok_or_else(|| invalid("value is not in list"))
            }
            "append" | "extend" | "insert" | "pop" | "remove" => Err(invalid(format!(
                "`{method}` changes a list, and this list cannot be changed: create it with `{{% set name = [] %}}`"
            ))),
            _ => unknown(value, method),
        },
        _ => unknown(value, method),
    }
}

fn unknown(value: &Value, method: &str) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::UnknownMethod, format!("{} has no method named {method}", value.kind())))
}

fn map_method(_state: &State<'_, '_>, value: &Value, method: &str, args: &[Value]) -> Result<Value, Error> {
    match method {
        "items" => {
            let pairs: Vec<Value> = value
                .try_iter()?
                .map(|key| Ok(Value::from(vec![key.clone(), value.get_item(&key)?])))
                .collect::<Result<_, Error>>()?;
            Ok(Value::from(pairs))
        }
        "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
        "values" => {
            let values: Vec<Value> = value.try_iter()?.map(|key| value.get_item(&key)).collect::<Result<_, _>>()?;
            Ok(Value::from(values))
        }
        "get" => {
            let (key, default): (Value, Option<Value>) = minijinja::value::from_args(args)?;
            let found = value.get_item(&key)?;
            Ok(if found.is_undefined() { default.unwrap_or(Value::from(())) } else { found })
        }
        "copy" => pipe_dict(Some(value.clone())),
        "update" | "pop" | "setdefault" => Err(invalid(format!(
            "`{method}` changes a dict, and this dict cannot be changed: create it with `{{% set name = {{}} %}}`"
        ))),
        _ => unknown(value, method),
    }
}

fn string_method(s: &str, method: &str, args: &[Value]) -> Result<Value, Error> {
    let chars_arg = |args: &[Value]| -> Result<Option<String>, Error> {
        let (chars,): (Option<String>,) = minijinja::value::from_args(args)?;
        Ok(chars)
    };
    let strip = |s: &str, chars: &Option<String>, left: bool, right: bool| -> String {
        let matches = |c: char| chars.as_ref().map_or(c.is_whitespace(), |set| set.contains(c));
        let mut out = s;
        if left {
            out = out.trim_start_matches(matches);
        }
        if right {
            out = out.trim_end_matches(matches);
        }
        out.to_string()
    };
    Ok(match method {
        "lower" => Value::from(s.to_lowercase()),
        "upper" => Value::from(s.to_uppercase()),
        "strip" => Value::from(strip(s, &chars_arg(args)?, true, true)),
        "lstrip" => Value::from(strip(s, &chars_arg(args)?, true, false)),
        "rstrip" => Value::from(strip(s, &chars_arg(args)?, false, true)),
        "title" => Value::from(title(s)),
        "capitalize" => {
            let mut chars = s.chars();
            Value::from(match chars.next() {
                Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect::<String>(),
                None => String::new(),
            })
        }
        "startswith" | "endswith" => {
            let (prefix,): (Value,) = minijinja::value::from_args(args)?;
            let options: Vec<String> = match prefix.kind() {
                ValueKind::Seq => prefix.try_iter()?.map(|v| v.to_string()).collect(),
                _ => vec![prefix.to_string()],
            };
            let hit = options.iter().any(|p| if method == "startswith" { s.starts_with(p) } else { s.ends_with(p) });
            Value::from(hit)
        }
        "replace" => {
            let (old, new, count): (String, String, Option<i64>) = minijinja::value::from_args(args)?;
            Value::from(match count {
                Some(n) if n >= 0 => s.replacen(&old, &new, n as usize),
                _ => s.replace(&old, &new),
            })
        }
        "split" | "rsplit" => {
            let (sep, maxsplit): (Option<String>, Option<i64>) = minijinja::value::from_args(args)?;
            let limit = maxsplit.filter(|m| *m >= 0).map(|m| m as usize + 1);
            let parts: Vec<String> = match (sep.as_deref(), limit, method) {
                (None, None, _) => s.split_whitespace().map(str::to_string).collect(),
                (None, Some(n), _) => s.trim().splitn(n, char::is_whitespace).map(str::to_string).collect(),
                (Some(sep), None, _) => s.split(sep).map(str::to_string).collect(),
                (Some(sep), Some(n), "split") => s.splitn(n, sep).map(str::to_string).collect(),
                (Some(sep), Some(n), _) => {
                    let mut parts: Vec<String> = s.rsplitn(n, sep).map(str::to_string).collect();
                    parts.reverse();
                    parts
                }
            };
            Value::from(parts)
        }
        "find" | "rfind" | "index" => {
            let (needle,): (String,) = minijinja::value::from_args(args)?;
            let found = if method == "rfind" { s.rfind(&needle) } else { s.find(&needle) };
            match (found, method) {
                (Some(at), _) => Value::from(s[..at].chars().count()),
                (None, "index") => return Err(invalid("substring not found")),
                (None, _) => Value::from(-1),
            }
        }
        "count" => {
            let (needle,): (String,) = minijinja::value::from_args(args)?;
            Value::from(if needle.is_empty() { s.chars().count() + 1 } else { s.matches(&needle).count() })
        }
        "join" => {
            let (items,): (Value,) = minijinja::value::from_args(args)?;
            let parts: Vec<String> = items.try_iter()?.map(|v| v.to_string()).collect();
            Value::from(parts.join(s))
        }
        "isdigit" => Value::from(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
        "isalpha" => Value::from(!s.is_empty() && s.chars().all(char::is_alphabetic)),
        "isalnum" => Value::from(!s.is_empty() && s.chars().all(char::is_alphanumeric)),
        "isspace" => Value::from(!s.is_empty() && s.chars().all(char::is_whitespace)),
        "islower" => Value::from(s.chars().any(char::is_lowercase) && !s.chars().any(char::is_uppercase)),
        "isupper" => Value::from(s.chars().any(char::is_uppercase) && !s.chars().any(char::is_lowercase)),
        "zfill" => {
            let (width,): (usize,) = minijinja::value::from_args(args)?;
            let len = s.chars().count();
            let (sign, digits) = match s.strip_prefix(['-', '+']) {
                Some(rest) => (&s[..1], rest),
                None => ("", s),
            };
            Value::from(format!("{sign}{}{digits}", "0".repeat(width.saturating_sub(len))))
        }
        "format" => Value::from(format_python(s, args)?),
        _ => return unknown(&Value::from(s), method),
    })
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_alphabetic() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = true;
        }
    }
    out
}

/// Python's `str.format` with `{}`, `{0}` and `{name}` fields (no format specs beyond the field).
fn format_python(s: &str, args: &[Value]) -> Result<String, Error> {
    let (positional, kwargs): (minijinja::value::Rest<Value>, Kwargs) = minijinja::value::from_args(args)?;
    let mut out = String::new();
    let mut next = 0;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let field: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let name = field.split(':').next().unwrap_or_default();
                let value = if name.is_empty() {
                    next += 1;
                    positional.get(next - 1).cloned()
                } else if let Ok(index) = name.parse::<usize>() {
                    positional.get(index).cloned()
                } else {
                    kwargs.get::<Option<Value>>(name).ok().flatten()
                };
                let value = value.ok_or_else(|| invalid(format!("str.format: no value for `{{{field}}}`")))?;
                out.push_str(&value.to_string());
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Registers `__pipe_list`, `__pipe_dict` and the method hook.
pub fn register(env: &mut minijinja::Environment<'static>) {
    env.add_function("__pipe_list", pipe_list);
    env.add_function("__pipe_dict", pipe_dict);
    env.set_unknown_method_callback(call_method);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> Result<String, Error> {
        let mut env = minijinja::Environment::new();
        register(&mut env);
        let (text, _) = rewrite_literals(template);
        env.render_str(&text, ())
    }

    #[test]
    fn lists_and_dicts_built_the_dbt_way() {
        let out = render(
            "{%- set cols = [] -%}{%- for c in ['a', 'b'] -%}{%- do cols.append(c ~ '_x') -%}{%- endfor -%}{{ cols | join(',') }}",
        )
        .unwrap();
        assert_eq!(out, "a_x,b_x");
        let out = render("{%- set d = {'k': 1} -%}{%- do d.update({'z': 2}) -%}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}")
            .unwrap();
        assert_eq!(out, "k=1;z=2;");
        assert_eq!(render("{% set xs = [3, 1] %}{{ xs.pop() }}{{ xs | length }}").unwrap(), "11");
        // A list inside a dict literal can be changed too (dbt_utils.union_relations does this).
        let out =
            render("{%- set d = {} -%}{%- do d.update({'k': []}) -%}{%- do d['k'].append(1) -%}{{ d['k'] | length }}");
        assert_eq!(out.unwrap(), "1");
        let err = render("{% do [1].append(2) %}").unwrap_err();
        assert!(err.to_string().contains("cannot be changed"), "{err}");
    }

    #[test]
    fn python_string_methods() {
        assert_eq!(render("{{ ' Ab '.strip().lower() }}").unwrap(), "ab");
        assert_eq!(render("{{ 'a,b,c'.split(',', 1) | join('|') }}").unwrap(), "a|b,c");
        assert_eq!(render("{{ 'stg_orders'.startswith(('stg_', 'int_')) }}").unwrap(), "True");
        assert_eq!(render("{{ 'x_{}_{name}'.format(1, name='y') }}").unwrap(), "x_1_y");
        assert_eq!(render("{{ 'hello world'.title() }}{{ '7'.zfill(3) }}").unwrap(), "Hello World007");
        assert_eq!(render("{{ {'a': 1}.get('b', 'none') }}").unwrap(), "none");
    }

    #[test]
    fn rewritten_offsets_map_back() {
        let text = "{% set xs = [] %}{{ boom }}";
        let (rewritten, insertions) = rewrite_literals(text);
        assert_eq!(rewritten, "{% set xs = __pipe_list([]) %}{{ boom }}");
        let at = rewritten.find("boom").unwrap();
        assert_eq!(original_offset(at, &insertions), text.find("boom").unwrap());
        assert_eq!(rewrite_literals("{% set a = [1] + b %}").0, "{% set a = [1] + b %}");
        assert_eq!(rewrite_literals("{%- set m = {'a': '}'} -%}").0, "{%- set m = __pipe_dict({'a': '}'}) -%}");
    }
}
