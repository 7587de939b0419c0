//! Release records: what an environment runs after a deploy that passed, so it can be put back.
//!
//! A [`Release`] names, for one environment, the commit and run that made it, and per stack the
//! template (by its S3 URL in the artifact bucket) and the parameters the change set used
//! (a `NoEcho` value is never kept: it is marked [`Parameter::UsePreviousValue`]), per function
//! the zip's key and `CodeSha256`, and the site's release (its id and where its file list is).
//! The deploying stages each contribute their part under the run's id ([`contribute`]); a part a
//! run did not deploy is carried over from the environment's previous release, so every release
//! describes the whole environment.
//!
//! Releases are kept in the status store ([`ReleaseStore`]: `releases.jsonl` beside the file
//! store's `state.jsonl`, or the DynamoDB table's `release#ENV` partition) and, by the stages,
//! as one JSON object per release in the artifact bucket ([`Release::object_key`]), from which a
//! lost store is rebuilt.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{Error, FileStore};

/// What one environment runs after a deploy (or a rollback) that passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Its id: the id of the run that made it.
    pub id: String,
    /// The environment.
    pub env: String,
    /// The commit it runs (for a rollback: the commit of the release it went back to).
    pub commit: String,
    /// When it was recorded (its last part).
    #[serde(with = "crate::record::time_opt")]
    pub at: Option<SystemTime>,
    /// A rollback: the release it went back to, and whether it skipped the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackOf>,
    /// The artifact bucket the stacks' templates and the functions' zips are in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_bucket: Option<String>,
    /// Per stack (its name under `[deploy.stacks]`).
    #[serde(default)]
    pub stacks: BTreeMap<String, StackRelease>,
    /// Per function (its name under `[lambda.functions]`).
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionRelease>,
    /// The site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteRelease>,
}

/// What a rollback release went back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackOf {
    /// The release it restored.
    pub to: String,
    /// The release that ran before it.
    pub from: String,
    /// Made with `--emergency`, without an approval.
    #[serde(default)]
    pub emergency: bool,
}

/// One stack as a release left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRelease {
    /// The CloudFormation stack name.
    pub stack_name: String,
    /// Its region.
    pub region: String,
    /// The template's key in the artifact bucket.
    pub template_key: String,
    /// The template's URL, as a change set takes it.
    pub template_url: String,
    /// Hex SHA-256 of the template.
    pub template_sha256: String,
    /// The parameters sent.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    /// Capabilities sent.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Tags sent.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The components it serves.
    #[serde(default)]
    pub components: Vec<String>,
    /// Nested templates at the fixed keys its template reads (`artifact_mode = "fixed"`): key →
    /// hex SHA-256 of what this release put there. Every deploy overwrites them, so a rollback
    /// checks they still hold this release's content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fixed_templates: BTreeMap<String, String>,
    /// The run that deployed it.
    pub run_id: String,
}

/// A parameter value as a release keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameter {
    /// The value sent.
    Value(String),
    /// A `NoEcho` parameter: its value is not kept, the stack's current one is reused.
    UsePreviousValue,
}

/// One function's code as a release left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRelease {
    /// Its component.
    pub component: String,
    /// The stack (name under `[deploy.stacks]`) that holds it.
    pub stack: String,
    /// Logical ids from the stack down to the function (its name is found again through them).
    #[serde(default)]
    pub path: Vec<String>,
    /// The function's name in Lambda.
    pub function_name: String,
    /// The bucket of its zip.
    pub bucket: String,
    /// The zip's key.
    pub key: String,
    /// Lambda's `CodeSha256` of that zip.
    pub code_sha256: String,
    /// The run that deployed it.
    pub run_id: String,
}

/// The site as a release left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRelease {
    /// Its component.
    pub component: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix.
    pub prefix: String,
    /// The publisher's release id.
    pub release_id: String,
    /// Where that release's file list is kept in the bucket.
    pub manifest_key: String,
    /// The distribution to invalidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    /// The run that published it.
    pub run_id: String,
}

impl Release {
    /// The release's object key in the artifact bucket: `releases/ENV/ID.json`.
    pub fn object_key(&self) -> String {
        format!("{}{}.json", Release::prefix(&self.env), self.id)
    }

    /// The prefix of `env`'s release objects in the artifact bucket.
    pub fn prefix(env: &str) -> String {
        format!("releases/{env}/")
    }

    /// The release as JSON (its S3 object).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// One line: `ID  commit C  N stack(s), M function(s), site R`.
    pub fn line(&self) -> String {
        let at = self.at.map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default();
        let mut text = format!(
            "{}  {at}  commit {}  {} stack(s), {} function(s)",
            self.id,
            crate::prefix(&self.commit, 12),
            self.stacks.len(),
            self.functions.len()
        );
        if let Some(site) = &self.site {
            text.push_str(&format!(", site {}", site.release_id));
        }
        if let Some(rollback) = &self.rollback {
            let emergency = if rollback.emergency { ", emergency" } else { "" };
            text.push_str(&format!("  (rollback to {}{emergency})", rollback.to));
        }
        text
    }
}

/// Where releases are kept.
pub trait ReleaseStore: Send + Sync {
    /// Writes `release`, replacing the release of the same environment and id.
    fn put_release(&self, release: &Release) -> Result<(), Error>;

    /// The releases of `env`, oldest first.
    fn releases(&self, env: &str) -> Result<Vec<Release>, Error>;
}

/// Adds a run's part to its release of `env`: the run's release when it has one, else a new
/// one carrying over every part of the environment's latest release, with `part` applied;
/// written and returned.
pub fn contribute(
    store: &dyn ReleaseStore,
    env: &str,
    run_id: &str,
    commit: &str,
    part: impl FnOnce(&mut Release),
) -> Result<Release, Error> {
    crate::check_name("environment", env)?;
    let releases = store.releases(env)?;
    let mut release = match releases.iter().rev().find(|r| r.id == run_id) {
        Some(own) => own.clone(),
        None => {
            let mut next = releases.last().cloned().unwrap_or_else(|| Release {
                id: String::new(),
                env: env.into(),
                commit: String::new(),
                at: None,
                rollback: None,
                artifact_bucket: None,
                stacks: BTreeMap::new(),
                functions: BTreeMap::new(),
                site: None,
            });
            next.id = run_id.into();
            next.rollback = None;
            next
        }
    };
    release.commit = commit.into();
    release.at = Some(SystemTime::now());
    part(&mut release);
    store.put_release(&release)?;
    Ok(release)
}

impl<S: ReleaseStore + ?Sized> ReleaseStore for std::sync::Arc<S> {
    fn put_release(&self, release: &Release) -> Result<(), Error> {
        (**self).put_release(release)
    }
    fn releases(&self, env: &str) -> Result<Vec<Release>, Error> {
        (**self).releases(env)
    }
}

impl FileStore {
    /// The file releases are kept in, beside the store file.
    pub fn releases_path(&self) -> PathBuf {
        self.path().with_file_name("releases.jsonl")
    }
}

impl ReleaseStore for FileStore {
    fn put_release(&self, release: &Release) -> Result<(), Error> {
        crate::check_name("environment", &release.env)?;
        let path = self.releases_path();
        let io = |e| Error::io(&path, e);
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io)?;
        file.lock().map_err(io)?;
        // A torn last line (a crash mid-write) is cut before the next line is appended.
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
            file.set_len(keep as u64).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        let mut line = serde_json::to_vec(release)
            .map_err(|e| Error::corrupt(&path, "a release that cannot be written as JSON", e))?;
        line.push(b'\n');
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)
    }

    fn releases(&self, env: &str) -> Result<Vec<Release>, Error> {
        let path = self.releases_path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        file.lock_shared().map_err(|e| Error::io(&path, e))?;
        let mut order: Vec<String> = Vec::new();
        let mut latest: BTreeMap<String, Release> = BTreeMap::new();
        let mut reader = BufReader::new(&file);
        let mut buffer = Vec::new();
        let mut number = 0;
        loop {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer).map_err(|e| Error::io(&path, e))? == 0 {
                break;
            }
            number += 1;
            match serde_json::from_slice::<Release>(&buffer) {
                Ok(release) if release.env == env => {
                    if !latest.contains_key(&release.id) {
                        order.push(release.id.clone());
                    }
                    latest.insert(release.id.clone(), release);
                }
                Ok(_) => {}
                Err(_) if !buffer.ends_with(b"\n") => break,
                Err(e) => return Err(Error::corrupt(path, format!("line {number}"), e)),
            }
        }
        Ok(order.into_iter().filter_map(|id| latest.remove(&id)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_adds_its_part_to_the_last_release_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let first = contribute(&store, "dev", "r1", "c1", |r| {
            r.functions.insert(
                "api".into(),
                FunctionRelease {
                    component: "api".into(),
                    stack: "master".into(),
                    path: vec!["Api".into()],
                    function_name: "api-fn".into(),
                    bucket: "b".into(),
                    key: "lambda/api-1.zip".into(),
                    code_sha256: "sha1".into(),
                    run_id: "r1".into(),
                },
            );
        })
        .unwrap();
        contribute(&store, "dev", "r1", "c1", |r| r.artifact_bucket = Some("b".into())).unwrap();
        // Another environment's releases are its own.
        contribute(&store, "prod", "r1", "c1", |_| {}).unwrap();
        // A second run changes only the site: the function is carried over.
        let mut torn = OpenOptions::new().append(true).open(store.releases_path()).unwrap();
        torn.write_all(b"{\"id\":\"half").unwrap();
        let second = contribute(&store, "dev", "r2", "c2", |r| {
            r.site = Some(SiteRelease {
                component: "web".into(),
                bucket: "site".into(),
                prefix: String::new(),
                release_id: "r2".into(),
                manifest_key: ".publish/releases/r2.json".into(),
                distribution: None,
                run_id: "r2".into(),
            })
        })
        .unwrap();
        assert_eq!(second.functions, first.functions);
        let dev = store.releases("dev").unwrap();
        assert_eq!(dev.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r1", "r2"]);
        assert_eq!(dev[0].artifact_bucket.as_deref(), Some("b"), "the run's second part joined its release");
        assert_eq!(dev[1].commit, "c2");
        assert_eq!(store.releases("prod").unwrap().len(), 1);
        assert_eq!(dev[1].object_key(), "releases/dev/r2.json");
    }
}
