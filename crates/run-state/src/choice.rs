//! Which store a stage records to: `--store` / `PIPELINE_STORE`, else `[store]` in
//! `pipeline.toml`, else the file store in the state folder.

use std::fmt;
use std::str::FromStr;

use pipeline_config::{ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

/// Where the step records live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreChoice {
    /// `.pipeline/state.jsonl` (the embedded default).
    #[default]
    File,
    /// A DynamoDB table (`dynamodb://TABLE`), shared by CodeBuild actions.
    DynamoDb {
        /// The table.
        table: String,
    },
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::File => f.write_str("file"),
            StoreChoice::DynamoDb { table } => write!(f, "dynamodb://{table}"),
        }
    }
}

/// Whether a name is a DynamoDB table name: 3 to 255 of `a-z A-Z 0-9 _ - .`.
pub fn check_table_name(name: &str) -> Result<(), String> {
    if (3..=255).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        Ok(())
    } else {
        Err(format!("`{name}` is not a DynamoDB table name (3 to 255 letters, digits, `_`, `-`, `.`)"))
    }
}

impl FromStr for StoreChoice {
    type Err = String;

    /// `file` or `dynamodb://TABLE`.
    fn from_str(text: &str) -> Result<StoreChoice, String> {
        if text == "file" {
            return Ok(StoreChoice::File);
        }
        match text.strip_prefix("dynamodb://") {
            Some(table) => {
                check_table_name(table)?;
                Ok(StoreChoice::DynamoDb { table: table.into() })
            }
            None => Err(format!("store `{text}` is neither `file` nor `dynamodb://TABLE`")),
        }
    }
}

/// `[store]`: the status store of every stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// The DynamoDB table (the `StatusTable` of `cfn/pipeline.yaml`); the file store when unset.
    #[serde(default)]
    pub dynamodb_table: Option<Spanned<String>>,
}

impl StoreChoice {
    /// The store `given` names (a flag or `PIPELINE_STORE`), else the config's `[store]`, else the file store.
    pub fn resolve(given: Option<&str>, config: &ConfigFile) -> Result<StoreChoice, crate::Error> {
        if let Some(given) = given {
            return given
                .parse()
                .map_err(|message| crate::Error::BadName { what: "--store (PIPELINE_STORE)", message });
        }
        let settings: StoreSettings = config.section("store")?;
        match settings.dynamodb_table {
            None => Ok(StoreChoice::File),
            Some(table) => {
                let span = table.span();
                let table = table.into_inner();
                check_table_name(&table).map_err(|message| {
                    ConfigError::at(&config.path, &config.text, span, "store.dynamodb_table", message)
                })?;
                Ok(StoreChoice::DynamoDb { table })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_over_the_config_and_bad_names_name_the_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, "[gate]\n\n[store]\ndynamodb_table = \"pipeline-status\"\n").unwrap();
        let config = ConfigFile::load(&path).unwrap();
        assert_eq!(
            StoreChoice::resolve(None, &config).unwrap(),
            StoreChoice::DynamoDb { table: "pipeline-status".into() }
        );
        assert_eq!(StoreChoice::resolve(Some("file"), &config).unwrap(), StoreChoice::File);
        assert_eq!(StoreChoice::resolve(Some("dynamodb://other"), &config).unwrap().to_string(), "dynamodb://other");
        let bad = StoreChoice::resolve(Some("sqlite://x"), &config).unwrap_err().to_string();
        assert_eq!(bad, "--store (PIPELINE_STORE): store `sqlite://x` is neither `file` nor `dynamodb://TABLE`");

        std::fs::write(&path, "[store]\ndynamodb_table = \"a b\"\n").unwrap();
        let bad = StoreChoice::resolve(None, &ConfigFile::load(&path).unwrap()).unwrap_err().to_string();
        assert!(bad.contains("pipeline.toml:2: store.dynamodb_table: `a b` is not a DynamoDB table name"), "{bad}");
        std::fs::write(&path, "[store]\ntable = \"x\"\n").unwrap();
        let bad = StoreChoice::resolve(None, &ConfigFile::load(&path).unwrap()).unwrap_err().to_string();
        assert!(bad.contains("pipeline.toml:2"), "{bad}");
        std::fs::write(&path, "[gate]\n").unwrap();
        assert_eq!(StoreChoice::resolve(None, &ConfigFile::load(&path).unwrap()).unwrap(), StoreChoice::File);
    }
}
