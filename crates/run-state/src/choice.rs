//! Which store a stage records to: `--store` / `PIPELINE_STORE`, else `[store]` in
//! `pipeline.toml`, else the file store in the state folder.

use std::fmt;
use std::str::FromStr;

use pipeline_config::{ConfigError, ConfigFile, Spanned};
use serde::Deserialize;
use serde::de::DeserializeSeed;

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
        StoreChoice::from_settings(config.section("store")?, config)
    }

    /// The store `[store]` names (read by the caller), else the file store.
    fn from_settings(settings: StoreSettings, config: &ConfigFile) -> Result<StoreChoice, crate::Error> {
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

/// What a stage's start needs from `pipeline.toml` in one reading of it: [`StoreChoice::resolve`]
/// and [`ConfigFile::check_section_names`] together, each of which reads the whole document.
///
/// `None` when the document is not what the fast path understands at once (a section no crate
/// owns, a `[store]` that does not parse, a TOML error): the caller then runs the two checks as
/// they are, so every error and its wording stay theirs.
pub(crate) fn resolve_once(given: Option<&str>, config: &ConfigFile) -> Option<Result<StoreChoice, crate::Error>> {
    let (keys, store) = toml::Deserializer::parse(&config.text).ok().and_then(|d| TopLevel.deserialize(d).ok())?;
    if !keys.iter().all(|key| pipeline_config::SECTIONS.iter().any(|(name, _)| name == key)) {
        return None;
    }
    Some(match given {
        Some(_) => StoreChoice::resolve(given, config),
        None => StoreChoice::from_settings(store.unwrap_or_default(), config),
    })
}

/// The top-level keys of a document and its `[store]`, in one pass.
struct TopLevel;

impl<'de> serde::de::DeserializeSeed<'de> for TopLevel {
    type Value = (Vec<String>, Option<StoreSettings>);

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevel {
    type Value = (Vec<String>, Option<StoreSettings>);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML table")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut keys, mut store) = (Vec::new(), None);
        while let Some(key) = map.next_key::<String>()? {
            if key == "store" {
                store = Some(map.next_value::<StoreSettings>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            keys.push(key);
        }
        Ok((keys, store))
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

    #[test]
    fn one_reading_agrees_with_the_two_checks_and_leaves_their_errors_to_them() {
        let config = |text: &str| ConfigFile::from_text(std::path::Path::new("pipeline.toml"), text);
        let good = config("[gate]\nallow_skipped = true\n\n[store]\ndynamodb_table = \"pipeline-status\"\n");
        for given in [None, Some("file"), Some("dynamodb://other")] {
            assert_eq!(
                resolve_once(given, &good).unwrap().unwrap(),
                StoreChoice::resolve(given, &good).unwrap(),
                "{given:?}"
            );
        }
        // A bad table name is an error of the one reading, worded as `resolve` words it.
        let bad_name = config("[store]\ndynamodb_table = \"a b\"\n");
        assert_eq!(
            resolve_once(None, &bad_name).unwrap().unwrap_err().to_string(),
            StoreChoice::resolve(None, &bad_name).unwrap_err().to_string()
        );
        // What the one reading does not understand goes back to the two checks.
        for text in ["[valdate]\nx = 1\n", "[store]\ntable = \"x\"\n", "[gate\n"] {
            assert!(resolve_once(None, &config(text)).is_none(), "{text}");
        }
    }
}
