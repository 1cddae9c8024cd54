//! Maps byte offsets in rendered SQL back to the model file it was rendered from.
//!
//! The text between template tags comes out of a render unchanged, in order. `OffsetMap::build` aligns each such
//! literal run with the rendered output; an offset inside a literal maps exactly, and an offset inside text a tag
//! produced (`{{ ref('x') }}`, a macro call) maps to the start of that tag.

/// Aligned runs of literal text: (offset in rendered SQL, offset in the template, length).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    runs: Vec<(usize, usize, usize)>,
}

/// A position in the template, and whether it is exact or the start of the tag that produced the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOffset {
    pub offset: usize,
    pub exact: bool,
}

impl OffsetMap {
    pub fn build(template: &str, rendered: &str) -> OffsetMap {
        let mut runs = Vec::new();
        let mut cursor = 0;
        for (raw_start, literal) in literal_runs(template) {
            if literal.is_empty() {
                continue;
            }
            if let Some(pos) = rendered.get(cursor..).and_then(|r| r.find(literal)) {
                runs.push((cursor + pos, raw_start, literal.len()));
                cursor += pos + literal.len();
            }
        }
        OffsetMap { runs }
    }

    pub fn to_raw(&self, rendered_offset: usize) -> RawOffset {
        let idx = self.runs.partition_point(|&(start, _, _)| start <= rendered_offset);
        if idx == 0 {
            return RawOffset { offset: 0, exact: self.runs.is_empty() };
        }
        let (start, raw_start, len) = self.runs[idx - 1];
        if rendered_offset < start + len {
            RawOffset { offset: raw_start + (rendered_offset - start), exact: true }
        } else {
            RawOffset { offset: raw_start + len, exact: false }
        }
    }
}

/// The literal text runs of a template, with their offsets, trimmed as whitespace control (`{%-`, `-%}`) trims.
fn literal_runs(template: &str) -> Vec<(usize, &str)> {
    let bytes = template.as_bytes();
    let mut runs = Vec::new();
    let mut literal_start = 0;
    let mut trim_next_start = false;
    let mut i = 0;
    while i + 1 < bytes.len() {
        let close = match (bytes[i], bytes[i + 1]) {
            (b'{', b'{') => "}}",
            (b'{', b'%') => "%}",
            (b'{', b'#') => "#}",
            _ => {
                i += 1;
                continue;
            }
        };
        let mut literal = &template[literal_start..i];
        let mut start = literal_start;
        if trim_next_start {
            let trimmed = literal.trim_start();
            start += literal.len() - trimmed.len();
            literal = trimmed;
        }
        if bytes.get(i + 2) == Some(&b'-') {
            literal = literal.trim_end();
        }
        runs.push((start, literal));
        let Some(end) = template[i + 2..].find(close) else {
            return runs;
        };
        let tag_end = i + 2 + end;
        trim_next_start = tag_end > 0 && bytes[tag_end - 1] == b'-';
        i = tag_end + 2;
        literal_start = i;
    }
    let mut literal = &template[literal_start.min(template.len())..];
    let mut start = literal_start;
    if trim_next_start {
        let trimmed = literal.trim_start();
        start += literal.len() - trimmed.len();
        literal = trimmed;
    }
    runs.push((start, literal));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_literals_exactly_and_expansions_to_their_tag() {
        let template = "select a,\n  b\nfrom {{ ref('x') }} where c > 1";
        let rendered = "select a,\n  b\nfrom silver.x where c > 1";
        let map = OffsetMap::build(template, rendered);
        let b = rendered.find('b').unwrap();
        assert_eq!(map.to_raw(b), RawOffset { offset: template.find('b').unwrap(), exact: true });
        let inside = rendered.find("silver").unwrap() + 2;
        assert_eq!(map.to_raw(inside), RawOffset { offset: template.find("{{").unwrap(), exact: false });
        let c = rendered.find("c >").unwrap();
        assert_eq!(map.to_raw(c), RawOffset { offset: template.find("c >").unwrap(), exact: true });
    }

    #[test]
    fn whitespace_control_trims_literals() {
        let template = "select 1 {%- if true %} , 2 {%- endif -%}\n  as x";
        let rendered = "select 1 , 2as x";
        let map = OffsetMap::build(template, rendered);
        let x = rendered.find('x').unwrap();
        assert_eq!(map.to_raw(x), RawOffset { offset: template.find('x').unwrap(), exact: true });
    }
}
