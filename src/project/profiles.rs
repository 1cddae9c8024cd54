//! dbt's `profiles.yml`: the target a dbt project builds for. pipe reads the profile the project names
//! (`profile:`, else the project's name) from the first folder that has the file (the CLI passes `--profiles-dir`,
//! `DBT_PROFILES_DIR`, the project folder and `~/.dbt`, in that order), picks `--target` or the profile's `target:`,
//! and takes its `type`, `schema` (DuckDB's default `main`), `database` and `threads`, dbt-duckdb's S3 settings
//! (`BucketSettings`), and pipe's `warehouse`, `engine` and `scheduler`. `{{ env_var('X', 'd') }}`
//! in the file is filled from the environment, as dbt renders it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
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
    /// How to reach a warehouse in a bucket, from the target's S3 settings.
    pub bucket: BucketSettings,
}

/// How to reach the bucket a warehouse is in, from dbt-duckdb's S3 settings of a profile target: `settings:`
/// (DuckDB's `s3_endpoint`, `s3_region`, `s3_access_key_id`, `s3_secret_access_key`, `s3_session_token`,
/// `s3_use_ssl`, `s3_url_style`) or a `secrets:` entry of `type: s3` (`endpoint`, `region`, `key_id`, `secret`,
/// `session_token`, `use_ssl`, `url_style`), the secret winning over the settings. What the target leaves unset
/// comes from the standard AWS variables. The credentials are never written down (the manifest skips them, `Debug`
/// hides them).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BucketSettings {
    /// DuckDB's `host[:port]`, or a URL with its scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `false`: the endpoint speaks plain HTTP (DuckDB's default is `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_ssl: Option<bool>,
    /// `true` for DuckDB's `vhost` URL style (`bucket.host/key`), `false` for `path` (`host/bucket/key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_hosted: Option<bool>,
    #[serde(skip)]
    pub credentials: Option<BucketCredentials>,
}

/// An access key and its secret (and a session token for temporary credentials).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for BucketSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketSettings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("use_ssl", &self.use_ssl)
            .field("virtual_hosted", &self.virtual_hosted)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|c| format!("key {} (secret hidden)", c.access_key_id)),
            )
            .finish()
    }
}

impl BucketSettings {
    pub fn is_unset(&self) -> bool {
        *self == BucketSettings::default()
    }

    /// The object-store options these settings are (`aws_endpoint`, `aws_allow_http`, ...), as delta-rs takes them;
    /// options not given here are read from the AWS variables by delta-rs.
    pub fn store_options(&self) -> Vec<(String, String)> {
        let mut options = Vec::new();
        let mut set = |key: &str, value: String| options.push((key.to_string(), value));
        if let Some(endpoint) = &self.endpoint {
            let endpoint = if endpoint.contains("://") {
                endpoint.clone()
            } else {
                format!("{}://{endpoint}", if self.use_ssl == Some(false) { "http" } else { "https" })
            };
            if endpoint.starts_with("http://") {
                set("aws_allow_http", "true".into());
            }
            set("aws_endpoint", endpoint);
        } else if self.use_ssl == Some(false) {
            set("aws_allow_http", "true".into());
        }
        if let Some(region) = &self.region {
            set("aws_region", region.clone());
        }
        if let Some(virtual_hosted) = self.virtual_hosted {
            set("aws_virtual_hosted_style_request", virtual_hosted.to_string());
        }
        if let Some(credentials) = &self.credentials {
            set("aws_access_key_id", credentials.access_key_id.clone());
            set("aws_secret_access_key", credentials.secret_access_key.clone());
            if let Some(token) = &credentials.session_token {
                set("aws_token", token.clone());
            }
        }
        options
    }

    /// The S3 settings of a profile target (`output`): its `settings:` overlaid by its `secrets:` of `type: s3`.
    fn of_target(output: &Value) -> Result<BucketSettings, String> {
        let mut settings = BucketSettings::default();
        let (mut key_id, mut secret, mut token) = (None, None, None);
        let mut apply = |key: &str, value: &Value, origin: &str| -> Result<(), String> {
            let text = || match value {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(format!("{origin} `{key}` must be a single value")),
            };
            match key {
                "endpoint" => settings.endpoint = Some(text()?),
                "region" => settings.region = Some(text()?),
                "key_id" | "access_key_id" => key_id = Some(text()?),
                "secret" | "secret_access_key" => secret = Some(text()?),
                "session_token" => token = Some(text()?),
                "use_ssl" => {
                    settings.use_ssl = Some(match text()?.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => return Err(format!("{origin} `{key}` is `{other}`; it is `true` or `false`")),
                    })
                }
                "url_style" => {
                    settings.virtual_hosted = Some(match text()?.to_ascii_lowercase().as_str() {
                        "vhost" => true,
                        "path" => false,
                        other => return Err(format!("{origin} `{key}` is `{other}`; it is `path` or `vhost`")),
                    })
                }
                _ => {}
            }
            Ok(())
        };
        if let Some(map) = output.get("settings").and_then(Value::as_object) {
            for (key, value) in map {
                if let Some(key) = key.strip_prefix("s3_") {
                    apply(key, value, "the target's setting `s3_`")?;
                }
            }
        }
        for secret in output.get("secrets").and_then(Value::as_array).into_iter().flatten() {
            let Some(secret) = secret.as_object() else { continue };
            if secret.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("s3")) {
                for (key, value) in secret {
                    apply(key, value, "the target's S3 secret's")?;
                }
            }
        }
        settings.credentials =
            match (key_id, secret) {
                (Some(access_key_id), Some(secret_access_key)) => {
                    Some(BucketCredentials { access_key_id, secret_access_key, session_token: token })
                }
                (None, None) => None,
                _ => return Err(
                    "the target's S3 settings give an access key id without its secret, or a secret without its key id"
                        .into(),
                ),
            };
        Ok(settings)
    }
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
            bucket: BucketSettings::default(),
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
    let bucket = BucketSettings::of_target(output)
        .map_err(|e| format!("profile `{profile}`, target `{name}` in `{}`: {e}", file.display()))?;
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
        bucket,
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

    fn bucket_of(output: &str) -> Result<BucketSettings, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("profiles.yml"), format!("p:\n  outputs:\n    dev:\n{output}")).unwrap();
        resolve("p", &[dir.path().to_path_buf()], None, &BTreeMap::new()).map(|t| t.unwrap().bucket)
    }

    #[test]
    fn dbt_duckdb_s3_settings_and_secrets_are_the_buckets_options() {
        let settings = bucket_of(
            "      type: duckdb\n      settings:\n        s3_endpoint: 127.0.0.1:9000\n        s3_use_ssl: false\n        \
             s3_url_style: path\n        s3_region: eu-west-1\n        s3_access_key_id: key\n        \
             s3_secret_access_key: s3cr3t-value\n        threads: 4\n",
        )
        .unwrap();
        assert_eq!(
            settings.store_options(),
            [
                ("aws_allow_http", "true"),
                ("aws_endpoint", "http://127.0.0.1:9000"),
                ("aws_region", "eu-west-1"),
                ("aws_virtual_hosted_style_request", "false"),
                ("aws_access_key_id", "key"),
                ("aws_secret_access_key", "s3cr3t-value"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let shown = format!("{settings:?}");
        assert!(shown.contains("key key") && !shown.contains("s3cr3t"), "{shown}");
        // A secret of `type: s3` overrides the settings; DuckDB's default is TLS.
        let secret = bucket_of(
            "      settings:\n        s3_region: eu-west-1\n      secrets:\n        - type: s3\n          \
             key_id: k2\n          secret: s2\n          session_token: t2\n          endpoint: minio:9000\n          \
             region: us-east-2\n",
        )
        .unwrap();
        let options = secret.store_options();
        assert!(options.contains(&("aws_endpoint".into(), "https://minio:9000".into())), "{options:?}");
        assert!(options.contains(&("aws_region".into(), "us-east-2".into())), "{options:?}");
        assert!(options.contains(&("aws_token".into(), "t2".into())), "{options:?}");
        assert!(!options.iter().any(|(k, _)| k == "aws_allow_http"), "{options:?}");
        // The manifest's form keeps the endpoint and drops the credentials.
        let json = serde_json::to_string(&secret).unwrap();
        assert!(json.contains("minio:9000") && !json.contains("s2") && !json.contains("k2"), "{json}");
        assert!(bucket_of("      type: duckdb\n").unwrap().is_unset());
        let half = bucket_of("      settings:\n        s3_access_key_id: key\n").unwrap_err();
        assert!(half.contains("without its secret"), "{half}");
        let style = bucket_of("      settings:\n        s3_url_style: virtual\n").unwrap_err();
        assert!(style.contains("`path` or `vhost`"), "{style}");
    }
}
