//! dbt's cross-database macros, rendered as SQL DataFusion runs with dbt's meaning: under `dbt.` (`{{
//! dbt.dateadd('day', 1, 'order_date') }}`) and as bare names (`{{ dateadd(...) }}`), as dbt has both. A project
//! macro of the same name wins over the bare name, as in dbt. Arguments are SQL expressions as text, the way dbt
//! passes them (`'order_date'` is the column, `"'a,b'"` a string literal).
//!
//! Semantics follow dbt's `default__` implementations (and dbt-postgres where the default is adapter-specific):
//! `concat` is `||` (null in, null out), `datediff` counts the `datepart` boundaries crossed, `safe_cast` is a cast
//! that gives null, `hash` is the md5 of the text, `position` is 1-based.

use std::collections::BTreeMap;

use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Error, ErrorKind};

/// A date part dbt's macros take: checked, so nothing else reaches the SQL.
fn datepart(text: &JValue) -> Result<String, Error> {
    let part = text.to_string().trim().trim_matches('\'').to_ascii_lowercase();
    match part.as_str() {
        "second" | "minute" | "hour" | "day" | "week" | "month" | "quarter" | "year" => Ok(part),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{part}` is not a date part (second, minute, hour, day, week, month, quarter, year)"),
        )),
    }
}

fn sql(value: &JValue) -> String {
    value.to_string()
}

fn date_trunc(part: JValue, date: JValue) -> Result<String, Error> {
    Ok(format!("date_trunc('{}', {})", datepart(&part)?, sql(&date)))
}

fn dateadd(part: JValue, interval: JValue, from: JValue) -> Result<String, Error> {
    let part = datepart(&part)?;
    let (part, interval) = match part.as_str() {
        "quarter" => ("month".to_string(), format!("({}) * 3", sql(&interval))),
        _ => (part, sql(&interval)),
    };
    Ok(format!("({} + cast(concat(cast({interval} as varchar), ' {part}') as interval))", sql(&from)))
}

/// dbt's `datediff(first, second, part)`: how many `part` boundaries lie between `first` and `second`.
fn datediff(first: JValue, second: JValue, part: JValue) -> Result<String, Error> {
    let (first, second) = (sql(&first), sql(&second));
    let part = datepart(&part)?;
    let year = |e: &str| format!("extract(year from {e})");
    Ok(match part.as_str() {
        "year" => format!("cast({} - {} as bigint)", year(&second), year(&first)),
        "quarter" | "month" => {
            let unit = if part == "month" { "month" } else { "quarter" };
            let per_year = if part == "month" { 12 } else { 4 };
            format!(
                "cast(({} - {}) * {per_year} + extract({unit} from {second}) - extract({unit} from {first}) as bigint)",
                year(&second),
                year(&first)
            )
        }
        _ => {
            let seconds = match part.as_str() {
                "week" => 604_800,
                "day" => 86_400,
                "hour" => 3_600,
                "minute" => 60,
                _ => 1,
            };
            let epoch = |e: &str| format!("extract(epoch from date_trunc('{part}', cast({e} as timestamp)))");
            format!("cast(({} - {}) / {seconds} as bigint)", epoch(&second), epoch(&first))
        }
    })
}

fn last_day(date: JValue, part: JValue) -> Result<String, Error> {
    let part = datepart(&part)?;
    Ok(format!("cast(date_trunc('{part}', {}) + interval '1 {part}' - interval '1 day' as date)", sql(&date)))
}

fn safe_cast(field: JValue, data_type: JValue) -> String {
    format!("try_cast({} as {})", sql(&field), sql(&data_type))
}

fn cast_bool_to_text(field: JValue) -> String {
    format!("cast({} as varchar)", sql(&field))
}

fn concat(fields: JValue) -> Result<String, Error> {
    let items: Vec<String> = fields.try_iter()?.map(|f| sql(&f)).collect();
    Ok(items.join(" || "))
}

fn hash(field: JValue) -> String {
    format!("md5(cast({} as varchar))", sql(&field))
}

fn split_part(text: JValue, delimiter: JValue, part: JValue) -> String {
    format!("split_part({}, {}, {})", sql(&text), sql(&delimiter), sql(&part))
}

fn replace(field: JValue, old: JValue, new: JValue) -> String {
    format!("replace({}, {}, {})", sql(&field), sql(&old), sql(&new))
}

fn length(expression: JValue) -> String {
    format!("length({})", sql(&expression))
}

fn position(substring: JValue, text: JValue) -> String {
    format!("strpos({}, {})", sql(&text), sql(&substring))
}

fn right(text: JValue, length: JValue) -> String {
    format!("right({}, {})", sql(&text), sql(&length))
}

fn listagg(
    measure: JValue,
    delimiter: Option<JValue>,
    order_by: Option<JValue>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let delimiter = delimiter.or_else(|| kwargs.get("delimiter_text").ok()).map_or("','".to_string(), |d| sql(&d));
    let order_by: Option<JValue> = order_by.or_else(|| kwargs.get("order_by_clause").ok());
    let limit: Option<JValue> = kwargs.get("limit_num").ok();
    kwargs.assert_all_used()?;
    if limit.is_some_and(|l| !l.is_none()) {
        return Err(Error::new(ErrorKind::InvalidOperation, "`listagg` with `limit_num` is not supported by pipe yet"));
    }
    let order_by = order_by.filter(|o| !o.is_none()).map(|o| format!(" {}", sql(&o))).unwrap_or_default();
    Ok(format!("string_agg({}, {delimiter}{order_by})", sql(&measure)))
}

fn escape_single_quotes(expression: JValue) -> String {
    sql(&expression).replace('\'', "''")
}

fn string_literal(value: JValue) -> String {
    format!("'{}'", escape_single_quotes(value))
}

fn any_value(expression: JValue) -> String {
    format!("any_value({})", sql(&expression))
}

fn bool_or(expression: JValue) -> String {
    format!("bool_or({})", sql(&expression))
}

fn array_construct(inputs: Option<JValue>, _data_type: Option<JValue>) -> Result<String, Error> {
    let items: Vec<String> = match inputs {
        Some(inputs) => inputs.try_iter()?.map(|i| sql(&i)).collect(),
        None => Vec::new(),
    };
    Ok(format!("make_array({})", items.join(", ")))
}

fn array_append(array: JValue, element: JValue) -> String {
    format!("array_append({}, {})", sql(&array), sql(&element))
}

fn array_concat(first: JValue, second: JValue) -> String {
    format!("array_concat({}, {})", sql(&first), sql(&second))
}

/// dbt's `get_powers_of_two(upper_bound)`: the fewest binary digits that count to `upper_bound` (at least 1).
fn get_powers_of_two(upper_bound: i64) -> Result<i64, Error> {
    if upper_bound <= 0 {
        return Err(invalid(format!("get_powers_of_two: the upper bound must be positive, not {upper_bound}")));
    }
    Ok((1..64).find(|bits| upper_bound <= 1i64 << bits).unwrap_or(63))
}

/// dbt's `generate_series(upper_bound)`: a query of one column, `generated_number`, counting 1 to `upper_bound`.
fn generate_series(upper_bound: JValue) -> String {
    format!("select unnest(range(1, cast({} as bigint) + 1)) as generated_number", sql(&upper_bound))
}

/// dbt's `get_intervals_between(start, end, datepart)`: the number of `datepart` boundaries between two dates, as
/// SQL (dbt asks the warehouse for the number; here the query computes it).
fn get_intervals_between(start: JValue, end: JValue, part: JValue) -> Result<String, Error> {
    datediff(start, end, part)
}

/// dbt's `date_spine(datepart, start_date, end_date)`: one row per `datepart` from `start_date` up to, not including,
/// `end_date`, in a column `date_<datepart>`.
fn date_spine(part: JValue, start: JValue, end: JValue) -> Result<String, Error> {
    let name = datepart(&part)?;
    let intervals = datediff(start.clone(), end.clone(), part.clone())?;
    let period = dateadd(part, JValue::from("_pipe_offset"), start)?;
    Ok(format!(
        "select date_{name} from (select {period} as date_{name} from (select unnest(range(0, {intervals})) as _pipe_offset) as _pipe_offsets) as _pipe_spine where date_{name} <= {}",
        sql(&end)
    ))
}

/// The functions, by name: shared by the `dbt` namespace and the bare global names.
pub(super) fn functions() -> BTreeMap<&'static str, JValue> {
    let mut f: BTreeMap<&'static str, JValue> = BTreeMap::new();
    f.insert("date_trunc", JValue::from_function(date_trunc));
    f.insert("dateadd", JValue::from_function(dateadd));
    f.insert("datediff", JValue::from_function(datediff));
    f.insert("last_day", JValue::from_function(last_day));
    f.insert("safe_cast", JValue::from_function(safe_cast));
    f.insert("cast_bool_to_text", JValue::from_function(cast_bool_to_text));
    f.insert("concat", JValue::from_function(concat));
    f.insert("hash", JValue::from_function(hash));
    f.insert("split_part", JValue::from_function(split_part));
    f.insert("replace", JValue::from_function(replace));
    f.insert("length", JValue::from_function(length));
    f.insert("position", JValue::from_function(position));
    f.insert("right", JValue::from_function(right));
    f.insert("listagg", JValue::from_function(listagg));
    f.insert("escape_single_quotes", JValue::from_function(escape_single_quotes));
    f.insert("string_literal", JValue::from_function(string_literal));
    f.insert("any_value", JValue::from_function(any_value));
    f.insert("bool_or", JValue::from_function(bool_or));
    f.insert("array_construct", JValue::from_function(array_construct));
    f.insert("array_append", JValue::from_function(array_append));
    f.insert("array_concat", JValue::from_function(array_concat));
    f.insert("get_powers_of_two", JValue::from_function(get_powers_of_two));
    f.insert("generate_series", JValue::from_function(generate_series));
    f.insert("get_intervals_between", JValue::from_function(get_intervals_between));
    f.insert("date_spine", JValue::from_function(date_spine));
    let constant = |text: &'static str| JValue::from_function(move || text.to_string());
    f.insert("current_timestamp", constant("now()"));
    f.insert("current_timestamp_backcompat", constant("now()"));
    f.insert("current_timestamp_in_utc_backcompat", constant("now()"));
    f.insert("type_string", constant("varchar"));
    f.insert("type_int", constant("int"));
    f.insert("type_bigint", constant("bigint"));
    f.insert("type_float", constant("double"));
    f.insert("type_numeric", constant("numeric(28, 6)"));
    f.insert("type_timestamp", constant("timestamp"));
    f.insert("type_boolean", constant("boolean"));
    f.insert("except", constant("except"));
    f.insert("intersect", constant("intersect"));
    f
}

/// The `dbt` namespace: its macros by name; a name dbt has and pipe does not is "not supported", not undefined.
#[derive(Debug)]
struct Namespace(BTreeMap<&'static str, JValue>);

impl minijinja::value::Object for Namespace {
    fn get_value(self: &std::sync::Arc<Self>, key: &JValue) -> Option<JValue> {
        self.0.get(key.as_str()?).cloned()
    }

    fn call_method(
        self: &std::sync::Arc<Self>,
        state: &minijinja::State<'_, '_>,
        method: &str,
        args: &[JValue],
    ) -> Result<JValue, Error> {
        match self.0.get(method) {
            Some(function) => function.call(state, args),
            None => Err(invalid(format!("`dbt.{method}` is not supported by pipe yet"))),
        }
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Values(self.0.keys().map(|k| JValue::from(*k)).collect())
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// dbt's `tojson(value)`.
fn tojson(value: JValue) -> Result<String, Error> {
    serde_json::to_string(&value).map_err(|e| invalid(format!("tojson: {e}")))
}

/// dbt's `fromjson(text)`: the value, or an error naming what does not parse.
fn fromjson(text: String) -> Result<JValue, Error> {
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("fromjson: `{text}` is not JSON: {e}")))?;
    Ok(JValue::from_serialize(value))
}

/// dbt's `fromyaml(text)`.
fn fromyaml(text: String) -> Result<JValue, Error> {
    let value: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| invalid(format!("fromyaml: not YAML: {e}")))?;
    Ok(JValue::from_serialize(value))
}

/// Python's `zip(*lists)`: lists of the items at each position, as long as the shortest list.
fn zip(lists: minijinja::value::Rest<JValue>) -> Result<JValue, Error> {
    let lists: Vec<Vec<JValue>> =
        lists.iter().map(|l| l.try_iter().map(Iterator::collect)).collect::<Result<_, _>>()?;
    let len = lists.iter().map(Vec::len).min().unwrap_or(0);
    Ok(JValue::from(
        (0..len).map(|i| JValue::from(lists.iter().map(|l| l[i].clone()).collect::<Vec<_>>())).collect::<Vec<_>>(),
    ))
}

/// dbt's `set(items)`: the distinct items, in the order first seen.
fn set(items: JValue) -> Result<JValue, Error> {
    let mut seen: Vec<JValue> = Vec::new();
    for item in items.try_iter()? {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    Ok(JValue::from(seen))
}

/// dbt's `exceptions.raise_compiler_error(message)`: the render fails with the message.
fn raise_compiler_error(message: String) -> Result<String, Error> {
    Err(invalid(format!("compilation error raised by the project: {message}")))
}

/// Registers the `dbt` namespace, the bare names and the parts of dbt's context that are plain functions
/// (`tojson`, `fromjson`, `fromyaml`, `zip`, `set`, `exceptions.raise_compiler_error`, `exceptions.warn`).
/// Returns the cross-database macros by name, for names a project macro takes over.
pub(super) fn register(env: &mut minijinja::Environment<'static>) -> BTreeMap<String, JValue> {
    let functions = functions();
    for (name, function) in &functions {
        env.add_global(*name, function.clone());
    }
    env.add_global("dbt", JValue::from_object(Namespace(functions.clone())));
    env.add_function("tojson", tojson);
    env.add_function("fromjson", fromjson);
    env.add_function("fromyaml", fromyaml);
    env.add_function("zip", zip);
    env.add_function("set", set);
    let mut exceptions: BTreeMap<&str, JValue> = BTreeMap::new();
    exceptions.insert("raise_compiler_error", JValue::from_function(raise_compiler_error));
    // A warning from the project's macros does not stop the render; it is printed with the model's logs.
    exceptions.insert(
        "warn",
        JValue::from_function(|message: JValue| {
            super::with_capture(|c| c.logs.push(format!("warning: {message}")));
            String::new()
        }),
    );
    env.add_global("exceptions", JValue::from_iter(exceptions));
    functions.into_iter().map(|(name, f)| (name.to_string(), f)).collect()
}

#[cfg(test)]
mod tests {
    fn render(template: &str) -> Result<String, minijinja::Error> {
        let mut env = minijinja::Environment::new();
        super::register(&mut env);
        env.render_str(template, ())
    }

    #[test]
    fn cross_database_macros_render_to_datafusion_sql() {
        assert_eq!(render("{{ dbt.date_trunc('month', 'ordered_at') }}").unwrap(), "date_trunc('month', ordered_at)");
        assert_eq!(
            render("{{ dateadd('day', -1, 'ordered_at') }}").unwrap(),
            "(ordered_at + cast(concat(cast(-1 as varchar), ' day') as interval))"
        );
        assert_eq!(render("{{ dbt.concat(['a', \"'-'\", 'b']) }}").unwrap(), "a || '-' || b");
        assert_eq!(render("{{ dbt.type_string() }}").unwrap(), "varchar");
        assert_eq!(render("{{ dbt.string_literal(\"it's\") }}").unwrap(), "'it''s'");
        assert_eq!(
            render("{{ dbt.listagg('name', \"', '\", 'order by name') }}").unwrap(),
            "string_agg(name, ', ' order by name)"
        );
        assert!(render("{{ dbt.date_trunc('fortnight', 'x') }}").unwrap_err().to_string().contains("not a date part"));
    }

    #[test]
    fn dbt_context_functions_behave_as_in_dbt() {
        assert_eq!(render("{{ tojson({'a': [1, 2]}) }}").unwrap(), "{\"a\":[1,2]}");
        assert_eq!(render("{{ fromjson('{\"k\": 3}')['k'] + 1 }}").unwrap(), "4");
        assert_eq!(render("{{ fromyaml('a: [p, q]')['a'] | join(',') }}").unwrap(), "p,q");
        assert_eq!(
            render("{% for a, b in zip([1, 2, 3], ['x', 'y']) %}{{ a }}{{ b }} {% endfor %}").unwrap(),
            "1x 2y "
        );
        assert_eq!(render("{{ set(['b', 'a', 'b']) | join(',') }}").unwrap(), "b,a");
        let err = render("{{ exceptions.raise_compiler_error('no key given') }}").unwrap_err();
        assert!(err.to_string().contains("no key given"), "{err}");
        assert_eq!(render("{{ exceptions.warn('careful') }}ok").unwrap(), "ok");
        assert!(render("{{ fromjson('{nope') }}").unwrap_err().to_string().contains("is not JSON"));
    }
}
