//! DuckDB's names for unaliased select-list expressions. DuckDB names such a column by printing the parsed
//! expression (`sum(x)`, `count_star()`, `(amount / 100)`, `CAST(x AS VARCHAR)`); DataFusion prints its resolved,
//! qualified form (`sum(t.x)`, `count(*)`, `t.amount / Int64(100)`). A dbt-duckdb model that leaves an expression
//! unaliased creates a column under DuckDB's name, and the models downstream read it by that name; so in DuckDB mode
//! each unaliased expression that is not a plain column gets DuckDB's name as its alias, in the parsed statement.
//!
//! The printing follows DuckDB's `ParsedExpression::ToString` for the expressions models use (columns, constants,
//! functions and aggregates with DISTINCT / ORDER BY / FILTER / OVER, operators, CAST, CASE, COALESCE, BETWEEN, IN,
//! IS [NOT] NULL, LIKE); an expression with anything else keeps DataFusion's name.

use std::fmt::Write;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, CastKind, CharacterLength, DataType, DuplicateTreatment, ExactNumberInfo, Expr, FunctionArg,
    FunctionArgExpr, FunctionArgumentClause, FunctionArguments, OrderByExpr, SelectItem, SetExpr, TimezoneInfo,
    UnaryOperator, Value, WindowFrameBound, WindowFrameUnits, WindowType,
};

use super::keywords::KEYWORDS;

/// Gives every unaliased, non-column expression of every select list in `statement` DuckDB's name for it.
pub fn name_columns(statement: &mut ast::Statement) {
    struct Namer;
    impl ast::VisitorMut for Namer {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            let _ = name_set_expr(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(statement, &mut Namer);
}

fn name_set_expr(body: &mut SetExpr) -> Option<()> {
    match body {
        SetExpr::Select(select) => {
            // Names already taken: plain columns and aliases. A name DuckDB would give twice gets `_1`, `_2`, ...
            // the second time (DataFusion refuses two columns of one name).
            let mut taken: std::collections::HashSet<String> = select
                .projection
                .iter()
                .filter_map(|item| match item {
                    SelectItem::UnnamedExpr(Expr::Identifier(ident)) => Some(ident.value.to_lowercase()),
                    SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                        parts.last().map(|p| p.value.to_lowercase())
                    }
                    SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
                    _ => None,
                })
                .collect();
            for item in &mut select.projection {
                let SelectItem::UnnamedExpr(expr) = item else { continue };
                if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    continue;
                }
                if let Some(mut name) = duckdb_name(expr) {
                    if taken.contains(&name.to_lowercase()) {
                        name = (1..).map(|n| format!("{name}_{n}")).find(|n| !taken.contains(&n.to_lowercase()))?;
                    }
                    taken.insert(name.to_lowercase());
                    let expr = std::mem::replace(expr, Expr::Value(Value::Null.into()));
                    *item = SelectItem::ExprWithAlias { expr, alias: ast::Ident::with_quote('"', name) };
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_set_expr(left);
            name_set_expr(right);
        }
        SetExpr::Query(query) => {
            name_set_expr(&mut query.body);
        }
        _ => {}
    }
    Some(())
}

/// DuckDB's name for `expr`, or `None` when it holds something this printer does not know.
pub fn duckdb_name(expr: &Expr) -> Option<String> {
    let mut out = String::new();
    print(expr, &mut out)?;
    Some(out)
}

/// A name as DuckDB writes it in an expression: quoted when it is a keyword or not a plain identifier.
fn name(ident: &str) -> String {
    let plain = ident.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && KEYWORDS.binary_search(&ident.to_lowercase().as_str()).is_err() {
        ident.to_string()
    } else {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }
}

fn print(expr: &Expr, out: &mut String) -> Option<()> {
    match expr {
        Expr::Identifier(ident) => out.push_str(&name(&ident.value)),
        Expr::CompoundIdentifier(parts) => {
            let parts: Vec<String> = parts.iter().map(|p| name(&p.value)).collect();
            out.push_str(&parts.join("."));
        }
        Expr::Value(value) => constant(&value.value, out)?,
        Expr::Nested(inner) => print(inner, out)?,
        Expr::UnaryOp { op: UnaryOperator::Minus, expr: inner } => match number(inner) {
            Some(text) => {
                out.push('-');
                out.push_str(text);
            }
            None => wrap(out, "(-(", inner, "))")?,
        },
        Expr::UnaryOp { op: UnaryOperator::Plus, expr: inner } => wrap(out, "(+(", inner, "))")?,
        Expr::UnaryOp { op: UnaryOperator::Not, expr: inner } => wrap(out, "(NOT ", inner, ")")?,
        Expr::BinaryOp { left, op, right } => {
            let op = binary_operator(op)?;
            out.push('(');
            print(left, out)?;
            let _ = write!(out, " {op} ");
            print(right, out)?;
            out.push(')');
        }
        Expr::IsNull(inner) => wrap(out, "(", inner, " IS NULL)")?,
        Expr::IsNotNull(inner) => wrap(out, "(", inner, " IS NOT NULL)")?,
        Expr::IsDistinctFrom(a, b) => infix(out, a, "IS DISTINCT FROM", b)?,
        Expr::IsNotDistinctFrom(a, b) => infix(out, a, "IS NOT DISTINCT FROM", b)?,
        Expr::Like { negated, any: false, expr, pattern, escape_char: None } => {
            infix(out, expr, if *negated { "!~~" } else { "~~" }, pattern)?
        }
        Expr::ILike { negated, any: false, expr, pattern, escape_char: None } => {
            infix(out, expr, if *negated { "!~~*" } else { "~~*" }, pattern)?
        }
        Expr::Between { expr, negated, low, high } => {
            out.push_str(if *negated { "(NOT (" } else { "(" });
            print(expr, out)?;
            out.push_str(" BETWEEN ");
            print(low, out)?;
            out.push_str(" AND ");
            print(high, out)?;
            out.push_str(if *negated { "))" } else { ")" });
        }
        Expr::InList { expr, list, negated } => {
            out.push_str(if *negated { "(NOT (" } else { "(" });
            print(expr, out)?;
            out.push_str(" IN (");
            list_of(list, out)?;
            out.push_str(if *negated { ")))" } else { "))" });
        }
        Expr::Cast { kind: CastKind::Cast | CastKind::DoubleColon, expr, data_type, format: None, .. } => {
            out.push_str("CAST(");
            print(expr, out)?;
            let _ = write!(out, " AS {})", type_name(data_type)?);
        }
        Expr::Case { operand, conditions, else_result, .. } => {
            out.push_str("CASE ");
            for when in conditions {
                out.push_str(" WHEN (");
                match operand {
                    // `CASE x WHEN 1` is `WHEN (x = 1)`.
                    Some(operand) => infix(out, operand, "=", &when.condition)?,
                    None => print(&when.condition, out)?,
                }
                out.push_str(") THEN (");
                print(&when.result, out)?;
                out.push(')');
            }
            out.push_str(" ELSE ");
            match else_result {
                Some(value) => print(value, out)?,
                None => out.push_str("NULL"),
            }
            out.push_str(" END");
        }
        Expr::Function(function) => call(function, out)?,
        Expr::Substring { expr, substring_from, substring_for, .. } => {
            out.push_str("\"substring\"(");
            print(expr, out)?;
            for part in [substring_from, substring_for].into_iter().flatten() {
                out.push_str(", ");
                print(part, out)?;
            }
            out.push(')');
        }
        Expr::Trim { trim_where, trim_what, expr, trim_characters: None } => {
            use ast::TrimWhereField;
            out.push_str(match trim_where {
                None | Some(TrimWhereField::Both) => "\"trim\"(",
                Some(TrimWhereField::Leading) => "ltrim(",
                Some(TrimWhereField::Trailing) => "rtrim(",
            });
            print(expr, out)?;
            if let Some(what) = trim_what {
                out.push_str(", ");
                print(what, out)?;
            }
            out.push(')');
        }
        Expr::Position { expr, r#in } => {
            out.push_str("\"position\"(");
            print(r#in, out)?;
            out.push_str(", ");
            print(expr, out)?;
            out.push(')');
        }
        Expr::Extract { field, expr, .. } => {
            let field = field.to_string().to_uppercase();
            if !field.chars().all(|c| c.is_ascii_alphabetic()) {
                return None;
            }
            let _ = write!(out, "date_part('{field}', ");
            print(expr, out)?;
            out.push(')');
        }
        _ => return None,
    }
    Some(())
}

fn wrap(out: &mut String, before: &str, inner: &Expr, after: &str) -> Option<()> {
    out.push_str(before);
    print(inner, out)?;
    out.push_str(after);
    Some(())
}

fn infix(out: &mut String, left: &Expr, op: &str, right: &Expr) -> Option<()> {
    out.push('(');
    print(left, out)?;
    let _ = write!(out, " {op} ");
    print(right, out)?;
    out.push(')');
    Some(())
}

fn list_of(items: &[Expr], out: &mut String) -> Option<()> {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        print(item, out)?;
    }
    Some(())
}

/// A numeric constant as written (`1.50`, `1e3`), through parentheses: DuckDB folds `-(1)` into the constant `-1`.
fn number(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(value) => match &value.value {
            Value::Number(text, _) => Some(text.as_str()),
            _ => None,
        },
        Expr::Nested(inner) => number(inner),
        _ => None,
    }
}

fn constant(value: &Value, out: &mut String) -> Option<()> {
    match value {
        Value::Number(text, _) => out.push_str(text),
        Value::SingleQuotedString(text) => {
            let _ = write!(out, "'{}'", text.replace('\'', "''"));
        }
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("NULL"),
        _ => return None,
    }
    Some(())
}

fn binary_operator(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Plus => "+",
        BinaryOperator::Minus => "-",
        BinaryOperator::Multiply => "*",
        BinaryOperator::Divide => "/",
        BinaryOperator::DuckIntegerDivide => "//",
        BinaryOperator::Modulo => "%",
        BinaryOperator::BitwiseXor | BinaryOperator::PGExp => "^",
        BinaryOperator::StringConcat => "||",
        BinaryOperator::Eq => "=",
        BinaryOperator::NotEq => "!=",
        BinaryOperator::Lt => "<",
        BinaryOperator::LtEq => "<=",
        BinaryOperator::Gt => ">",
        BinaryOperator::GtEq => ">=",
        BinaryOperator::And => "AND",
        BinaryOperator::Or => "OR",
        _ => return None,
    })
}

/// A type as DuckDB prints it: the types of SQL's grammar in their canonical spelling (`int` is `INTEGER`, `real`
/// is `FLOAT`, `numeric(10,2)` is `DECIMAL(10, 2)`), any other type name as written, in lower case (`double`,
/// `date`, `text`).
fn type_name(data_type: &DataType) -> Option<String> {
    let varchar = |length: &Option<CharacterLength>| match length {
        Some(CharacterLength::IntegerLength { length, .. }) => Some(format!("VARCHAR({length})")),
        Some(CharacterLength::Max) => None,
        None => Some("VARCHAR".into()),
    };
    let decimal = |info: &ExactNumberInfo| match info {
        ExactNumberInfo::None => "DECIMAL".to_string(),
        ExactNumberInfo::Precision(p) => format!("DECIMAL({p})"),
        ExactNumberInfo::PrecisionAndScale(p, s) => format!("DECIMAL({p}, {s})"),
    };
    Some(match data_type {
        DataType::Int(None) | DataType::Integer(None) => "INTEGER".into(),
        DataType::BigInt(None) => "BIGINT".into(),
        DataType::SmallInt(None) => "SMALLINT".into(),
        DataType::Real | DataType::Float(_) => "FLOAT".into(),
        DataType::DoublePrecision => "DOUBLE".into(),
        DataType::Decimal(info) | DataType::Numeric(info) => decimal(info),
        DataType::Varchar(length)
        | DataType::CharacterVarying(length)
        | DataType::Char(length)
        | DataType::Character(length) => varchar(length)?,
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Timestamp(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => "TIMESTAMP".into(),
        DataType::Timestamp(None, TimezoneInfo::WithTimeZone) => "TIMESTAMP WITH TIME ZONE".into(),
        DataType::Time(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => "TIME".into(),
        DataType::Interval { .. } => "INTERVAL".into(),
        DataType::Double(ExactNumberInfo::None) => "double".into(),
        DataType::Bool => "bool".into(),
        DataType::Int4(None) => "int4".into(),
        DataType::Int8(None) => "int8".into(),
        DataType::TinyInt(None) => "tinyint".into(),
        DataType::HugeInt => "hugeint".into(),
        DataType::Float4 => "float4".into(),
        DataType::Float8 => "float8".into(),
        DataType::Text => "text".into(),
        DataType::String(None) => "string".into(),
        DataType::Date => "date".into(),
        DataType::Custom(name, modifiers) if modifiers.is_empty() => name.to_string().to_lowercase(),
        _ => return None,
    })
}

fn order_by(items: &[OrderByExpr], out: &mut String) -> Option<()> {
    out.push_str("ORDER BY ");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        print(&item.expr, out)?;
        match item.options.asc {
            Some(true) => out.push_str(" ASC"),
            Some(false) => out.push_str(" DESC"),
            None => {}
        }
        match item.options.nulls_first {
            Some(true) => out.push_str(" NULLS FIRST"),
            Some(false) => out.push_str(" NULLS LAST"),
            None => {}
        }
    }
    Some(())
}

fn bound(bound: &WindowFrameBound, out: &mut String) -> Option<()> {
    match bound {
        WindowFrameBound::CurrentRow => out.push_str("CURRENT ROW"),
        WindowFrameBound::Preceding(None) => out.push_str("UNBOUNDED PRECEDING"),
        WindowFrameBound::Following(None) => out.push_str("UNBOUNDED FOLLOWING"),
        WindowFrameBound::Preceding(Some(n)) => wrap(out, "", n, " PRECEDING")?,
        WindowFrameBound::Following(Some(n)) => wrap(out, "", n, " FOLLOWING")?,
    }
    Some(())
}

fn call(function: &ast::Function, out: &mut String) -> Option<()> {
    if function.filter.is_some() && function.over.is_some() || function.null_treatment.is_some() {
        return None;
    }
    let [part] = function.name.0.as_slice() else { return None };
    let written = part.as_ident()?.value.to_lowercase();
    let FunctionArguments::List(list) = &function.args else {
        return match (&function.args, written.as_str()) {
            (FunctionArguments::None, "current_date" | "current_timestamp") => {
                out.push_str(&written);
                Some(())
            }
            _ => None,
        };
    };
    let args: Option<Vec<&Expr>> = list
        .args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect();
    let star = matches!(list.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]);
    let mut order = None;
    for clause in &list.clauses {
        match clause {
            FunctionArgumentClause::OrderBy(items) => order = Some(items),
            _ => return None,
        }
    }
    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
    if written == "coalesce" || written == "ifnull" {
        out.push_str("COALESCE(");
        list_of(&args?.into_iter().cloned().collect::<Vec<_>>(), out)?;
        out.push(')');
        return Some(());
    }
    // In a window, DuckDB's `first`/`last` are `first_value`/`last_value`; `count(*)` is `count_star()`, or
    // `count()` in a window.
    let function_name = match (written.as_str(), function.over.is_some()) {
        ("count", false) if star => "count_star".to_string(),
        ("first", true) => "first_value".to_string(),
        ("last", true) => "last_value".to_string(),
        _ => name(&written),
    };
    out.push_str(&function_name);
    out.push('(');
    if !star {
        if distinct {
            out.push_str("DISTINCT ");
        }
        list_of(&args?.into_iter().cloned().collect::<Vec<_>>(), out)?;
        if let Some(items) = order {
            out.push(' ');
            order_by(items, out)?;
        }
    }
    out.push(')');
    if let Some(filter) = &function.filter {
        wrap(out, " FILTER (WHERE ", filter, ")")?;
    }
    match &function.over {
        None => {}
        Some(WindowType::NamedWindow(_)) => return None,
        Some(WindowType::WindowSpec(spec)) => {
            if spec.window_name.is_some() {
                return None;
            }
            out.push_str(" OVER (");
            let mut parts = Vec::new();
            if !spec.partition_by.is_empty() {
                let mut text = String::from("PARTITION BY ");
                list_of(&spec.partition_by, &mut text)?;
                parts.push(text);
            }
            if !spec.order_by.is_empty() {
                let mut text = String::new();
                order_by(&spec.order_by, &mut text)?;
                parts.push(text);
            }
            if let Some(frame) = &spec.window_frame {
                let mut text = String::from(match frame.units {
                    WindowFrameUnits::Rows => "ROWS BETWEEN ",
                    WindowFrameUnits::Range => "RANGE BETWEEN ",
                    WindowFrameUnits::Groups => "GROUPS BETWEEN ",
                });
                bound(&frame.start_bound, &mut text)?;
                text.push_str(" AND ");
                bound(frame.end_bound.as_ref().unwrap_or(&WindowFrameBound::CurrentRow), &mut text)?;
                parts.push(text);
            }
            out.push_str(&parts.join(" "));
            out.push(')');
        }
    }
    Some(())
}
