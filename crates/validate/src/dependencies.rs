//! Dependency scanning (`[validate.dependencies]`): the pinned Python requirements
//! (`requirements*.txt`, `name==version`) and `package-lock.json` files of changed components,
//! checked against a local advisory database in OSV's format (a folder of `*.json` advisories
//! the user refreshes; no network). Each vulnerable package is a `D001` finding at its line,
//! naming the package, the version, the advisory and the fixed version, with the advisory's
//! severity (critical/high: error, moderate/medium: warning, low: info).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Finding, Pos, Severity};

/// The rule ID of a vulnerable dependency.
pub const VULNERABLE: &str = "D001";

/// `[validate.dependencies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencySettings {
    /// The folder of OSV advisories (`*.json`, searched recursively), relative to the monorepo
    /// root.
    pub advisories: String,
}

/// What can go wrong reading the advisory database.
#[derive(Debug, thiserror::Error)]
pub enum AdvisoryError {
    /// The folder, the zip or a file cannot be read.
    #[error("validate.dependencies.advisories: cannot read {}", path.display())]
    Read {
        /// The folder or file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The zip is not one.
    #[error("validate.dependencies.advisories: {} is not a readable zip of OSV advisories", path.display())]
    Zip {
        /// The zip.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: zip::result::ZipError,
    },
    /// An advisory is not OSV JSON.
    #[error("validate.dependencies.advisories: {} is not an OSV advisory", path.display())]
    Parse {
        /// The file (`ZIP/ENTRY` for one in a zip).
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// The largest advisory read, in a folder or a zip.
pub const MAX_ADVISORY_BYTES: u64 = 16 * 1024 * 1024;

/// One OSV advisory (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Advisory {
    /// `GHSA-…`, `PYSEC-…`, `CVE-…`.
    pub id: String,
    /// One line on it.
    #[serde(default)]
    pub summary: String,
    /// The packages and versions it affects.
    #[serde(default)]
    pub affected: Vec<Affected>,
    /// `database_specific.severity` (GitHub's `CRITICAL`, `HIGH`, `MODERATE`, `LOW`).
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

/// One affected package.
#[derive(Debug, Clone, Deserialize)]
pub struct Affected {
    /// Ecosystem and name.
    pub package: Package,
    /// Version ranges (`introduced` / `fixed` events).
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Versions listed one by one.
    #[serde(default)]
    pub versions: Vec<String>,
}

/// An OSV package.
#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    /// `PyPI` or `npm`.
    pub ecosystem: String,
    /// Its name.
    pub name: String,
}

/// An OSV range.
#[derive(Debug, Clone, Deserialize)]
pub struct Range {
    /// Its events in order.
    #[serde(default)]
    pub events: Vec<BTreeMap<String, String>>,
}

/// The advisory database, by (ecosystem, normalised package name).
#[derive(Debug, Default)]
pub struct Database {
    by_package: BTreeMap<(String, String), Vec<(Advisory, usize)>>,
}

fn normalise(ecosystem: &str, name: &str) -> (String, String) {
    let name = if ecosystem == "PyPI" { name.to_ascii_lowercase().replace(['_', '.'], "-") } else { name.to_string() };
    (ecosystem.to_string(), name)
}

impl Database {
    /// Reads every `*.json` under `dir`, or in it when it is a `.zip` (as OSV publishes an
    /// ecosystem's advisories: `all.zip`). Each advisory is bounded to [`MAX_ADVISORY_BYTES`];
    /// links are not followed.
    pub fn load(dir: &Path) -> Result<Database, AdvisoryError> {
        if dir.extension().is_some_and(|e| e == "zip") {
            return Database::load_zip(dir);
        }
        let mut db = Database::default();
        let mut folders = vec![dir.to_path_buf()];
        while let Some(folder) = folders.pop() {
            let entries =
                std::fs::read_dir(&folder).map_err(|source| AdvisoryError::Read { path: folder.clone(), source })?;
            for entry in entries {
                let entry = entry.map_err(|source| AdvisoryError::Read { path: folder.clone(), source })?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|source| AdvisoryError::Read { path: path.clone(), source })?;
                if kind.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|e| e == "json") {
                    let bytes = run_state::fs::read_regular(&path, MAX_ADVISORY_BYTES)
                        .map_err(|source| AdvisoryError::Read { path: path.clone(), source })?;
                    let advisory: Advisory = serde_json::from_slice(&bytes)
                        .map_err(|source| AdvisoryError::Parse { path: path.clone(), source })?;
                    db.add(advisory);
                }
            }
        }
        Ok(db)
    }

    fn load_zip(path: &Path) -> Result<Database, AdvisoryError> {
        use std::io::Read;
        let file = pipeline_config::fs::open_regular(path)
            .map_err(|source| AdvisoryError::Read { path: path.to_path_buf(), source })?;
        let mut archive =
            zip::ZipArchive::new(file).map_err(|source| AdvisoryError::Zip { path: path.to_path_buf(), source })?;
        let mut db = Database::default();
        for index in 0..archive.len() {
            let entry =
                archive.by_index(index).map_err(|source| AdvisoryError::Zip { path: path.to_path_buf(), source })?;
            let entry_name =
                entry.name().map_err(|source| AdvisoryError::Zip { path: path.to_path_buf(), source })?.into_owned();
            if !entry.is_file() || !entry_name.ends_with(".json") {
                continue;
            }
            let name = path.join(&entry_name);
            let mut bytes = Vec::new();
            // Bounded like a file in a folder: the entry's declared size is not trusted.
            entry
                .take(MAX_ADVISORY_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| AdvisoryError::Read { path: name.clone(), source })?;
            if bytes.len() as u64 > MAX_ADVISORY_BYTES {
                let source = std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("is larger than {MAX_ADVISORY_BYTES} bytes"),
                );
                return Err(AdvisoryError::Read { path: name, source });
            }
            let advisory: Advisory =
                serde_json::from_slice(&bytes).map_err(|source| AdvisoryError::Parse { path: name, source })?;
            db.add(advisory);
        }
        Ok(db)
    }

    /// Adds one advisory.
    pub fn add(&mut self, advisory: Advisory) {
        for (index, affected) in advisory.affected.iter().enumerate() {
            let key = normalise(&affected.package.ecosystem, &affected.package.name);
            self.by_package.entry(key).or_default().push((advisory.clone(), index));
        }
    }

    /// The advisories affecting `name` at `version`, each with its fixed version when known.
    pub fn affecting(&self, ecosystem: &str, name: &str, version: &str) -> Vec<(&Advisory, Option<String>)> {
        let Some(found) = self.by_package.get(&normalise(ecosystem, name)) else { return Vec::new() };
        found
            .iter()
            .filter_map(|(advisory, index)| {
                let affected = &advisory.affected[*index];
                if affected.versions.iter().any(|v| v == version) {
                    return Some((advisory, fixed_of(affected)));
                }
                for range in &affected.ranges {
                    let mut inside = false;
                    let mut fixed = None;
                    for event in &range.events {
                        if let Some(introduced) = event.get("introduced")
                            && (introduced == "0" || compare(version, introduced).is_ge())
                        {
                            inside = true;
                        }
                        if let Some(end) = event.get("fixed") {
                            if inside && compare(version, end).is_lt() {
                                return Some((advisory, Some(end.clone())));
                            }
                            inside = false;
                            fixed = Some(end.clone());
                        }
                        if let Some(last) = event.get("last_affected")
                            && inside
                            && compare(version, last).is_le()
                        {
                            return Some((advisory, fixed.clone()));
                        }
                    }
                    if inside
                        && !range.events.iter().any(|e| e.contains_key("fixed") || e.contains_key("last_affected"))
                    {
                        return Some((advisory, None));
                    }
                }
                None
            })
            .collect()
    }
}

fn fixed_of(affected: &Affected) -> Option<String> {
    affected.ranges.iter().flat_map(|r| &r.events).find_map(|e| e.get("fixed").cloned())
}

/// Compares versions part by part (numbers as numbers, other parts as text; `1.2` < `1.2.1`;
/// a pre-release such as `1.2.0rc1` or `1.2.0-beta` before the release).
pub fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(v: &str) -> Vec<(u64, String)> {
        let v = v.trim().trim_start_matches(['v', 'V']);
        let (release, pre) = match v.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
            Some(i) => (&v[..i], Some(&v[i..])),
            None => (v, None),
        };
        let mut out: Vec<(u64, String)> =
            release.split('.').filter(|p| !p.is_empty()).map(|p| (p.parse().unwrap_or(0), String::new())).collect();
        while out.last().is_some_and(|(n, _)| *n == 0) && out.len() > 1 {
            out.pop();
        }
        // A pre-release sorts below its release: a last part of (0, "~pre").
        if let Some(pre) = pre {
            out.push((0, format!("~{}", pre.trim_start_matches(['-', '.', '+']))));
        }
        out
    }
    let (a, b) = (parts(a), parts(b));
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).cloned().unwrap_or((0, "~~".into()));
        let y = b.get(i).cloned().unwrap_or((0, "~~".into()));
        let x_pre = !x.1.is_empty() && x.1 != "~~";
        let y_pre = !y.1.is_empty() && y.1 != "~~";
        let ord = match (x_pre, y_pre) {
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    std::cmp::Ordering::Equal
}

/// Whether a file is one this scanner reads.
pub fn is_dependency_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "package-lock.json" || (name.starts_with("requirements") && name.ends_with(".txt"))
}

/// The pinned packages of a dependency file: (ecosystem, name, version, line).
pub fn pinned(path: &str, text: &str) -> Vec<(&'static str, String, String, u32)> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name == "package-lock.json" {
        return npm_lock(text);
    }
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split(" #").next().unwrap_or(line).trim();
        let line = line.split(';').next().unwrap_or(line).trim();
        if let Some((package, version)) = line.split_once("==") {
            let package = package.split('[').next().unwrap_or(package).trim();
            let version = version.split([' ', '\\']).next().unwrap_or(version).trim();
            if !package.is_empty() && !version.is_empty() && !version.contains('*') {
                found.push(("PyPI", package.to_string(), version.to_string(), index as u32 + 1));
            }
        }
    }
    found
}

/// `package-lock.json` v2/v3 (`packages`) or v1 (`dependencies`), each package at the line of its key.
fn npm_lock(text: &str) -> Vec<(&'static str, String, String, u32)> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else { return Vec::new() };
    let mut found = Vec::new();
    let line_of = |key: &str| -> u32 {
        let quoted = format!("\"{key}\"");
        text.lines().position(|l| l.trim_start().starts_with(&quoted)).map_or(1, |i| i as u32 + 1)
    };
    if let Some(packages) = json.get("packages").and_then(|p| p.as_object()) {
        for (key, package) in packages {
            let Some(name) =
                key.rsplit("node_modules/").next().filter(|n| !n.is_empty() && key.contains("node_modules/"))
            else {
                continue;
            };
            if let Some(version) = package.get("version").and_then(|v| v.as_str()) {
                found.push(("npm", name.to_string(), version.to_string(), line_of(key)));
            }
        }
    } else if let Some(dependencies) = json.get("dependencies").and_then(|p| p.as_object()) {
        for (name, package) in dependencies {
            if let Some(version) = package.get("version").and_then(|v| v.as_str()) {
                found.push(("npm", name.clone(), version.to_string(), line_of(name)));
            }
        }
    }
    found
}

/// The severity of an advisory's findings.
fn severity(advisory: &Advisory) -> Severity {
    let named = advisory
        .database_specific
        .as_ref()
        .and_then(|d| d.get("severity"))
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_ascii_uppercase();
    match named.as_str() {
        "LOW" => Severity::Info,
        "MODERATE" | "MEDIUM" => Severity::Warning,
        // CRITICAL, HIGH, or not said: an error, as a known vulnerability should be.
        _ => Severity::Error,
    }
}

/// The findings of one dependency file.
pub fn check(path: &str, text: &str, db: &Database) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (ecosystem, name, version, line) in pinned(path, text) {
        for (advisory, fixed) in db.affecting(ecosystem, &name, &version) {
            let fix = match &fixed {
                Some(fixed) => format!("upgrade to {fixed} or later"),
                None => "no fixed version is known: replace it or accept the risk".to_string(),
            };
            let summary = if advisory.summary.is_empty() { String::new() } else { format!(" ({})", advisory.summary) };
            findings.push(Finding {
                path: path.to_string(),
                pos: Pos { line, column: 1 },
                rule: VULNERABLE.to_string(),
                severity: severity(advisory),
                message: format!("{name} {version} is vulnerable: {}{summary}; {fix}", advisory.id),
                check: None,
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_compare_part_by_part() {
        assert_eq!(compare("1.2.10", "1.2.9"), Greater);
        assert_eq!(compare("1.2", "1.2.0"), Equal);
        assert_eq!(compare("2.0.0rc1", "2.0.0"), Less);
        assert_eq!(compare("4.17.20", "4.17.21"), Less);
        assert_eq!(compare("1.0.0-beta", "1.0.0"), Less);
    }
}
