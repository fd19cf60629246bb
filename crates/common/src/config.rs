//! Service configuration: a TOML file, every key overridable by an environment variable.
//!
//! For a service `moray`, the key `listen` is overridden by `MORAY_LISTEN`, and a nested key
//! `pool.max_connections` by `MORAY_POOL__MAX_CONNECTIONS`. Environment values are read as
//! TOML values when they parse as one (`5`, `true`, `["a"]`) and as strings otherwise.
//! Every bad key is reported at once, each with its source and the rule it broke.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// Dotted key path, e.g. `pool.max_connections`.
    pub key: String,
    /// Where the value came from: the file path or the environment variable.
    pub source: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {}): {}", self.key, self.source, self.problem)
    }
}

/// Why a service's configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// Keys with bad values or unknown keys, every one of them.
    #[error("invalid configuration:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<KeyProblem>),
}

/// Loads the config of `service` from `path` (when given) and the environment.
///
/// `T::default()` supplies every key that neither sets.
pub fn load<T>(service: &str, path: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(service, path, &env)
}

/// [`load`] with the environment given explicitly (for tests).
pub fn load_from<T>(
    service: &str,
    path: Option<&Path>,
    env: &[(String, String)],
) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let defaults = match Value::try_from(T::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    };
    let mut merged = defaults.clone();
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();

    if let Some(path) = path {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let table: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: shown.clone(),
                message: e.message().to_string(),
            })?;
        overlay(
            &mut merged,
            &defaults,
            table,
            "",
            &shown,
            &mut sources,
            &mut problems,
        );
    }

    let prefix = format!("{}_", service.to_ascii_uppercase().replace('-', "_"));
    let mut env_table = Table::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        // Only variables that name a known top-level key are config; others with the
        // same prefix (MORAY_URL for the client, say) belong to someone else.
        if !defaults.contains_key(&path[0]) {
            continue;
        }
        // A key whose default is a string takes the variable's text as it is: `SHARD=1`
        // means the string "1", not the number.
        // A key whose default is a list takes a TOML array or comma-separated text:
        // `MORAY_GRPC__ALLOW_FROM=10.99.99.0/24,127.0.0.0/8`.
        let value = match lookup(&defaults, &path) {
            Some(Value::String(_)) => Value::String(raw.clone()),
            Some(Value::Array(_)) => match parse_env_value(raw) {
                Value::Array(list) => Value::Array(list),
                _ => Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(|item| match parse_env_value(item) {
                            Value::Array(_) | Value::Table(_) => Value::String(item.to_string()),
                            other => other,
                        })
                        .collect(),
                ),
            },
            _ => parse_env_value(raw),
        };
        insert_path(&mut env_table, &path, value);
        sources.push((path.join("."), name.clone()));
    }
    overlay(
        &mut merged,
        &defaults,
        env_table,
        "",
        "environment",
        &mut sources,
        &mut problems,
    );

    // Try each key on its own over the defaults, so every bad value is named; within a
    // table, down to the key that is bad (`grpc.allow_from`, not `grpc`).
    let mut bad = Vec::new();
    find_bad::<T>(&defaults, &merged, &mut Vec::new(), &mut bad);
    for (key, message) in bad {
        let source = sources
            .iter()
            .rev()
            .find(|(k, _)| *k == key || k.starts_with(&format!("{key}.")))
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| "defaults".to_string());
        problems.push(KeyProblem {
            key,
            source,
            problem: message,
        });
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Value::Table(merged).try_into::<T>().map_err(|e| {
        ConfigError::Invalid(vec![KeyProblem {
            key: "(whole config)".to_string(),
            source: "merged".to_string(),
            problem: e.message().to_string(),
        }])
    })
}

/// [`load_from`] with no file and the environment `pairs` (for tests):
/// `load_env::<Config>("papi", &[("PAPI_LISTEN", "0.0.0.0:9")])`.
pub fn load_env<T>(service: &str, pairs: &[(&str, &str)]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    load_from(service, None, &crate::pairs::owned::<Vec<_>>(pairs))
}

/// What [`load_from`] finds wrong with `file` (the text of `<service>.toml`) and the
/// environment `env`; panics when it loads.
#[cfg(test)]
pub(crate) fn problems_loading<T>(
    service: &str,
    file: &str,
    env: &[(&str, &str)],
) -> Vec<KeyProblem>
where
    T: Serialize + DeserializeOwned + Default,
{
    let err = crate::config_text::load_text::<T>(service, file, env)
        .err()
        .expect("an invalid config");
    let ConfigError::Invalid(problems) = err else {
        panic!("expected Invalid, got {err:?}");
    };
    problems
}

/// Collects `(dotted key, message)` for each value of `layer` (at `path` in the config)
/// that fails to deserialize when laid alone over the defaults.
fn find_bad<T: DeserializeOwned>(
    defaults: &Table,
    layer: &Table,
    path: &mut Vec<String>,
    bad: &mut Vec<(String, String)>,
) {
    for (key, value) in layer {
        path.push(key.clone());
        let mut alone = defaults.clone();
        insert_path(&mut alone, path, value.clone());
        if let Err(e) = Value::Table(alone).try_into::<T>() {
            let before = bad.len();
            if let Value::Table(inner) = value {
                find_bad::<T>(defaults, inner, path, bad);
            }
            // A table none of whose keys is bad alone is named as a whole.
            if bad.len() == before {
                bad.push((path.join("."), e.message().trim().to_string()));
            }
        }
        path.pop();
    }
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let value = table.get(&path[0])?;
    match (path.len(), value) {
        (1, v) => Some(v),
        (_, Value::Table(inner)) => lookup(inner, &path[1..]),
        _ => None,
    }
}

fn parse_env_value(raw: &str) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn insert_path(table: &mut Table, path: &[String], value: Value) {
    if path.len() == 1 {
        table.insert(path[0].clone(), value);
        return;
    }
    let entry = table
        .entry(path[0].clone())
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    if let Value::Table(inner) = entry {
        insert_path(inner, &path[1..], value);
    }
}

/// Lays `layer` over `merged`, reporting keys that the defaults do not know.
fn overlay(
    merged: &mut Table,
    known: &Table,
    layer: Table,
    prefix: &str,
    source: &str,
    sources: &mut Vec<(String, String)>,
    problems: &mut Vec<KeyProblem>,
) {
    for (key, value) in layer {
        let full = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(&key) {
            None => problems.push(KeyProblem {
                key: full,
                source: source.to_string(),
                problem: "unknown key".to_string(),
            }),
            // A table whose default is empty is a map (name -> value, CloudAPI's
            // `services`): its keys are the operator's, not the service's, so all are
            // taken; their values are checked when the whole config is read.
            Some(Value::Table(known_inner)) if known_inner.is_empty() && value.is_table() => {
                if source != "environment" {
                    sources.push((full.clone(), source.to_string()));
                }
                merged.insert(key, value);
            }
            Some(Value::Table(known_inner)) => match value {
                Value::Table(inner) => {
                    let target = merged
                        .entry(key.clone())
                        .or_insert_with(|| Value::Table(Table::new()));
                    if let Value::Table(target) = target {
                        overlay(target, known_inner, inner, &full, source, sources, problems);
                    }
                }
                other => problems.push(KeyProblem {
                    key: full,
                    source: source.to_string(),
                    problem: format!("expected a table, found {}", other.type_str()),
                }),
            },
            Some(_) => {
                if source != "environment" {
                    sources.push((full.clone(), source.to_string()));
                }
                merged.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_text::load_text;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Pool {
        max_connections: u32,
    }
    impl Default for Pool {
        fn default() -> Self {
            Pool { max_connections: 5 }
        }
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Conf {
        listen: String,
        port: u16,
        verbose: bool,
        pool: Pool,
    }
    impl Default for Conf {
        fn default() -> Self {
            Conf {
                listen: "127.0.0.1".into(),
                port: 2020,
                verbose: false,
                pool: Pool::default(),
            }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct WithGrpc {
        listen: String,
        grpc: crate::grpc::ServerConfig,
    }

    #[test]
    fn list_from_environment_is_comma_separated_or_toml() {
        let conf: WithGrpc = load_env(
            "napi",
            &[("NAPI_GRPC__ALLOW_FROM", "10.99.99.0/24, 127.0.0.1")],
        )
        .unwrap();
        let shown: Vec<String> = conf.grpc.allow_from.iter().map(|c| c.to_string()).collect();
        assert_eq!(shown, ["10.99.99.0/24", "127.0.0.1/32"]);
        assert!(conf.grpc.reflection);

        let conf: WithGrpc = load_env(
            "napi",
            &[
                ("NAPI_GRPC__ALLOW_FROM", r#"["::1/128"]"#),
                ("NAPI_GRPC__REFLECTION", "false"),
            ],
        )
        .unwrap();
        assert_eq!(conf.grpc.allow_from.len(), 1);
        assert!(!conf.grpc.reflection);
    }

    #[test]
    fn bad_cidr_names_the_nested_key() {
        let problems =
            problems_loading::<WithGrpc>("napi", "[grpc]\nallow_from = [\"10.0.0.0/33\"]\n", &[]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "grpc.allow_from");
        assert!(problems[0].problem.contains("10.0.0.0/33"), "{problems:?}");
        assert!(problems[0].problem.contains("prefix"), "{problems:?}");

        let err = load_env::<WithGrpc>("napi", &[("NAPI_GRPC__ALLOW_FROM", "ten")]).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("grpc.allow_from (from NAPI_GRPC__ALLOW_FROM)"),
            "{shown}"
        );
        assert!(shown.contains("`ten` is not an IP address"), "{shown}");
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct WithMap {
        listen: String,
        services: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn a_map_takes_the_operators_keys_and_checks_their_values() {
        let text = "services = { cmon = \"https://cmon:9163\" }\n";
        let conf: WithMap = load_text("cloudapi", text, &[]).unwrap();
        assert_eq!(conf.services["cmon"], "https://cmon:9163");

        let text = "services = { cmon = 9163 }\nlisten2 = \"x\"\n";
        let err = load_text::<WithMap>("cloudapi", text, &[]).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("listen2"), "{shown}");
        assert!(shown.contains("services"), "{shown}");
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        let conf: Conf = load_text(
            "moray",
            "port = 3000\n[pool]\nmax_connections = 9\n",
            &[
                ("MORAY_PORT", "4000"),
                ("MORAY_URL", "ignored"),
                ("OTHER_PORT", "1"),
            ],
        )
        .unwrap();
        assert_eq!(conf.port, 4000);
        assert_eq!(conf.pool.max_connections, 9);
        assert_eq!(conf.listen, "127.0.0.1");
    }

    #[test]
    fn string_key_keeps_numeric_text_from_environment() {
        let conf: Conf = load_env("moray", &[("MORAY_LISTEN", "1")]).unwrap();
        assert_eq!(conf.listen, "1");
    }

    #[test]
    fn nested_key_from_environment() {
        let conf: Conf = load_env("moray", &[("MORAY_POOL__MAX_CONNECTIONS", "16")]).unwrap();
        assert_eq!(conf.pool.max_connections, 16);
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let problems = problems_loading::<Conf>(
            "moray",
            "port = \"high\"\nbogus = 1\n[pool]\nmax_conns = 2\n",
            &[("MORAY_VERBOSE", "maybe")],
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"port"), "{problems:?}");
        assert!(keys.contains(&"bogus"), "{problems:?}");
        assert!(keys.contains(&"pool.max_conns"), "{problems:?}");
        assert!(keys.contains(&"verbose"), "{problems:?}");
        let verbose = problems.iter().find(|p| p.key == "verbose").unwrap();
        assert_eq!(verbose.source, "MORAY_VERBOSE");
    }
}
