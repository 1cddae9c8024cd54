//! The rest of dbt's Jinja context: `flags`, `modules` (`datetime`, `re`, `itertools`), `log` and `print`
//! (collected, and printed by the CLI), `local_md5`, `toyaml`, `graph`, `builtins`, `model`, `project_name`,
//! `should_store_failures()`, `should_full_refresh()`, `invocation_args_dict`, `selected_resources`.

use std::collections::BTreeMap;
use std::sync::Arc;

use md5::{Digest, Md5};
use minijinja::value::{Kwargs, Object, Value as JValue};
use minijinja::{Error, ErrorKind, State};

use super::RenderContext;

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// `log(message, info=False)`: with `info=True` the message is shown (dbt prints it); otherwise it goes nowhere.
pub fn log(message: JValue, info: Option<bool>, kwargs: Kwargs) -> Result<String, Error> {
    let info = match info {
        Some(info) => info,
        None => kwargs.get::<Option<bool>>("info")?.unwrap_or(false),
    };
    kwargs.assert_all_used()?;
    if info {
        super::with_capture(|c| c.logs.push(message.to_string()));
    }
    Ok(String::new())
}

/// `print(message)`: shown, as dbt prints it.
pub fn print(message: JValue) -> String {
    super::with_capture(|c| c.logs.push(message.to_string()));
    String::new()
}

/// `local_md5(text)`: the hex md5 of a string, computed here (not in SQL).
pub fn local_md5(text: String) -> String {
    Md5::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `toyaml(value)`.
pub fn toyaml(value: JValue) -> Result<String, Error> {
    let json = serde_json::to_value(&value).map_err(|e| invalid(format!("toyaml: {e}")))?;
    serde_saphyr::to_string(&json).map_err(|e| invalid(format!("toyaml: {e}")))
}

/// `should_store_failures()`: whether the test being rendered keeps its failing rows (its `store_failures`).
pub fn should_store_failures() -> bool {
    super::with_capture(|c| {
        c.config.get("store_failures").or_else(|| c.base.get("store_failures")).and_then(|v| v.as_bool())
    })
    .flatten()
    .unwrap_or(false)
}

/// `should_full_refresh()`: the model's `full_refresh` config, else the run's `--full-refresh`.
pub fn should_full_refresh(full_refresh: bool) -> impl Fn() -> bool + Send + Sync + 'static {
    move || {
        super::with_capture(|c| {
            c.config.get("full_refresh").or_else(|| c.base.get("full_refresh")).and_then(|v| v.as_bool())
        })
        .flatten()
        .unwrap_or(full_refresh)
    }
}

/// dbt's naming macros, for a project's own `generate_schema_name` to call: `default__generate_schema_name` (the
/// target's schema, or `<target schema>_<custom>`), `generate_schema_name_for_env` (the custom schema as is on the
/// `prod` target), `default__generate_alias_name`; `generate_schema_name` and `generate_alias_name` are the defaults
/// until the project defines its own.
pub fn register_naming(env: &mut minijinja::Environment<'static>, context: &RenderContext) {
    let node_name = |node: &JValue| node.get_attr("name").ok().filter(|v| !v.is_undefined()).map(|v| v.to_string());
    let schema = context.target_schema.clone();
    let default_schema = move |custom: Option<JValue>, _node: Option<JValue>| -> String {
        match custom.filter(|c| !c.is_none() && !c.is_undefined()).map(|c| c.to_string()) {
            Some(custom) if !custom.trim().is_empty() => format!("{schema}_{}", custom.trim()),
            _ => schema.clone(),
        }
    };
    env.add_function("default__generate_schema_name", default_schema.clone());
    env.add_function("generate_schema_name", default_schema);
    let (schema, target) = (context.target_schema.clone(), context.target_name.clone());
    env.add_function("generate_schema_name_for_env", move |custom: Option<JValue>, _node: Option<JValue>| -> String {
        match custom.filter(|c| !c.is_none() && !c.is_undefined()).map(|c| c.to_string()) {
            Some(custom) if target == "prod" && !custom.trim().is_empty() => custom.trim().to_string(),
            _ => schema.clone(),
        }
    });
    let default_alias = move |custom: Option<JValue>, node: Option<JValue>| -> String {
        match custom.filter(|c| !c.is_none() && !c.is_undefined()).map(|c| c.to_string()) {
            Some(custom) if !custom.trim().is_empty() => custom.trim().to_string(),
            _ => node.as_ref().and_then(node_name).unwrap_or_default(),
        }
    };
    env.add_function("default__generate_alias_name", default_alias);
    env.add_function("generate_alias_name", default_alias);
}

/// `flags`: the invocation's flags dbt macros read.
pub fn flags(context: &RenderContext) -> JValue {
    let mut flags: BTreeMap<&str, JValue> = BTreeMap::new();
    flags.insert("WHICH", JValue::from(context.command.clone()));
    flags.insert("FULL_REFRESH", JValue::from(context.full_refresh));
    flags.insert("STORE_FAILURES", JValue::from(false));
    flags.insert("WARN_ERROR", JValue::from(false));
    flags.insert("FAIL_FAST", JValue::from(false));
    flags.insert("DEBUG", JValue::from(false));
    flags.insert("USE_COLORS", JValue::from(false));
    flags.insert("TARGET_PATH", JValue::from(()));
    flags.insert("PROFILES_DIR", JValue::from(()));
    flags.insert("EMPTY", JValue::from(false));
    JValue::from_iter(flags)
}

/// `invocation_args_dict`: the command and its main flags, as dbt gives them.
pub fn invocation_args(context: &RenderContext) -> JValue {
    let mut args: BTreeMap<&str, JValue> = BTreeMap::new();
    args.insert("which", JValue::from(context.command.clone()));
    args.insert("full_refresh", JValue::from(context.full_refresh));
    args.insert("vars", JValue::from_serialize(&context.vars));
    JValue::from_iter(args)
}

/// `modules`: Python's `datetime`, `re` and `itertools`, as far as dbt projects use them.
pub fn modules() -> JValue {
    let mut modules: BTreeMap<&str, JValue> = BTreeMap::new();
    modules.insert("datetime", JValue::from_object(DatetimeModule));
    modules.insert("re", JValue::from_object(ReModule));
    modules.insert("itertools", JValue::from_object(Itertools));
    modules.insert("pytz", JValue::from_object(Pytz));
    JValue::from_iter(modules)
}

#[derive(Debug)]
struct DatetimeModule;

#[derive(Debug)]
struct DatetimeClass {
    date_only: bool,
}

/// A Python `datetime` or `date` value.
#[derive(Debug, Clone)]
struct DateTime {
    value: chrono::NaiveDateTime,
    date_only: bool,
}

impl Object for DatetimeModule {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        match key.as_str()? {
            "datetime" => Some(JValue::from_object(DatetimeClass { date_only: false })),
            "date" => Some(JValue::from_object(DatetimeClass { date_only: true })),
            _ => None,
        }
    }

    fn call_method(self: &Arc<Self>, state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        match method {
            "datetime" | "date" => Arc::new(DatetimeClass { date_only: method == "date" }).call(state, args),
            _ => Err(invalid(format!(
                "`modules.datetime.{method}` is not supported by pipe yet (datetime, date, now, today, strptime, strftime are)"
            ))),
        }
    }
}

fn datetime_value(value: chrono::NaiveDateTime, date_only: bool) -> JValue {
    JValue::from_object(DateTime { value, date_only })
}

impl Object for DatetimeClass {
    fn call(self: &Arc<Self>, _state: &State<'_, '_>, args: &[JValue]) -> Result<JValue, Error> {
        let (year, month, day, time): (i32, u32, u32, minijinja::value::Rest<u32>) = minijinja::value::from_args(args)?;
        let date = chrono::NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| invalid("not a valid date"))?;
        let part = |i: usize| time.get(i).copied().unwrap_or(0);
        let time =
            chrono::NaiveTime::from_hms_opt(part(0), part(1), part(2)).ok_or_else(|| invalid("not a valid time"))?;
        Ok(datetime_value(date.and_time(time), self.date_only))
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        let now = chrono::Utc::now().naive_utc();
        match method {
            "now" | "utcnow" | "today" => Ok(datetime_value(now, self.date_only)),
            "strptime" => {
                let (text, format): (String, String) = minijinja::value::from_args(args)?;
                let format = python_format(&format);
                let value = chrono::NaiveDateTime::parse_from_str(&text, &format)
                    .or_else(|_| {
                        chrono::NaiveDate::parse_from_str(&text, &format)
                            .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
                    })
                    .map_err(|e| invalid(format!("strptime: `{text}` does not match the format: {e}")))?;
                Ok(datetime_value(value, false))
            }
            "fromisoformat" => {
                let (text,): (String,) = minijinja::value::from_args(args)?;
                let value = crate::project::parse_utc_time(&text).map_err(invalid)?.naive_utc();
                Ok(datetime_value(value, self.date_only))
            }
            other => Err(invalid(format!("`datetime.{other}` is not supported by pipe yet"))),
        }
    }
}

/// Python's `strftime` codes are chrono's, except `%f` (microseconds in Python).
fn python_format(format: &str) -> String {
    format.replace("%f", "%6f")
}

impl Object for DateTime {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        use chrono::{Datelike, Timelike};
        let v = &self.value;
        Some(JValue::from(match key.as_str()? {
            "year" => v.year() as i64,
            "month" => v.month() as i64,
            "day" => v.day() as i64,
            "hour" => v.hour() as i64,
            "minute" => v.minute() as i64,
            "second" => v.second() as i64,
            "microsecond" => (v.nanosecond() / 1000) as i64,
            _ => return None,
        }))
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        use chrono::Datelike;
        match method {
            "strftime" => {
                let (format,): (String,) = minijinja::value::from_args(args)?;
                Ok(JValue::from(self.value.format(&python_format(&format)).to_string()))
            }
            "isoformat" => Ok(JValue::from(if self.date_only {
                self.value.format("%Y-%m-%d").to_string()
            } else {
                self.value.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
            })),
            "date" => Ok(datetime_value(self.value.date().and_hms_opt(0, 0, 0).unwrap_or_default(), true)),
            "weekday" => Ok(JValue::from(self.value.weekday().num_days_from_monday())),
            "isoweekday" => Ok(JValue::from(self.value.weekday().number_from_monday())),
            "replace" => {
                let (kwargs,): (Kwargs,) = minijinja::value::from_args(args)?;
                let mut value = self.value;
                for key in kwargs.args() {
                    let n: u32 = kwargs.get(key)?;
                    value = match key {
                        "year" => value.with_year(n as i32),
                        "month" => value.with_month(n),
                        "day" => value.with_day(n),
                        "hour" => chrono::Timelike::with_hour(&value, n),
                        "minute" => chrono::Timelike::with_minute(&value, n),
                        "second" => chrono::Timelike::with_second(&value, n),
                        "microsecond" => chrono::Timelike::with_nanosecond(&value, n * 1000),
                        other => return Err(invalid(format!("replace() got an unexpected keyword `{other}`"))),
                    }
                    .ok_or_else(|| invalid(format!("replace({key}={n}) is out of range")))?;
                }
                Ok(datetime_value(value, self.date_only))
            }
            other => Err(invalid(format!(
                "`{other}` on a datetime is not supported by pipe yet (date arithmetic neither: do it in SQL)"
            ))),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::Timelike;
        if self.date_only {
            write!(f, "{}", self.value.format("%Y-%m-%d"))
        } else if self.value.nanosecond() == 0 {
            write!(f, "{}", self.value.format("%Y-%m-%d %H:%M:%S"))
        } else {
            write!(f, "{}", self.value.format("%Y-%m-%d %H:%M:%S%.6f"))
        }
    }
}

#[derive(Debug)]
struct Pytz;

impl Object for Pytz {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        (key.as_str()? == "utc").then(|| JValue::from("UTC"))
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        match method {
            "timezone" => {
                let (name,): (String,) = minijinja::value::from_args(args)?;
                Ok(JValue::from(name))
            }
            other => Err(invalid(format!("`modules.pytz.{other}` is not supported by pipe yet"))),
        }
    }
}

#[derive(Debug)]
struct ReModule;

/// A compiled pattern: `modules.re.compile(p)`.
#[derive(Debug)]
struct Pattern(regex::Regex);

#[derive(Debug)]
struct Match {
    groups: Vec<Option<String>>,
    start: usize,
    end: usize,
}

fn compile_regex(pattern: &str, flags: Option<i64>) -> Result<regex::Regex, Error> {
    let mut builder = regex::RegexBuilder::new(pattern);
    let flags = flags.unwrap_or(0);
    builder.case_insensitive(flags & 2 != 0).multi_line(flags & 8 != 0).dot_matches_new_line(flags & 16 != 0);
    builder.build().map_err(|e| invalid(format!("modules.re: `{pattern}` is not a pattern pipe reads: {e}")))
}

fn regex_call(re: &regex::Regex, method: &str, rest: &[JValue]) -> Result<JValue, Error> {
    let text = |i: usize| -> Result<String, Error> {
        rest.get(i).map(|v| v.to_string()).ok_or_else(|| invalid(format!("re.{method}: missing argument")))
    };
    let as_match = |m: regex::Captures<'_>| {
        let whole = m.get(0).map(|g| (g.start(), g.end())).unwrap_or_default();
        JValue::from_object(Match {
            groups: m.iter().map(|g| g.map(|g| g.as_str().to_string())).collect(),
            start: whole.0,
            end: whole.1,
        })
    };
    Ok(match method {
        "match" => {
            let s = text(0)?;
            re.captures(&s)
                .filter(|m| m.get(0).is_some_and(|g| g.start() == 0))
                .map(as_match)
                .unwrap_or(JValue::from(()))
        }
        "fullmatch" => {
            let s = text(0)?;
            re.captures(&s)
                .filter(|m| m.get(0).is_some_and(|g| g.start() == 0 && g.end() == s.len()))
                .map(as_match)
                .unwrap_or(JValue::from(()))
        }
        "search" => re.captures(&text(0)?).map(as_match).unwrap_or(JValue::from(())),
        "findall" => {
            let s = text(0)?;
            let found: Vec<JValue> = re
                .captures_iter(&s)
                .map(|m| match m.len() {
                    1 => JValue::from(m.get(0).map(|g| g.as_str()).unwrap_or_default()),
                    2 => JValue::from(m.get(1).map(|g| g.as_str()).unwrap_or_default()),
                    _ => JValue::from(
                        m.iter()
                            .skip(1)
                            .map(|g| JValue::from(g.map(|g| g.as_str()).unwrap_or_default()))
                            .collect::<Vec<_>>(),
                    ),
                })
                .collect();
            JValue::from(found)
        }
        "sub" => {
            let (replacement, s) = (text(0)?, text(1)?);
            // Python writes group references as `\1`; the regex crate as `${1}`.
            let replacement = regex::Regex::new(r"\\(\d+)")
                .map(|r| r.replace_all(&replacement, "$${$1}").into_owned())
                .unwrap_or(replacement);
            JValue::from(re.replace_all(&s, replacement.as_str()).into_owned())
        }
        "split" => JValue::from(re.split(&text(0)?).map(str::to_string).collect::<Vec<_>>()),
        other => return Err(invalid(format!("`modules.re.{other}` is not supported by pipe yet"))),
    })
}

impl Object for ReModule {
    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        Some(JValue::from(match key.as_str()? {
            "IGNORECASE" | "I" => 2,
            "MULTILINE" | "M" => 8,
            "DOTALL" | "S" => 16,
            _ => return None,
        }))
    }

    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        let (positional, kwargs): (minijinja::value::Rest<JValue>, Kwargs) = minijinja::value::from_args(args)?;
        let pattern = positional.first().map(|p| p.to_string()).ok_or_else(|| invalid("modules.re: no pattern"))?;
        let flags_at = match method {
            "sub" => 3,
            "compile" => 1,
            _ => 2,
        };
        let flags = positional.get(flags_at).and_then(JValue::as_i64).or(kwargs.get::<Option<i64>>("flags")?);
        if method == "escape" {
            return Ok(JValue::from(regex::escape(&pattern)));
        }
        let re = compile_regex(&pattern, flags)?;
        if method == "compile" {
            return Ok(JValue::from_object(Pattern(re)));
        }
        regex_call(&re, method, &positional[1..])
    }
}

impl Object for Pattern {
    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        regex_call(&self.0, method, args)
    }
}

impl Object for Match {
    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        let group = |i: usize| self.groups.get(i).cloned().flatten().map(JValue::from).unwrap_or(JValue::from(()));
        match method {
            "group" => {
                let (index,): (Option<usize>,) = minijinja::value::from_args(args)?;
                Ok(group(index.unwrap_or(0)))
            }
            "groups" => Ok(JValue::from((1..self.groups.len()).map(group).collect::<Vec<_>>())),
            "start" => Ok(JValue::from(self.start)),
            "end" => Ok(JValue::from(self.end)),
            other => Err(invalid(format!("a match has no method `{other}`"))),
        }
    }

    fn is_true(self: &Arc<Self>) -> bool {
        true
    }
}

#[derive(Debug)]
struct Itertools;

impl Object for Itertools {
    fn call_method(self: &Arc<Self>, _state: &State<'_, '_>, method: &str, args: &[JValue]) -> Result<JValue, Error> {
        let lists: Vec<Vec<JValue>> =
            args.iter().map(|l| l.try_iter().map(Iterator::collect)).collect::<Result<_, _>>()?;
        Ok(JValue::from(match method {
            "chain" => lists.into_iter().flatten().collect::<Vec<_>>(),
            "product" => {
                let mut out: Vec<Vec<JValue>> = vec![Vec::new()];
                for list in &lists {
                    out = out
                        .iter()
                        .flat_map(|prefix| list.iter().map(move |x| [prefix.clone(), vec![x.clone()]].concat()))
                        .collect();
                }
                out.into_iter().map(JValue::from).collect()
            }
            "combinations" => {
                let (items, r): (Vec<JValue>, usize) = minijinja::value::from_args(args)?;
                let mut out = Vec::new();
                combinations(&items, r, 0, &mut Vec::new(), &mut out);
                out
            }
            other => return Err(invalid(format!("`modules.itertools.{other}` is not supported by pipe yet"))),
        }))
    }
}

fn combinations(items: &[JValue], r: usize, start: usize, current: &mut Vec<JValue>, out: &mut Vec<JValue>) {
    if current.len() == r {
        out.push(JValue::from(current.clone()));
        return;
    }
    for i in start..items.len() {
        current.push(items[i].clone());
        combinations(items, r, i + 1, current, out);
        current.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> String {
        let mut env = minijinja::Environment::new();
        env.add_global("modules", modules());
        env.add_function("local_md5", local_md5);
        env.add_function("toyaml", toyaml);
        env.render_str(template, ()).unwrap()
    }

    #[test]
    fn python_modules_dbt_projects_use() {
        assert_eq!(render("{{ modules.re.sub('[^a-z]+', '_', 'Order Items!') }}"), "_rder_tems_");
        assert_eq!(render("{{ modules.re.match('(\\\\w+)_(\\\\d+)', 'v_2').group(2) }}"), "2");
        assert_eq!(render("{{ modules.re.search('x', 'abc') is none }}"), "True");
        assert_eq!(render("{{ modules.re.findall('\\\\d', 'a1b2') | join(',') }}"), "1,2");
        assert_eq!(
            render("{{ modules.datetime.datetime.strptime('2024-03-05', '%Y-%m-%d').strftime('%d/%m/%Y') }}"),
            "05/03/2024"
        );
        assert_eq!(
            render("{{ modules.datetime.date(2024, 1, 31) }}|{{ modules.datetime.datetime(2024, 1, 31, 8) }}"),
            "2024-01-31|2024-01-31 08:00:00"
        );
        assert_eq!(render("{{ modules.itertools.product([1, 2], ['a']) | map('join', '') | join(',') }}"), "1a,2a");
        assert_eq!(render("{{ local_md5('a') }}"), "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(render("{{ toyaml({'a': [1]}) }}"), "a:\n- 1\n");
    }
}
