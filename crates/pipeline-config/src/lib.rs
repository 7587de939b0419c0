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

pub mod fs;

/// The file name every crate looks for at the monorepo root.
pub const FILE_NAME: &str = "pipeline.toml";

/// Every top-level section of `pipeline.toml`, with the crate that owns it. A stage
/// rejects any other section name, so a typo (`[valdate]`) is an error in every stage,
/// not a section silently ignored; each crate checks the contents of its own sections.
pub const SECTIONS: &[(&str, &str)] = &[
    ("diff", "source-diff"),
    ("components", "source-diff"),
    ("runner", "step-runner"),
    ("gate", "status-report"),
    ("lambda", "lambda-packager"),
    ("validate", "validate"),
    ("deploy", "stack-deployer"),
    ("publish", "frontend-publisher"),
    ("store", "run-state"),
    ("notify", "status-report"),
    ("stats", "status-report"),
];

/// The largest `pipeline.toml` read; a config is a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The longest duration a step may be given: more is a typo (`"500000000000y"`), not a plan.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

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
    /// The error under the mistake (the OS error of a file that cannot be read, the glob
    /// library's of a set that does not build): its cause, never repeated in the message.
    #[source]
    pub source: Option<Cause>,
}

/// The error under a [`ConfigError`], shared so the mistake stays `Clone`; two causes are equal
/// when they say the same.
#[derive(Debug, Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Keeps `error` as a cause.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(std::sync::Arc::new(error))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

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
            source: None,
        }
    }

    /// An error that concerns the whole file (it cannot be read, say).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), line: None, key: String::new(), message: message.into(), source: None }
    }

    /// An error about `key` as a whole (no one line), with the error under it as its source.
    pub fn caused(
        file: &Path,
        key: impl Into<String>,
        message: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: key.into(),
            message: message.into(),
            source: Some(Cause::new(cause)),
        }
    }
}

/// A settings file that exists but cannot be read (a folder, a named pipe, no permission, over
/// its bound): the OS error is its source, not part of its message.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot be read", file.display())]
pub struct ReadError {
    /// The file.
    pub file: PathBuf,
    /// Why it cannot be read.
    #[source]
    pub source: std::io::Error,
}

/// The folder under the monorepo root that holds the pipeline's state, runs and caches.
pub const STATE_DIR: &str = ".pipeline";

/// A `pipeline.toml` read once (a regular file, bounded, UTF-8), whose sections each crate parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Where it is (named in errors).
    pub path: PathBuf,
    /// Its text; empty when the file does not exist and was optional.
    pub text: String,
    /// Whether the file exists.
    pub exists: bool,
}

impl ConfigFile {
    /// Reads the file; a missing file is an error naming it.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let bytes =
            fs::read_regular(path, MAX_CONFIG_BYTES).map_err(|e| ConfigError::caused(path, "", "cannot be read", e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let line = line_of(&String::from_utf8_lossy(&e.as_bytes()[..at]), at);
            ConfigError {
                file: path.to_path_buf(),
                line: Some(line),
                key: String::new(),
                message: "not UTF-8 text; save the file as UTF-8".into(),
                source: None,
            }
        })?;
        Ok(ConfigFile { path: path.to_path_buf(), text, exists: true })
    }

    /// Reads the file when it exists; otherwise every section has its default.
    pub fn load_optional(path: &Path) -> Result<ConfigFile, ConfigError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(ConfigFile { path: path.to_path_buf(), text: String::new(), exists: false })
            }
            _ => ConfigFile::load(path),
        }
    }

    /// A config given as text (tests, tools that build one).
    pub fn from_text(path: &Path, text: &str) -> ConfigFile {
        ConfigFile { path: path.to_path_buf(), text: text.to_string(), exists: true }
    }

    /// Parses one section; a missing section gives `T::default()`.
    pub fn section<T: DeserializeOwned + Default>(&self, section: &str) -> Result<T, ConfigError> {
        parse_section(&self.path, &self.text, section)
    }

    /// Rejects top-level sections that no crate owns ([`SECTIONS`]).
    pub fn check_section_names(&self) -> Result<(), ConfigError> {
        for (key, span) in top_level_keys(&self.path, &self.text)? {
            if !SECTIONS.iter().any(|(name, _)| *name == key) {
                let known: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
                return Err(ConfigError::at(
                    &self.path,
                    &self.text,
                    span,
                    key,
                    format!("unknown section; expected one of: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a name that becomes part of a path (a component, a function, a stack):
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 64
/// characters. `Err` says what is wrong, for a [`ConfigError`].
pub fn check_name(name: &str) -> Result<(), String> {
    let valid_start = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 64 || !valid_start || !valid_chars || name.contains("..") {
        return Err(format!(
            "`{}` is not a valid name: use letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 64 characters",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Compiles a glob as every section's globs are: against repo-relative `/` paths, `*` stays
/// within a folder (`literal_separator`), `**` spans folders, `\` escapes.
pub fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build()
}

/// Compiles globs written at `(pattern, span)` under `key` into one set; a bad one is a
/// [`ConfigError`] naming its line.
pub fn glob_set<'a>(
    file: &Path,
    text: &str,
    patterns: impl IntoIterator<Item = (&'a str, Range<usize>)>,
    key: &str,
) -> Result<globset::GlobSet, ConfigError> {
    let mut builder = globset::GlobSetBuilder::new();
    for (pattern, span) in patterns {
        builder.add(glob(pattern).map_err(|e| {
            ConfigError::at(file, text, span, key, format!("`{pattern}` is not a valid glob: {}", e.kind()))
        })?);
    }
    builder.build().map_err(|e| ConfigError::caused(file, key, "the globs cannot be built into one set", e))
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Reads `file` and parses its `section`; a missing section gives `T::default()`.
pub fn load_section<T: DeserializeOwned + Default>(file: &Path, section: &str) -> Result<T, ConfigError> {
    ConfigFile::load(file)?.section(section)
}

/// Parses the table `section` of a TOML document; other top-level keys are
/// left to the crates that own them. A missing section gives `T::default()`.
pub fn parse_section<T: DeserializeOwned + Default>(file: &Path, text: &str, section: &str) -> Result<T, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| from_toml(file, text, &e, String::new()))?;
    let seed = SectionSeed::<T> { section, _t: PhantomData };
    let mut track = serde_path_to_error::Track::new();
    let found = seed
        .deserialize(serde_path_to_error::Deserializer::new(deserializer, &mut track))
        // A `Spanned<T>` value adds serde_spanned's private field name to the path: not a key.
        .map_err(|e| {
            from_toml(file, text, &e, track.path().to_string().replace(".$__serde_spanned_private_value", ""))
        })?;
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
    let duration = humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!("`{text}` is not a duration ({e}); write e.g. \"90s\" or \"10m\""))
    })?;
    if duration > MAX_DURATION {
        return Err(serde::de::Error::custom(format!("`{text}` is longer than 24h; write at most \"24h\"")));
    }
    Ok(Some(duration))
}

/// [`duration`] for a timeout or a time to live: `"0s"` (no time at all) is refused too.
pub fn positive_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    match duration(deserializer)? {
        Some(d) if d.is_zero() => {
            Err(serde::de::Error::custom("is zero, which would give up at once; write e.g. \"90s\" or \"10m\""))
        }
        other => Ok(other),
    }
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
        source: None,
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
    fn durations_are_bounded_and_names_checked() {
        #[derive(Debug, Deserialize, Default)]
        struct T {
            #[serde(default, deserialize_with = "duration")]
            timeout: Option<std::time::Duration>,
        }
        let err = parse_section::<T>(Path::new("p.toml"), "[t]\ntimeout = \"500000000000y\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("longer than 24h"), "{err}");
        let day = parse_section::<T>(Path::new("p.toml"), "[t]\ntimeout = \"24h\"\n", "t").unwrap();
        assert_eq!(day.timeout, Some(MAX_DURATION));
        for bad in ["../../x", "", ".hidden", "a/b", "a..b", "caf\u{e9}"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["api-handler", "frontend_builder", "v1.2", "A9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_config_that_is_not_utf8_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, b"[diff]\ndefault_branch = \"m\xe9in\"\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }

    #[test]
    fn a_config_that_cannot_be_read_keeps_the_os_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::create_dir(&path).unwrap();
        let err = ConfigFile::load(&path).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: cannot be read", path.display()));
        let source = std::error::Error::source(&err).expect("the OS error is the source");
        assert!(source.to_string().contains("not a regular file"), "{source}");
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
