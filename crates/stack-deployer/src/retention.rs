//! Artifacts kept for rollback: after a release is recorded, every template and zip the last
//! `keep_releases` releases of any environment sharing the artifact bucket need (their stacks'
//! templates, the nested templates and zips those templates name, their functions' zips) is
//! tagged `pipeline-retention=release`, and what only older releases needed is tagged
//! `pipeline-retention=expirable`. The artifact bucket's lifecycle rule expires objects by that
//! tag only (README, "Artifacts kept for rollback"), so a retained release's artifacts never
//! expire, whatever their age.
//!
//! Safe by default: only keys the deployer names by their content (`[PREFIX/]KIND/STEM-HASH.EXT`,
//! as [`crate::plan()`] and the release recorder write them) are ever tagged; an object never
//! tagged (a fixed key, an upload of a deploy that failed, anything else in the bucket) never
//! expires by the rule. An object a newer release needs again is tagged back to `release`.
//!
//! Which releases count is pure ([`split`]); reading templates and tagging is the I/O ([`retain`]).

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::types::{Tag, Tagging};
use run_state::Release;

use crate::Error;
use crate::apply::aws;

/// The tag the lifecycle rule filters on.
pub const TAG_KEY: &str = "pipeline-retention";
/// Needed by one of the last `keep_releases` releases of an environment: never expires.
pub const KEPT: &str = "release";
/// Needed only by releases older than that: the lifecycle rule may expire it.
pub const EXPIRABLE: &str = "expirable";

/// How many releases per environment keep their artifacts when `[deploy] keep_releases` is unset.
pub const DEFAULT_KEEP_RELEASES: usize = 5;
/// The most `keep_releases` takes.
pub const MAX_KEEP_RELEASES: usize = 100;

/// The most templates one pass reads (each at most [`MAX_TEMPLATE_BYTES`]).
const MAX_TEMPLATES: usize = 2_000;
/// A template larger than CloudFormation's 1 MB limit is not one of ours.
const MAX_TEMPLATE_BYTES: i64 = 1024 * 1024;

/// The releases whose artifacts are kept and those whose artifacts may expire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split<'a> {
    /// The newest `keep` releases of each environment.
    pub kept: Vec<&'a Release>,
    /// The `keep` releases of each environment before those: what they alone need is marked
    /// expirable (a release further back was marked by an earlier pass; `keep` passes see each).
    pub dropped: Vec<&'a Release>,
}

/// Splits each environment's releases (oldest first, as the store lists them) in the artifact
/// bucket `bucket` into the kept and the dropped. Pure.
pub fn split<'a>(releases: &'a BTreeMap<String, Vec<Release>>, bucket: &str, keep: usize) -> Split<'a> {
    let mut split = Split::default();
    for list in releases.values() {
        let in_bucket: Vec<&Release> =
            list.iter().filter(|r| r.artifact_bucket.as_deref().is_none_or(|b| b == bucket)).collect();
        let newest_first = in_bucket.iter().rev();
        split.kept.extend(newest_first.clone().take(keep).copied());
        split.dropped.extend(newest_first.skip(keep).take(keep).copied());
    }
    split
}

/// What a retention pass did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Retention {
    /// `keep_releases`.
    pub keep_releases: usize,
    /// The releases kept, as `ENV/ID`.
    pub kept_releases: Vec<String>,
    /// Artifacts tagged (or found tagged) `release`.
    pub kept: BTreeSet<String>,
    /// Artifacts tagged (or found tagged) `expirable`.
    pub expirable: BTreeSet<String>,
    /// Artifacts a kept release names that are not in the bucket (a rollback to it is refused).
    pub missing: BTreeSet<String>,
    /// Tags written now.
    pub tagged: usize,
}

impl Retention {
    /// One line for the deploy's summary.
    pub fn line(&self) -> String {
        let mut line = format!(
            "artifacts kept for the last {} release(s) per environment: {} kept, {} expirable ({} tag(s) written)",
            self.keep_releases,
            self.kept.len(),
            self.expirable.len(),
            self.tagged
        );
        if !self.missing.is_empty() {
            let missing: Vec<&str> = self.missing.iter().map(String::as_str).collect();
            line.push_str(&format!("; missing from the bucket: {}", missing.join(", ")));
        }
        line
    }
}

/// Whether `key` is one the deployer names by content: `[PREFIX/]KIND/STEM-HASH.EXT` with a
/// 16-digit hex hash, under `prefix`.
pub fn is_artifact_key(key: &str, prefix: &str) -> bool {
    let rest = if prefix.is_empty() { Some(key) } else { key.strip_prefix(prefix).and_then(|k| k.strip_prefix('/')) };
    let Some((kind, file)) = rest.and_then(|r| r.split_once('/')) else { return false };
    let Some((stem_hash, ext)) = file.rsplit_once('.') else { return false };
    let Some((stem, hash)) = stem_hash.rsplit_once('-') else { return false };
    ["templates", "lambda"].contains(&kind)
        && !stem.is_empty()
        && hash.len() == 16
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
        && ["json", "yaml", "yml", "template", "zip"].contains(&ext)
}

/// The artifact keys a template's text names (nested `TemplateURL`s, code `S3Key`s), by their
/// content-addressed shape.
pub fn named_keys(body: &str, prefix: &str) -> BTreeSet<String> {
    body.split(|c: char| !(c.is_ascii_alphanumeric() || "-_./".contains(c)))
        .map(|token| token.find("amazonaws.com/").map_or(token, |at| &token[at + "amazonaws.com/".len()..]))
        .map(|token| token.trim_start_matches('/'))
        .filter(|token| is_artifact_key(token, prefix))
        .map(str::to_string)
        .collect()
}

/// The keys `releases` name directly: their stacks' templates and their functions' zips (in
/// `bucket`), those of the deployer's shape.
fn direct_keys(releases: &[&Release], bucket: &str, prefix: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for release in releases {
        keys.extend(release.stacks.values().map(|s| s.template_key.clone()));
        keys.extend(release.functions.values().filter(|f| f.bucket == bucket).map(|f| f.key.clone()));
    }
    keys.retain(|k| is_artifact_key(k, prefix));
    keys
}

/// Reads templates from the bucket (each once) to follow what they name.
struct Reader<'a> {
    s3: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    prefix: &'a str,
    named: BTreeMap<String, Option<BTreeSet<String>>>,
}

impl Reader<'_> {
    /// `keys` and every artifact the templates among them name, transitively; the keys not in
    /// the bucket are returned apart.
    async fn closure(&mut self, keys: BTreeSet<String>) -> Result<(BTreeSet<String>, BTreeSet<String>), Error> {
        let (mut found, mut missing) = (BTreeSet::new(), BTreeSet::new());
        let mut queue: Vec<String> = keys.into_iter().collect();
        while let Some(key) = queue.pop() {
            if found.contains(&key) || missing.contains(&key) {
                continue;
            }
            match self.named(&key).await? {
                Some(named) => {
                    queue.extend(named.iter().cloned());
                    found.insert(key);
                }
                None => {
                    missing.insert(key);
                }
            }
        }
        Ok((found, missing))
    }

    /// What one object names (nothing for a zip); `None` when it is not in the bucket.
    async fn named(&mut self, key: &str) -> Result<Option<BTreeSet<String>>, Error> {
        if let Some(named) = self.named.get(key) {
            return Ok(named.clone());
        }
        let named = if key.ends_with(".zip") {
            match self.s3.head_object().bucket(self.bucket).key(key).send().await {
                Ok(_) => Some(BTreeSet::new()),
                Err(e) if aws_target::ErrorKind::of(&e) == aws_target::ErrorKind::NotFound => None,
                Err(e) => return Err(aws("HeadObject", key, e)),
            }
        } else {
            if self.named.len() >= MAX_TEMPLATES {
                return Err(Error::RetentionTooLarge { bucket: self.bucket.to_string(), limit: MAX_TEMPLATES });
            }
            match self.s3.get_object().bucket(self.bucket).key(key).send().await {
                Ok(object) if object.content_length().unwrap_or(0) > MAX_TEMPLATE_BYTES => Some(BTreeSet::new()),
                Ok(object) => {
                    let bytes = object.body.collect().await.map_err(|e| Error::Retention {
                        bucket: self.bucket.to_string(),
                        key: key.to_string(),
                        action: "read",
                        source: Box::new(e),
                    })?;
                    Some(named_keys(&String::from_utf8_lossy(&bytes.into_bytes()), self.prefix))
                }
                Err(e) if aws_target::ErrorKind::of(&e) == aws_target::ErrorKind::NotFound => None,
                Err(e) => return Err(aws("GetObject", key, e)),
            }
        };
        self.named.insert(key.to_string(), named.clone());
        Ok(named)
    }
}

/// The retention pass after a release of `env` is recorded (by a deploy or a rollback): the
/// releases of every environment of `config` whose artifacts share `env`'s bucket (same bucket
/// and account) read from `store`, then [`retain`] with `env.keep_releases`.
pub async fn retain_after_release(
    config: &pipeline_config::ConfigFile,
    env: &crate::Environment,
    store: &dyn run_state::release::ReleaseStore,
    s3: &aws_sdk_s3::Client,
) -> Result<Retention, Error> {
    let settings = crate::DeploySettings::from_config(config)?;
    let mut names: BTreeSet<String> = BTreeSet::from([env.name.clone()]);
    for name in settings.environments.keys() {
        let other = settings.environment(config, name)?;
        if other.artifact_bucket == env.artifact_bucket && other.account.account_id() == env.account.account_id() {
            names.insert(name.clone());
        }
    }
    let mut releases = BTreeMap::new();
    for name in names {
        releases.insert(name.clone(), store.releases(&name)?);
    }
    retain(s3, &env.artifact_bucket, &env.key_prefix, &releases, env.keep_releases).await
}

/// Tags the artifacts of the releases `releases` lists (every environment sharing `bucket`):
/// those the newest `keep` of each environment need `release`, those only the `keep` before them
/// need `expirable`. Each object's other tags are kept; a tag already right is not written again.
pub async fn retain(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    releases: &BTreeMap<String, Vec<Release>>,
    keep: usize,
) -> Result<Retention, Error> {
    let split = split(releases, bucket, keep);
    let mut reader = Reader { s3, bucket, prefix, named: BTreeMap::new() };
    let (kept, missing) = reader.closure(direct_keys(&split.kept, bucket, prefix)).await?;
    let (dropped, _) = reader.closure(direct_keys(&split.dropped, bucket, prefix)).await?;
    let expirable: BTreeSet<String> = dropped.difference(&kept).cloned().collect();
    let mut tagged = 0;
    for (keys, value) in [(&kept, KEPT), (&expirable, EXPIRABLE)] {
        for key in keys {
            if set_tag(s3, bucket, key, value).await? {
                tagged += 1;
            }
        }
    }
    Ok(Retention {
        keep_releases: keep,
        kept_releases: split.kept.iter().map(|r| format!("{}/{}", r.env, r.id)).collect(),
        kept,
        expirable,
        missing,
        tagged,
    })
}

/// Sets [`TAG_KEY`] of one object to `value`, keeping its other tags; whether it wrote.
async fn set_tag(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, value: &str) -> Result<bool, Error> {
    let current =
        s3.get_object_tagging().bucket(bucket).key(key).send().await.map_err(|e| aws("GetObjectTagging", key, e))?;
    if current.tag_set().iter().any(|t| t.key() == TAG_KEY && t.value() == value) {
        return Ok(false);
    }
    let mut tags: Vec<Tag> = current.tag_set().iter().filter(|t| t.key() != TAG_KEY).cloned().collect();
    let built = |e: aws_smithy_types::error::operation::BuildError| Error::Retention {
        bucket: bucket.to_string(),
        key: key.to_string(),
        action: "tag",
        source: Box::new(e),
    };
    tags.push(Tag::builder().key(TAG_KEY).value(value).build().map_err(built)?);
    let tagging = Tagging::builder().set_tag_set(Some(tags)).build().map_err(built)?;
    s3.put_object_tagging()
        .bucket(bucket)
        .key(key)
        .tagging(tagging)
        .send()
        .await
        .map_err(|e| aws("PutObjectTagging", key, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_content_addressed_keys_under_the_prefix_are_artifacts() {
        assert!(is_artifact_key("app/templates/master-0123456789abcdef.json", "app"));
        assert!(is_artifact_key("app/lambda/api-handler-0123456789abcdef.zip", "app"));
        assert!(is_artifact_key("templates/db-0123456789abcdef.yaml", ""));
        for key in [
            "other/templates/master-0123456789abcdef.json",
            "app/templates/master.json",
            "app/lambda/api-handler.zip",
            "app/releases/dev/run-1.json",
            "app/templates/master-0123456789abcdeg.json",
            "app/templates/-0123456789abcdef.json",
        ] {
            assert!(!is_artifact_key(key, "app"), "{key}");
        }
    }

    #[test]
    fn a_template_names_its_nested_templates_and_zips_by_url_and_key() {
        let body = r#"{"Resources":{"Db":{"Properties":{"TemplateURL":"https://b.s3.amazonaws.com/app/templates/db-0123456789abcdef.yaml"}},
            "Fn":{"Properties":{"Code":{"S3Bucket":"b","S3Key":"app/lambda/api-fedcba9876543210.zip"}}},
            "Fixed":{"Properties":{"Code":{"S3Key":"app/lambda/api.zip"}}}}}"#;
        assert_eq!(
            named_keys(body, "app"),
            BTreeSet::from([
                "app/templates/db-0123456789abcdef.yaml".to_string(),
                "app/lambda/api-fedcba9876543210.zip".to_string()
            ])
        );
    }

    fn release(env: &str, id: &str, bucket: Option<&str>) -> Release {
        Release {
            id: id.into(),
            env: env.into(),
            commit: "c".into(),
            at: None,
            rollback: None,
            artifact_bucket: bucket.map(str::to_string),
            stacks: BTreeMap::new(),
            functions: BTreeMap::new(),
            site: None,
        }
    }

    #[test]
    fn the_newest_releases_of_each_environment_are_kept_and_the_ones_before_dropped() {
        let dev: Vec<Release> = (1..=6).map(|i| release("dev", &format!("d{i}"), Some("b"))).collect();
        let mut prod: Vec<Release> = (1..=2).map(|i| release("prod", &format!("p{i}"), Some("b"))).collect();
        prod.push(release("prod", "elsewhere", Some("other")));
        let releases = BTreeMap::from([("dev".to_string(), dev), ("prod".to_string(), prod)]);
        let split = split(&releases, "b", 2);
        let ids = |list: &[&Release]| list.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&split.kept), ["d6", "d5", "p2", "p1"]);
        assert_eq!(ids(&split.dropped), ["d4", "d3"]);
    }
}
