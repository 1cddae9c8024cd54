//! Unit tests of rendering: refs, sources, config, macros, errors and their positions.

use super::*;
use crate::diagnostics::SourceMap;

fn render(text: &str, macros: &str) -> Result<RenderedModel, Diagnostic> {
    let mut map = SourceMap::default();
    let model = map.add("models/silver/m.sql", text);
    let macro_file = map.add("macros/m.sql", macros);
    let mut context = RenderContext::default();
    context.relations.insert("orders".into(), "bronze.orders".into());
    context.vars.insert("min_amount".into(), serde_json::json!(5));
    let context = Arc::new(context);
    let macro_files = [(macro_file, map.get(macro_file))];
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
