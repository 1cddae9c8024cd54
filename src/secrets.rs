//! Secrets: the values of environment variables named `DBT_ENV_SECRET_*` (dbt's convention) or `PIPE_SECRET_*`.
//! A model may use one through `env_var()`, and the SQL that executes holds it; everything pipe writes or prints
//! (the manifest, compiled SQL, stored view definitions, run results, run history, OpenLineage events, the docs
//! site, diagnostics and logs) holds `*****` in its place, as dbt does.
//!
//! The set of values is process-wide: `cli` registers it once from the environment it reads, and every writer
//! passes its text through `mask` on the way out.

use std::borrow::Cow;
use std::sync::RwLock;

/// Environment variable name prefixes whose values are secrets.
pub const SECRET_PREFIXES: [&str; 2] = ["DBT_ENV_SECRET_", "PIPE_SECRET_"];

/// What a secret is replaced with.
pub const MASK: &str = "*****";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether an environment variable of this name holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    SECRET_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Registers the values of the secret variables among `vars` (name, value); empty values are not secrets.
pub fn register<'a>(vars: impl IntoIterator<Item = (&'a String, &'a String)>) {
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for (name, value) in vars {
        if is_secret_name(name) && !value.is_empty() && !secrets.contains(value) {
            secrets.push(value.clone());
        }
    }
    // Longer values first, so a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers one value as a secret (a password in a URL given on the command line).
pub fn add(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `*****`.
pub fn mask(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut masked = text.to_string();
    for secret in secrets.iter() {
        masked = masked.replace(secret.as_str(), MASK);
    }
    Cow::Owned(masked)
}

/// A URL with its password (userinfo) replaced by `*****`, for printing.
pub fn mask_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            if let Some(password) = url.password() {
                add(password);
            }
            let _ = url.set_password(Some(MASK));
            mask(url.as_str()).into_owned()
        }
        _ => mask(text).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_values_and_url_passwords() {
        let vars = [
            ("DBT_ENV_SECRET_TOKEN".to_string(), "tok-123-abc".to_string()),
            ("PIPE_SECRET_X".to_string(), "tok-123".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        register(vars.iter().map(|(n, v)| (n, v)));
        assert_eq!(mask("where t = 'tok-123-abc' and u = 'tok-123'"), "where t = '*****' and u = '*****'");
        assert_eq!(mask("/root"), "/root");
        assert_eq!(mask_url("http://user:pw@localhost:5000/api"), "http://user:*****@localhost:5000/api");
        assert_eq!(mask_url("http://localhost:5000"), "http://localhost:5000");
    }
}
