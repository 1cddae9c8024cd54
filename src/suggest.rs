//! "Did you mean" suggestions by edit distance, shared by every stage that reports an unknown name.

/// The closest candidate to `name`, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(name, candidate);
        let close = score >= 0.85 || strsim::levenshtein(name, candidate) <= (name.len() / 4).max(1);
        if close && best.is_none_or(|(s, c)| score > s || (score == s && candidate < c)) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggestions() {
        let names = ["orders_raw", "customers", "orders"];
        let cases = [("orders_rw", Some("orders_raw")), ("custmers", Some("customers")), ("zzz", None), ("", None)];
        for (input, expected) in cases {
            assert_eq!(did_you_mean(input, names), expected, "{input}");
        }
    }
}
