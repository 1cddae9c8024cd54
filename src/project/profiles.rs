//! dbt's `profiles.yml`: the target a dbt project builds for. pipe reads the profile the project names
//! (`profile:`, else the project's name) from the first folder that has the file (the CLI passes `--profiles-dir`,
//! `DBT_PROFILES_DIR`, the project folder and `~/.dbt`, in that order), picks `--target` or the profile's `target:`,
//! and takes its `type`, `schema` (DuckDB's default `main`), `database` and `threads`, and pipe's `warehouse`,
//! `engine` and `scheduler`. `{{ env_var('X', 'd') }}`
//! in the file is filled from the environment, as dbt renders it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The target a build is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// The adapter (`duckdb`).
    pub kind: String,
    /// The schema models go to when they set none.
    pub schema: String,
    pub database: Option<String>,
    pub threads: Option<usize>,
    /// dbt-duckdb's `external_root`: where `external` models without a `location` are written.
    pub external_root: Option<String>,
    /// The `profiles.yml` it was read from, when there was one.
    pub file: Option<PathBuf>,
    /// `engine:` and `scheduler:`: the target's models run on a Ballista cluster.
    pub engine: crate::project::EngineKeys,
    /// `warehouse:`: where this target's warehouse is (a folder, or `s3://bucket/prefix`), in place of the project
    /// file's.
    pub warehouse: Option<String>,
}

impl Target {
    /// The target with no `profiles.yml`: dbt-duckdb's defaults (`dev`, schema `main`).
    pub fn default_for(name: &str, kind: &str) -> Target {
        Target {
            name: if name.is_empty() { "dev".into() } else { name.to_string() },
            kind: kind.to_string(),
            schema: "main".into(),
            database: None,
            threads: None,
            external_root: None,
            file: None,
            engine: Default::default(),
            warehouse: None,
        }
    }
}

/// Finds and reads the target. `Ok(None)` when no folder has a `profiles.yml`; an error when the file is there but
/// the profile or target is not, or the file does not parse.
pub fn resolve(
    profile: &str,
    dirs: &[PathBuf],
    target: Option<&str>,
    env_vars: &BTreeMap<String, String>,
) -> Result<Option<Target>, String> {
    let Some(file) = dirs.iter().map(|d| d.join("profiles.yml")).find(|f| f.is_file()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let text = fill_env_vars(&text, env_vars)?;
    let parsed: BTreeMap<String, Value> = match super::parse_yaml(&text) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Err(format!("`{}` is empty", file.display())),
        Err(err) => return Err(format!("invalid YAML in `{}`: {}", file.display(), err.without_snippet())),
    };
    let Some(entry) = parsed.get(profile) else {
        let known: Vec<&String> = parsed.keys().filter(|k| *k != "config").collect();
        return Err(format!(
            "`{}` has no profile `{profile}` (the project's `profile:`); it has {}",
            file.display(),
            known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ));
    };
    let name = target
        .map(str::to_string)
        .or_else(|| entry.get("target").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "dev".into());
    let outputs = entry.get("outputs").and_then(Value::as_object);
    let Some(output) = outputs.and_then(|o| o.get(&name)) else {
        let known: Vec<String> = outputs.map(|o| o.keys().map(|k| format!("`{k}`")).collect()).unwrap_or_default();
        return Err(format!(
            "profile `{profile}` in `{}` has no target `{name}`; its targets are {}",
            file.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ));
    };
    let text = |key: &str| output.get(key).and_then(Value::as_str).map(str::to_string);
    Ok(Some(Target {
        name,
        kind: text("type").unwrap_or_else(|| "duckdb".into()),
        schema: text("schema").unwrap_or_else(|| "main".into()),
        database: text("database"),
        threads: output.get("threads").and_then(Value::as_u64).map(|n| n as usize),
        external_root: text("external_root"),
        file: Some(file),
        engine: crate::project::EngineKeys { engine: text("engine"), scheduler: text("scheduler") },
        warehouse: text("warehouse"),
    }))
}

/// `{{ env_var('NAME') }}` and `{{ env_var('NAME', 'default') }}` filled in.
fn fill_env_vars(text: &str, env_vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else { break };
        let inner = rest[start + 2..start + end].trim();
        out.push_str(&rest[..start]);
        let value = match inner.strip_prefix("env_var(").and_then(|s| s.strip_suffix(')')) {
            Some(arguments) => {
                let parts: Vec<String> = arguments
                    .split(',')
                    .map(|p| p.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
                    .collect();
                match (env_vars.get(&parts[0]), parts.get(1)) {
                    (Some(value), _) => value.clone(),
                    (None, Some(default)) => default.clone(),
                    (None, None) => {
                        return Err(format!("profiles.yml: env var `{}` is not set and has no default", parts[0]))
                    }
                }
            }
            None => {
                return Err(format!("profiles.yml: only `env_var(...)` is supported in `{{{{ }}}}`, not `{inner}`"))
            }
        };
        out.push_str(&value);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The folders the CLI searches, in order, given what it was told.
pub fn search_dirs(flag: Option<&Path>, env: Option<&str>, project_dir: &Path, home: Option<&str>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    dirs.extend(flag.map(Path::to_path_buf));
    dirs.extend(env.filter(|e| !e.is_empty()).map(PathBuf::from));
    dirs.push(project_dir.to_path_buf());
    dirs.extend(home.map(|h| Path::new(h).join(".dbt")));
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_projects_profile_and_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("profiles.yml"),
            "shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: dev.duckdb\n    prod:\n      type: duckdb\n      schema: \"{{ env_var('PROD_SCHEMA', 'analytics') }}\"\n      threads: 4\n",
        )
        .unwrap();
        let dirs = vec![dir.path().to_path_buf()];
        let env = BTreeMap::new();
        let dev = resolve("shop", &dirs, None, &env).unwrap().unwrap();
        assert_eq!((dev.name.as_str(), dev.kind.as_str(), dev.schema.as_str()), ("dev", "duckdb", "main"));
        let prod = resolve("shop", &dirs, Some("prod"), &env).unwrap().unwrap();
        assert_eq!((prod.schema.as_str(), prod.threads), ("analytics", Some(4)));
        let env = BTreeMap::from([("PROD_SCHEMA".to_string(), "reporting".to_string())]);
        assert_eq!(resolve("shop", &dirs, Some("prod"), &env).unwrap().unwrap().schema, "reporting");
        assert!(resolve("shop", &dirs, Some("qa"), &env).unwrap_err().contains("has no target `qa`"));
        assert!(resolve("other", &dirs, None, &env).unwrap_err().contains("no profile `other`"));
        assert_eq!(resolve("shop", &[dir.path().join("missing")], None, &env).unwrap(), None);
    }
}
