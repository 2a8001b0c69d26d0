//! Configuration: one TOML file, every key overridable by an `AGENTRY_*`
//! environment variable (`AGENTRY_SANDBOX__WALL_TIME_S=60` sets
//! `sandbox.wall_time_s`; `__` separates levels), then by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Environment variables with the `AGENTRY_` prefix that are not config keys.
const NON_CONFIG_ENV: &[&str] = &["AGENTRY_LOG", "AGENTRY_LOG_FORMAT"];

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory (SQLite file, git repositories, wiki mirror).
    pub data_dir: Option<PathBuf>,
    /// `embedded` (the only mode today; `distributed` arrives with the
    /// PostgreSQL/RabbitMQ adapters).
    pub mode: Mode,
    /// Store settings.
    pub store: StoreConfig,
    /// LLM settings.
    pub llm: LlmConfig,
    /// Workflow settings.
    pub workflow: WorkflowConfig,
    /// Project defaults.
    pub project: ProjectConfig,
    /// Sandbox limits.
    pub sandbox: SandboxConfig,
    /// Engine settings.
    pub engine: EngineSettings,
}

/// Deployment mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One process: SQLite, in-process bus, local integrations.
    #[default]
    Embedded,
}

/// `[store]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite `synchronous` mode: `full` (default; durable on power loss) or
    /// `normal` (durable on process crash).
    pub synchronous: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            synchronous: "full".into(),
        }
    }
}

/// `[llm]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Provider: `scripted` (needs `script`) or `demo` (the bundled demo
    /// session).
    pub provider: Option<String>,
    /// Script file for the scripted provider.
    pub script: Option<PathBuf>,
    /// Simulated latency per LLM call, in milliseconds.
    pub latency_ms: Option<u64>,
}

/// `[workflow]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowConfig {
    /// Workflow definition file (default: the bundled SDLC graph).
    pub file: Option<PathBuf>,
}

/// `[project]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    /// Tracker project key / wiki space (default: the analyst's proposal).
    pub key: Option<String>,
    /// Repository name (default: the analyst's proposal).
    pub repository: Option<String>,
}

/// `[sandbox]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// Wall-time limit of a test run, seconds.
    pub wall_time_s: u64,
    /// Memory (address-space) limit of a test run, MiB.
    pub memory_mb: u64,
    /// Allow network access in test runs.
    pub network: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            wall_time_s: 120,
            memory_mb: 2048,
            network: false,
        }
    }
}

/// `[engine]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Concurrent node runs in this process.
    pub workers: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings { workers: 4 }
    }
}

impl Config {
    /// Loads the file (if given), then applies `AGENTRY_*` overrides from
    /// `env`. Errors name the file, line or variable at fault.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Config> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                text.parse::<toml::Table>()
                    .map_err(|e| anyhow::anyhow!("malformed config file {}: {e}", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("AGENTRY_") else {
                continue;
            };
            if NON_CONFIG_ENV.contains(&name.as_str()) || rest.is_empty() {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, parse_env_value(raw))
                .with_context(|| format!("environment variable {name}"))?;
        }
        let origin = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "environment".into());
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("invalid configuration ({origin}): {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if let Err(error) = self
            .store
            .synchronous
            .parse::<agentry_store_sqlite::Synchronous>()
        {
            bail!("invalid configuration: store.synchronous: {error}");
        }
        if self.engine.workers == 0 {
            bail!("invalid configuration: engine.workers must be at least 1");
        }
        if self.sandbox.wall_time_s == 0 || self.sandbox.memory_mb < 16 {
            bail!("invalid configuration: sandbox.wall_time_s must be > 0 and sandbox.memory_mb >= 16");
        }
        Ok(())
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Accept TOML literals (numbers, booleans, arrays); anything else is a string.
    let probe = format!("v = {raw}");
    match probe.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => bail!("`{head}` is not a table"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentry.toml");
        std::fs::write(
            &file,
            "[sandbox]\nwall_time_s = 10\n[project]\nkey = \"SHOP\"\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&file),
            &env(&[
                ("AGENTRY_SANDBOX__WALL_TIME_S", "30"),
                ("AGENTRY_LLM__PROVIDER", "demo"),
                ("AGENTRY_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.sandbox.wall_time_s, 30);
        assert_eq!(cfg.project.key.as_deref(), Some("SHOP"));
        assert_eq!(cfg.llm.provider.as_deref(), Some("demo"));
    }

    #[test]
    fn errors_name_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[sandbox\nwall_time_s = 10\n").unwrap();
        let err = Config::load(Some(&file), &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("malformed config file"),
            "{err:#}"
        );

        std::fs::write(&file, "[sandbox]\nwall_tme_s = 10\n").unwrap();
        let err = Config::load(Some(&file), &BTreeMap::new()).unwrap_err();
        assert!(format!("{err:#}").contains("wall_tme_s"), "{err:#}");

        let err = Config::load(None, &env(&[("AGENTRY_NOPE", "1")])).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");

        let err = Config::load(None, &env(&[("AGENTRY_STORE__SYNCHRONOUS", "off")])).unwrap_err();
        assert!(format!("{err:#}").contains("store.synchronous"), "{err:#}");

        let missing = dir.path().join("missing.toml");
        let err = Config::load(Some(&missing), &BTreeMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot read config file"),
            "{err:#}"
        );
    }
}
