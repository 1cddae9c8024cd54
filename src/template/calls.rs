//! Finds `ref(...)` and `source(...)` calls written in a template, with their byte spans, so diagnostics about a
//! dependency point at the call the user wrote. Calls made inside macros are not in the model text and have no span.

use std::ops::Range;

/// A call with string-literal arguments, e.g. `ref('orders')`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateCall {
    pub function: String,
    pub args: Vec<String>,
    pub span: Range<usize>,
}

const FUNCTIONS: &[&str] = &["ref", "source"];

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every `ref`/`source` call whose arguments are all string literals.
pub fn find_calls(text: &str) -> Vec<TemplateCall> {
    let bytes = text.as_bytes();
    let mut calls = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let ident = &text[start..i];
        if !FUNCTIONS.contains(&ident) {
            continue;
        }
        if let Some((args, end)) = parse_args(bytes, i) {
            calls.push(TemplateCall { function: ident.to_string(), args, span: start..end });
            i = end;
        }
    }
    calls
}

/// Parses `( 'a' , "b" )` from `at`; returns the arguments and the offset after `)`.
fn parse_args(bytes: &[u8], mut at: usize) -> Option<(Vec<String>, usize)> {
    let skip_ws = |at: &mut usize| {
        while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    skip_ws(&mut at);
    if bytes.get(at) != Some(&b'(') {
        return None;
    }
    at += 1;
    let mut args = Vec::new();
    loop {
        skip_ws(&mut at);
        match bytes.get(at)? {
            b')' => return Some((args, at + 1)),
            quote @ (b'\'' | b'"') => {
                let quote = *quote;
                let begin = at + 1;
                let len = bytes[begin..].iter().position(|&b| b == quote)?;
                args.push(String::from_utf8_lossy(&bytes[begin..begin + len]).into_owned());
                at = begin + len + 1;
                skip_ws(&mut at);
                match bytes.get(at)? {
                    b',' => at += 1,
                    b')' => return Some((args, at + 1)),
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_literal_calls() {
        let text = "select * from {{ ref('a') }} join {{ source( \"raw\" , 'b' ) }} x, {{ myref('c') }} {{ ref(v) }}";
        let calls = find_calls(text);
        let got: Vec<_> = calls.iter().map(|c| (c.function.as_str(), c.args.clone(), &text[c.span.clone()])).collect();
        assert_eq!(
            got,
            vec![
                ("ref", vec!["a".to_string()], "ref('a')"),
                ("source", vec!["raw".to_string(), "b".to_string()], "source( \"raw\" , 'b' )"),
            ]
        );
    }
}
