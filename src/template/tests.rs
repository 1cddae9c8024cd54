//! Unit tests of rendering: refs, sources, config, macros, errors and their positions.

use super::*;
use crate::diagnostics::SourceMap;

fn render(text: &str, macros: &str) -> Result<RenderedModel, Diagnostic> {
    render_with_packages(text, &[("shop", macros)], DispatchConfig::default())
}

/// Renders `text` as a model of the project `shop`, with one macro file per (package, text).
fn render_with_packages(
    text: &str,
    macros: &[(&str, &str)],
    dispatch: DispatchConfig,
) -> Result<RenderedModel, Diagnostic> {
    let mut map = SourceMap::default();
    let model = map.add("models/silver/m.sql", text);
    let ids: Vec<FileId> = macros
        .iter()
        .enumerate()
        .map(|(i, (package, text))| map.add(format!("{package}/macros/m{i}.sql"), *text))
        .collect();
    let mut context = RenderContext { project_name: "shop".into(), dispatch, ..RenderContext::default() };
    context.relations.insert("orders".into(), "bronze.orders".into());
    context.vars.insert("min_amount".into(), serde_json::json!(5));
    let context = Arc::new(context);
    let macro_files: Vec<MacroSource<'_>> = macros
        .iter()
        .zip(&ids)
        .map(|((package, _), id)| MacroSource { package, file: *id, source: map.get(*id) })
        .collect();
    let (renderer, diagnostics) = Renderer::new(Arc::clone(&context), &macro_files);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    renderer.render_model(model, map.get(model), "silver.m", &context, &macro_files)
}

#[test]
fn captures_refs_sources_config_and_macros() {
    let text = "{{ config(materialized='table', tags=['a']) }}\nselect {{ cents('amount') }} from {{ ref('orders') }} o\njoin {{ source('raw', 'customers') }} c on true\nwhere amount > {{ var('min_amount') }} and '{{ this }}' <> ''";
    let rendered = render(text, "{% macro cents(col) %}{{ col }} * 100{% endmacro %}").unwrap();
    assert_eq!(
        rendered.sql,
        "\nselect amount * 100 from bronze.orders o\njoin raw.customers c on true\nwhere amount > 5 and 'silver.m' <> ''"
    );
    let start = text.find("ref('orders')").unwrap();
    assert_eq!(rendered.refs, vec![Dependency { name: vec!["orders".into()], span: Some(start..start + 13) }]);
    assert_eq!(rendered.sources[0].name, vec!["raw".to_string(), "customers".to_string()]);
    assert_eq!(serde_json::Value::Object(rendered.config), serde_json::json!({"materialized": "table", "tags": ["a"]}));
    assert_eq!(rendered.macros, BTreeSet::from(["cents".to_string()]));
    assert_eq!(rendered.sql_incremental, None);
}

#[test]
fn renders_both_incremental_variants() {
    let text = "select * from {{ ref('orders') }}{% if is_incremental() %} where ts > (select max(ts) from {{ this }}){% endif %}";
    let rendered = render(text, "").unwrap();
    assert_eq!(rendered.sql, "select * from bronze.orders");
    assert_eq!(
        rendered.sql_incremental.as_deref(),
        Some("select * from bronze.orders where ts > (select max(ts) from silver.m)")
    );
}

#[test]
fn undefined_var_and_macro_are_errors() {
    let err = render("select {{ var('nope') }}", "").unwrap_err();
    assert_eq!(err.code, Code::JinjaUndefined);
    assert_eq!(err.message, "var `nope` is not defined and has no default");
    let err = render("select {{ centz('a') }}", "{% macro cents(col) %}{{ col }}{% endmacro %}").unwrap_err();
    assert_eq!(err.code, Code::JinjaUndefined);
    assert_eq!(err.help.as_deref(), Some("a macro named `cents` exists; did you mean `cents`?"));
}

#[test]
fn syntax_error_points_into_the_model() {
    let err = render("select 1\nfrom {{ ref('orders') }\n", "").unwrap_err();
    assert_eq!(err.code, Code::JinjaSyntax);
    let span = err.primary.unwrap().span;
    assert!(span.start >= 9, "span {span:?} should be on line 2");
}

#[test]
fn config_get_and_require_read_the_models_config() {
    let rendered = render(
        "{{ config(materialized='table') }}select '{{ config.get('materialized') }}' as m, '{{ config.get('missing', 'fallback') }}' as f, {{ config.get('missing') is none }} as n",
        "",
    )
    .unwrap();
    assert_eq!(
        rendered.sql, "select 'table' as m, 'fallback' as f, True as n",
        "Jinja renders booleans as Python does"
    );
    let err = render("select {{ config.require('unique_key') }}", "").unwrap_err();
    assert!(err.message.contains("config `unique_key` is required but not set"), "{}", err.message);
}

/// A package in dbt's style: a public macro that dispatches, a default implementation calling a sibling by its
/// bare name, and a macro that returns a list.
const UTILS: &str = "{% macro key(cols) %}{{ return(adapter.dispatch('key', 'utils')(cols)) }}{% endmacro %}
{% macro default__key(cols) %}md5({{ joined(cols) }}){% endmacro %}
{% macro joined(cols) %}{{ cols | join(\" || '-' || \") }}{% endmacro %}
{% macro columns() %}{% do return(['a', 'b']) %}ignored text{% endmacro %}
";

#[test]
fn package_macros_dispatch_and_return_values() {
    let rendered = render_with_packages(
        "select {{ utils.key(['a', 'b']) }} as k{% for c in utils.columns() %}, {{ c }}{% endfor %}",
        &[("shop", ""), ("utils", UTILS)],
        DispatchConfig::default(),
    )
    .unwrap();
    assert_eq!(rendered.sql, "select md5(a || '-' || b) as k, a, b");
    assert!(rendered.macros.contains("utils.default__key"), "{:?}", rendered.macros);
}

#[test]
fn the_project_overrides_a_package_implementation_through_dispatch() {
    let project = "{% macro duckdb__key(cols) %}hash({{ cols | join(', ') }}){% endmacro %}";
    // Without a `dispatch:` entry, dbt searches the root project first and then the package.
    let rendered = render_with_packages(
        "select {{ utils.key(['a']) }}",
        &[("shop", project), ("utils", UTILS)],
        DispatchConfig::default(),
    )
    .unwrap();
    assert_eq!(rendered.sql, "select hash(a)");
    // A search order that names only the package skips the project's implementation.
    let only_utils = DispatchConfig { search_order: [("utils".to_string(), vec!["utils".to_string()])].into() };
    let rendered =
        render_with_packages("select {{ utils.key(['a']) }}", &[("shop", project), ("utils", UTILS)], only_utils)
            .unwrap();
    assert_eq!(rendered.sql, "select md5(a)");
}

#[test]
fn bare_names_resolve_in_the_calling_package_then_the_root_project() {
    // `joined` exists in both: inside `utils` its own wins; the model sees the root project's.
    let project = "{% macro joined(cols) %}ROOT{% endmacro %}";
    let rendered = render_with_packages(
        "select {{ utils.key(['a']) }}, '{{ joined(['x']) }}'",
        &[("shop", project), ("utils", UTILS)],
        DispatchConfig::default(),
    )
    .unwrap();
    assert_eq!(rendered.sql, "select md5(a), 'ROOT'");
    // A package's macro is not visible by bare name from the project, as in dbt.
    let err = render_with_packages(
        "select {{ default__key(['a']) }}",
        &[("shop", ""), ("utils", UTILS)],
        DispatchConfig::default(),
    )
    .unwrap_err();
    assert!(err.message.contains("call it as `utils.default__key`"), "{}", err.message);
}

#[test]
fn dispatch_to_dbt_reaches_the_built_in_macros_and_a_missing_one_says_where_it_looked() {
    let rendered = render_with_packages(
        "select {{ adapter.dispatch('type_string', 'dbt')() }}",
        &[("shop", "")],
        DispatchConfig::default(),
    )
    .unwrap();
    assert_eq!(rendered.sql, "select varchar");
    let err = render_with_packages(
        "select {{ adapter.dispatch('nope', 'utils')() }}",
        &[("shop", ""), ("utils", UTILS)],
        DispatchConfig::default(),
    )
    .unwrap_err();
    assert!(
        err.message.contains("looked for pipe__nope, duckdb__nope, default__nope in shop, utils"),
        "{}",
        err.message
    );
}

#[test]
fn dbt_context_names_render() {
    let rendered = render(
        "{{ log('shown', info=True) }}{{ log('not shown') }}{{ print('printed') }}select '{{ flags.WHICH }}' as w, '{{ model.name }}' as m, '{{ project_name }}' as p, '{{ this.schema }}' as s, '{{ builtins.ref('orders') }}' as r, {{ should_full_refresh() }} as f, '{{ local_md5('a') }}' as h",
        "",
    )
    .unwrap();
    assert_eq!(rendered.logs, vec!["shown".to_string(), "printed".to_string()]);
    assert_eq!(
        rendered.sql,
        "select '' as w, 'm' as m, 'shop' as p, 'silver' as s, 'bronze.orders' as r, False as f, '0cc175b9c0f1b6a831c399e269772661' as h"
    );
    assert!(!rendered.introspective);
    let rendered = render("select {% if execute %}1{% else %}0{% endif %} as x", "").unwrap();
    assert_eq!(rendered.sql, "select 0 as x", "at compile `execute` is false, as in dbt's parse");
    assert!(rendered.introspective);
}
