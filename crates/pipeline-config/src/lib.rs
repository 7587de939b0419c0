//! Reads one section of a monorepo's `pipeline.toml`.
//!
//! Every stage crate owns one section of the file (`[components]` belongs to
//! `source-diff`, `[runner]` to `step-runner`, `[gate]` to `status-report` …)
//! and parses only that section, so a crate can be used without the others.
//! This crate holds the one piece they share: deserialising a section with
//! serde and turning any mistake into a [`ConfigError`] that names the file,
//! the key and the line.
//!
//! ```
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, Default, Debug)]
//! #[serde(deny_unknown_fields)]
//! struct Runner { parallelism: Option<usize> }
//!
//! let text = "[runner]\nparallelism = 4\n\n[other]\nanything = 1\n";
//! let runner: Runner = pipeline_config::parse_section("pipeline.toml".as_ref(), text, "runner").unwrap();
//! assert_eq!(runner.parallelism, Some(4));
//!
//! let bad = "[runner]\nparalelism = 4\n";
//! let err = pipeline_config::parse_section::<Runner>("pipeline.toml".as_ref(), bad, "runner").unwrap_err();
//! assert_eq!(err.line, Some(2));
//! assert!(err.to_string().starts_with("pipeline.toml:2: runner.paralelism: unknown field"));
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

pub use toml::Spanned;

/// The file name every crate looks for at the monorepo root.
pub const FILE_NAME: &str = "pipeline.toml";

/// A mistake in `pipeline.toml`, rendered on one line as `FILE:LINE: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Dotted path of the offending key, e.g. `components.api.depends_on`.
    pub key: String,
    /// What is wrong and, where possible, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    /// An error about a value whose byte span in `text` is known, for checks
    /// made after parsing (a cycle, a glob that does not compile …).
    pub fn at(file: &Path, text: &str, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: Some(line_of(text, span.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// An error that concerns the whole file (it cannot be read, say).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), line: None, key: String::new(), message: message.into() }
    }
}

/// The folder under the monorepo root that holds the pipeline's state, runs and caches.
pub const STATE_DIR: &str = ".pipeline";

/// The options every stage binary shares (`#[command(flatten)]`).
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct StageArgs {
    /// The monorepo root.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The config file [default: REPO/pipeline.toml].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The pipeline state folder (store, runs, caches) [default: REPO/.pipeline].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[cfg(feature = "cli")]
impl StageArgs {
    /// `--config`, or `pipeline.toml` under `root` (the repository's root, or `--repo`).
    pub fn config_path(&self, root: &Path) -> PathBuf {
        self.config.clone().unwrap_or_else(|| root.join(FILE_NAME))
    }

    /// `--state-dir`, or `.pipeline` under `root`.
    pub fn state_dir(&self, root: &Path) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| root.join(STATE_DIR))
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Reads `file` and parses its `section`; a missing section gives `T::default()`.
pub fn load_section<T: DeserializeOwned + Default>(file: &Path, section: &str) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::file(file, format!("cannot read: {e}")))?;
    parse_section(file, &text, section)
}

/// Parses the table `section` of a TOML document; other top-level keys are
/// left to the crates that own them. A missing section gives `T::default()`.
pub fn parse_section<T: DeserializeOwned + Default>(file: &Path, text: &str, section: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| from_toml(file, text, &e, String::new()))?;
    let seed = SectionSeed::<T> { section, _t: PhantomData };
    let mut track = serde_path_to_error::Track::new();
    let found = seed
        .deserialize(serde_path_to_error::Deserializer::new(deserializer, &mut track))
        .map_err(|e| from_toml(file, text, &e, track.path().to_string()))?;
    Ok(found.unwrap_or_default())
}

/// Top-level keys of a document, with their spans, so a composer that knows
/// every section can reject the unknown ones.
pub fn top_level_keys(file: &Path, text: &str) -> Result<Vec<(String, Range<usize>)>, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| from_toml(file, text, &e, String::new()))?;
    // `toml::Table` drops spans, so find each key's header or assignment line.
    Ok(table
        .keys()
        .map(|key| {
            let span = find_key(text, key).unwrap_or(0..0);
            (key.clone(), span)
        })
        .collect())
}

/// `deserialize_with` for an optional duration written as `"90s"`, `"10m"` or `"1h 30m"`.
pub fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<std::time::Duration>, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("`{text}` is not a duration ({e}); write e.g. \"90s\" or \"10m\""))
    })
}

fn find_key(text: &str, key: &str) -> Option<Range<usize>> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let head = trimmed.trim_start_matches('[').trim_start();
        if head.starts_with(key) && head[key.len()..].trim_start().starts_with([']', '.', '=']) {
            let start = offset + (line.len() - trimmed.len());
            return Some(start..start + key.len());
        }
        offset += line.len();
    }
    None
}

fn from_toml(file: &Path, text: &str, error: &toml::de::Error, path: String) -> ConfigError {
    let key = if path == "." { String::new() } else { path };
    ConfigError {
        file: file.to_path_buf(),
        line: error.span().map(|span| line_of(text, span.start)),
        key,
        message: error.message().trim().replace('\n', " "),
    }
}

struct SectionSeed<'a, T> {
    section: &'a str,
    _t: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for SectionSeed<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for SectionSeed<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.section {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Section {
        name: Option<String>,
        #[serde(default)]
        items: std::collections::BTreeMap<String, Item>,
    }

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        paths: Vec<String>,
    }

    fn parse(text: &str) -> Result<Section, ConfigError> {
        parse_section(Path::new("pipeline.toml"), text, "sec")
    }

    #[test]
    fn missing_section_is_default() {
        assert_eq!(parse("[other]\nx = 1\n").unwrap(), Section::default());
    }

    #[test]
    fn unknown_nested_key_names_path_and_line() {
        let err = parse("[sec]\nname = \"a\"\n\n[sec.items.api]\npaths = []\npahts = []\n").unwrap_err();
        assert_eq!(err.line, Some(6));
        assert_eq!(err.key, "sec.items.api.pahts");
        assert!(err.message.contains("unknown field `pahts`"), "{}", err.message);
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse("[sec]\nname = 3\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert_eq!(err.key, "sec.name");
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("[sec]\nname = \"a\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().starts_with("pipeline.toml:2: "));
    }

    #[test]
    fn top_level_keys_found_with_lines() {
        let text = "# c\n[sec]\nname = \"a\"\n[sec.items.x]\npaths = []\n\n[gate]\nx = 1\n";
        let keys = top_level_keys(Path::new("p.toml"), text).unwrap();
        let lines: Vec<_> = keys.iter().map(|(k, s)| (k.as_str(), line_of(text, s.start))).collect();
        assert!(lines.contains(&("sec", 2)));
        assert!(lines.contains(&("gate", 7)));
    }
}
