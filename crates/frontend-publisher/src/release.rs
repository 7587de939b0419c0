//! What a rollback needs of a published site, kept at publish time, and the restore itself.
//!
//! Hashed assets outlive the HTML that references them for the last `retain_releases`
//! releases (the manifest says which), but the HTML and the runtime config are overwritten in
//! place by every publish. So after a publish, [`keep_release`] keeps, under the bucket's
//! `.publish/kept/` (never listed as site files, never deleted by a publish):
//! - the release's file list (`releases/ID.json`: path, ETag, SHA-256, headers), and
//! - a copy of each file that is not immutable (`blobs/SHA256`, copied inside the bucket).
//!
//! [`plan_restore`] (reads only) and [`apply_restore`] put an earlier release back: each file
//! from where it is (the same object, or its kept copy), the objects that are no site file of
//! that release and are not immutable deleted, the publisher's manifest given a release
//! entry for the restore, and one invalidation. A file that is gone is an error naming it,
//! before anything is changed.

use std::collections::{BTreeMap, BTreeSet};

use run_state::release::SiteRelease;
use run_state::{RunDir, Store};

use crate::plan::{MANIFEST_KEY, ObjectRecord, Release as PublishedRelease, ReleaseManifest, is_immutable};
use crate::s3::s3_error;
use crate::{Error, Event, InvalidationSummary, PublishConfig, Summary};

/// Where the release lists and the kept copies live under the site's prefix.
pub const KEPT_PREFIX: &str = ".publish/kept/";

/// The key of release `id`'s file list.
pub fn release_list_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{KEPT_PREFIX}releases/{id}.json")
}

/// The key of the kept copy of a file by its SHA-256.
pub fn blob_key(prefix: &str, sha256: &str) -> String {
    format!("{prefix}{KEPT_PREFIX}blobs/{sha256}")
}

async fn get_json<T: serde::de::DeserializeOwned>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<T>, Error> {
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(error) if aws_target::ErrorKind::of(&error) == aws_target::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(s3_error("GetObject", bucket, key, error)),
    };
    let object = format!("s3://{bucket}/{key}");
    let bytes = out.body.collect().await.map_err(|e| Error::S3 {
        op: "GetObject",
        object: object.clone(),
        kind: aws_target::ErrorKind::Unreachable,
        source: Box::new(e),
    })?;
    serde_json::from_slice(&bytes.into_bytes()).map(Some).map_err(|source| Error::BadManifest { object, source })
}

async fn put_json(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, json: Vec<u8>) -> Result<(), Error> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .cache_control(crate::config::NO_CACHE)
        .body(json.into())
        .send()
        .await
        .map_err(|e| s3_error("PutObject", bucket, key, e))
        .map(drop)
}

/// The keys under the prefix with their ETags (the kept lists and copies included).
async fn list(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut objects = BTreeMap::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("ListObjectsV2", bucket, prefix, e))?;
        for object in page.contents() {
            if let Some(key) = object.key() {
                objects.insert(key.to_owned(), object.e_tag().unwrap_or_default().trim_matches('"').to_owned());
            }
        }
    }
    Ok(objects)
}

/// After a publish of `release_id`: keeps its file list and a copy of each file that is not
/// immutable (one not kept yet) under `.publish/kept/`. Returns the list's key.
pub async fn keep_release(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    release_id: &str,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<String, Error> {
    let manifest_key = format!("{prefix}{MANIFEST_KEY}");
    let manifest: ReleaseManifest = get_json(s3, bucket, &manifest_key).await?.unwrap_or_default();
    let release =
        manifest.releases.iter().rev().find(|r| r.id == release_id).cloned().ok_or_else(|| Error::ReleaseGone {
            what: format!("release {release_id} in s3://{bucket}/{manifest_key}"),
        })?;
    let existing = list(s3, bucket, &format!("{prefix}{KEPT_PREFIX}blobs/")).await?;
    for (path, record) in release.files.iter().filter(|(_, r)| !is_immutable(&r.headers)) {
        let blob = blob_key(prefix, &record.sha256);
        if !existing.contains_key(&blob) {
            let from = format!("{prefix}{path}");
            crate::s3::copy_object(s3, bucket, &from, &blob, &record.headers, &record.sha256, on_event).await?;
        }
    }
    let key = release_list_key(prefix, release_id);
    put_json(s3, bucket, &key, serde_json::to_vec(&release).unwrap_or_default()).await?;
    Ok(key)
}

/// The publish's part of the run's release of `environment` ([`run_state::release::contribute`]):
/// the site's release kept ([`keep_release`]), the record written to the store and, when the
/// release names its artifact bucket (the stacks' part), to `releases/ENV/RUN.json` there.
pub(crate) async fn record_site_release(
    store: &dyn Store,
    run: &RunDir,
    config: &PublishConfig,
    environment: &str,
    summary: &Summary,
    s3: &aws_sdk_s3::Client,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<(), Error> {
    let distribution = crate::resolve(config, run, environment)?.distribution;
    let manifest_key = keep_release(s3, &summary.bucket, &summary.prefix, &summary.release, on_event).await?;
    let site = SiteRelease {
        component: config.component.clone(),
        bucket: summary.bucket.clone(),
        prefix: summary.prefix.clone(),
        release_id: summary.release.clone(),
        manifest_key,
        distribution,
        run_id: run.run_id.clone(),
    };
    let commit = run.head()?;
    let release = run_state::release::contribute(store, environment, &run.run_id, &commit, |r| r.site = Some(site))?;
    if let Some(bucket) = &release.artifact_bucket {
        put_json(s3, bucket, &release.object_key(), release.to_json()).await?;
    }
    Ok(())
}

/// One file to put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreCopy {
    /// The site path.
    pub path: String,
    /// The key it is copied from (the object itself for a header fix, or its kept copy).
    pub from: String,
    /// The record of the release being restored.
    pub record: ObjectRecord,
}

/// What restoring a site release does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    /// The bucket.
    pub bucket: String,
    /// The prefix.
    pub prefix: String,
    /// The release restored.
    pub release: PublishedRelease,
    /// The id the restore is published under (the rollback's run).
    pub new_id: String,
    /// Files to copy, immutable ones first, HTML last.
    pub copies: Vec<RestoreCopy>,
    /// Site paths to delete: not in the release and not immutable.
    pub deletes: Vec<String>,
    /// Files already as the release has them.
    pub unchanged: usize,
    /// Invalidation paths.
    pub invalidation: Vec<String>,
    /// The distribution.
    pub distribution: Option<String>,
}

impl RestorePlan {
    /// One line.
    pub fn describe(&self) -> String {
        format!(
            "site s3://{}/{} back to release {}: {} file(s) restored, {} deleted, {} unchanged{}",
            self.bucket,
            self.prefix,
            self.release.id,
            self.copies.len(),
            self.deletes.len(),
            self.unchanged,
            if self.invalidation.is_empty() {
                String::new()
            } else {
                format!(", invalidation of {} path(s)", self.invalidation.len())
            }
        )
    }
}

/// Plans the restore of `site` (reads the bucket, changes nothing): a file of the release that is
/// neither where it was nor kept is [`Error::ReleaseGone`], naming it.
pub async fn plan_restore(
    s3: &aws_sdk_s3::Client,
    site: &SiteRelease,
    new_id: &str,
    root_document: &str,
) -> Result<RestorePlan, Error> {
    let (bucket, prefix) = (site.bucket.as_str(), site.prefix.as_str());
    let release: PublishedRelease = get_json(s3, bucket, &site.manifest_key)
        .await?
        .ok_or_else(|| Error::ReleaseGone { what: format!("s3://{bucket}/{} (its file list)", site.manifest_key) })?;
    let manifest: ReleaseManifest = get_json(s3, bucket, &format!("{prefix}{MANIFEST_KEY}")).await?.unwrap_or_default();
    let listing = list(s3, bucket, prefix).await?;
    restore_plan(site, release, &manifest, &listing, new_id, root_document)
}

/// The pure part of [`plan_restore`].
pub fn restore_plan(
    site: &SiteRelease,
    release: PublishedRelease,
    manifest: &ReleaseManifest,
    listing: &BTreeMap<String, String>,
    new_id: &str,
    root_document: &str,
) -> Result<RestorePlan, Error> {
    let prefix = site.prefix.as_str();
    let current = manifest.releases.last();
    let mut copies = Vec::new();
    let mut unchanged = 0;
    let mut gone = Vec::new();
    for (path, record) in &release.files {
        let key = format!("{prefix}{path}");
        let same_object = listing.get(&key).is_some_and(|etag| etag == &record.etag);
        let same_headers = current.and_then(|c| c.files.get(path)).is_some_and(|c| c.headers == record.headers);
        let from = if same_object && same_headers {
            unchanged += 1;
            continue;
        } else if same_object {
            key
        } else if listing.contains_key(&blob_key(prefix, &record.sha256)) {
            blob_key(prefix, &record.sha256)
        } else {
            gone.push(format!("s3://{}/{key}", site.bucket));
            continue;
        };
        copies.push(RestoreCopy { path: path.clone(), from, record: record.clone() });
    }
    if !gone.is_empty() {
        return Err(Error::ReleaseGone { what: gone.join(", ") });
    }
    let immutable_somewhere: BTreeSet<&str> = manifest
        .releases
        .iter()
        .flat_map(|r| r.files.iter())
        .filter(|(_, r)| is_immutable(&r.headers))
        .map(|(p, _)| p.as_str())
        .collect();
    let deletes: Vec<String> = listing
        .keys()
        .filter_map(|key| key.strip_prefix(prefix))
        .filter(|path| !path.starts_with(".publish/"))
        .filter(|path| !release.files.contains_key(*path) && !immutable_somewhere.contains(path))
        .map(str::to_owned)
        .collect();
    // Immutable files first, HTML last: the HTML that is live never names a file not there yet.
    copies.sort_by_key(|c| (!is_immutable(&c.record.headers), c.path.ends_with(".html"), c.path.clone()));
    let mut invalidation = BTreeSet::new();
    for path in copies.iter().filter(|c| !is_immutable(&c.record.headers)).map(|c| &c.path).chain(&deletes) {
        invalidation.insert(format!("/{path}"));
        if path == root_document {
            invalidation.insert("/".into());
        } else if let Some(folder) = path.strip_suffix(root_document).filter(|f| f.ends_with('/')) {
            invalidation.insert(format!("/{folder}"));
        }
    }
    Ok(RestorePlan {
        bucket: site.bucket.clone(),
        prefix: prefix.to_owned(),
        release,
        new_id: new_id.to_owned(),
        copies,
        deletes,
        unchanged,
        invalidation: crate::collapse_invalidation(
            invalidation.into_iter().collect(),
            crate::MAX_INVALIDATION_PATHS,
            crate::MAX_WILDCARDS,
        ),
        distribution: site.distribution.clone(),
    })
}

/// Applies a restore: the copies in order, the manifest given the restored files as release
/// `new_id` (and its list kept), the deletes, then one invalidation. Returns the site's part of
/// the rollback's release and the invalidation made.
pub async fn apply_restore(
    s3: &aws_sdk_s3::Client,
    cloudfront: Option<&aws_sdk_cloudfront::Client>,
    plan: &RestorePlan,
    site: &SiteRelease,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<(SiteRelease, Option<InvalidationSummary>), Error> {
    let (bucket, prefix) = (plan.bucket.as_str(), plan.prefix.as_str());
    let mut restored = PublishedRelease { id: plan.new_id.clone(), files: plan.release.files.clone() };
    for copy in &plan.copies {
        let to = format!("{prefix}{}", copy.path);
        let h = &copy.record.headers;
        let etag = crate::s3::copy_object(s3, bucket, &copy.from, &to, h, &copy.record.sha256, on_event).await?;
        if let Some(record) = restored.files.get_mut(&copy.path) {
            record.etag = etag;
        }
    }
    let manifest_key = format!("{prefix}{MANIFEST_KEY}");
    let mut manifest: ReleaseManifest = get_json(s3, bucket, &manifest_key).await?.unwrap_or_default();
    manifest.releases.retain(|r| r.id != plan.new_id);
    manifest.releases.push(restored.clone());
    put_json(s3, bucket, &manifest_key, serde_json::to_vec(&manifest).unwrap_or_default()).await?;
    let list_key = release_list_key(prefix, &plan.new_id);
    put_json(s3, bucket, &list_key, serde_json::to_vec(&restored).unwrap_or_default()).await?;
    for path in &plan.deletes {
        let key = format!("{prefix}{path}");
        s3.delete_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", bucket, &key, e))?;
    }
    let invalidation = match (cloudfront, &plan.distribution, plan.invalidation.is_empty()) {
        (Some(cloudfront), Some(distribution), false) => Some(
            crate::invalidate(
                cloudfront,
                distribution,
                &plan.new_id,
                &plan.invalidation,
                std::time::Duration::from_secs(5),
                None,
                on_event,
            )
            .await?,
        ),
        _ => None,
    };
    let part = SiteRelease {
        release_id: plan.new_id.clone(),
        manifest_key: list_key,
        run_id: plan.new_id.clone(),
        ..site.clone()
    };
    Ok((part, invalidation))
}
