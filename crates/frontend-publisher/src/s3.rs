//! The I/O: reading the bucket, and applying a plan in the zero-downtime order.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, MetadataDirective, ObjectIdentifier};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_target::ErrorKind;
use aws_target::poll::{self, Backoff};
use base64::Engine;
use futures::StreamExt;

use crate::config::Headers;
use crate::local::{Body, Kind, LocalFile, Site};
use crate::plan::{Action, HeadInfo, MANIFEST_KEY, Plan, ReleaseManifest, RemoteObject, RemoteState};
use crate::{Error, Event, Summary};

/// The largest manifest read (a manifest of 10,000 paths and 10 releases is ~2 MB).
const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;
/// S3's limit of keys per `DeleteObjects`.
pub const DELETE_BATCH: usize = 1000;
/// Attempts of a throttled or failed (5xx) call, on top of the SDK's own retries.
const ATTEMPTS: u32 = 4;

/// How [`apply`] runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Uploads at once.
    pub parallelism: usize,
    /// Files above this many bytes go up in parts.
    pub multipart_threshold: u64,
    /// Delete more than `max_delete_share` of the bucket's objects anyway.
    pub force: bool,
    /// The share of objects a publish may delete without `force`.
    pub max_delete_share: f64,
    /// The distribution to invalidate.
    pub distribution: Option<String>,
    /// Wait at most this long for the invalidation.
    pub invalidation_wait: Option<Duration>,
    /// The first pause after `TooManyInvalidationsInProgress` (doubled each time, 6 attempts).
    pub invalidation_backoff: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 16,
            multipart_threshold: 16 * 1024 * 1024,
            force: false,
            max_delete_share: 0.5,
            distribution: None,
            invalidation_wait: None,
            invalidation_backoff: Duration::from_secs(5),
        }
    }
}

fn key(prefix: &str, path: &str) -> String {
    format!("{prefix}{path}")
}

pub(crate) fn s3_error<E, R>(op: &'static str, bucket: &str, key: &str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: Debug + Send + Sync + 'static,
{
    let kind = ErrorKind::of(&error);
    let code = match &error {
        SdkError::ServiceError(e) => e.err().code().unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    if code == "NoSuchBucket" {
        return Error::NoBucket { bucket: bucket.to_owned() };
    }
    Error::S3 { op, object: format!("s3://{bucket}/{key}"), kind, source: Box::new(error) }
}

/// The pauses between the attempts of a throttled or failed call: 400 ms, doubled each time.
const RETRY_BACKOFF: Backoff = Backoff { first: Duration::from_millis(400), max: Duration::from_secs(60), factor: 2 };

/// Calls again, with a growing pause, while AWS throttles or fails (5xx).
async fn retry<T, E, R, Fut>(
    what: &str,
    on_event: &(dyn Fn(Event<'_>) + Sync),
    mut call: impl FnMut() -> Fut,
) -> Result<T, SdkError<E, R>>
where
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug + 'static,
{
    let transient = |error: &SdkError<E, R>, attempt| {
        let kind = ErrorKind::of(error);
        let again = matches!(kind, ErrorKind::Throttled | ErrorKind::ServiceError);
        if again {
            on_event(Event::Retrying { what, attempt, kind });
        }
        again
    };
    poll::retry(RETRY_BACKOFF, ATTEMPTS, tokio::time::sleep, transient, async || call().await).await
}

fn headers_of(cache_control: Option<&str>, content_type: Option<&str>, content_encoding: Option<&str>) -> Headers {
    Headers {
        cache_control: cache_control.unwrap_or_default().to_owned(),
        content_type: content_type.unwrap_or_default().to_owned(),
        content_encoding: content_encoding.filter(|e| !e.is_empty()).map(str::to_owned),
    }
}

/// Reads the bucket under the prefix: the listing (paginated), the release manifest, and a
/// `HeadObject` for each site path the manifest cannot vouch for.
pub async fn read_remote(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    site: &Site,
    parallelism: usize,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<RemoteState, Error> {
    let mut remote = RemoteState::default();
    let manifest_key = key(prefix, MANIFEST_KEY);
    let mut manifest_listed = false;
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("ListObjectsV2", bucket, prefix, e))?;
        for object in page.contents() {
            let Some(full) = object.key() else { continue };
            if full == manifest_key {
                manifest_listed = true;
                continue;
            }
            // The release lists and copies kept for rollbacks (crate::release) are no site files.
            if full.starts_with(&key(prefix, crate::release::KEPT_PREFIX)) {
                continue;
            }
            let Some(path) = full.strip_prefix(prefix) else { continue };
            remote.objects.insert(
                path.to_owned(),
                RemoteObject {
                    etag: object.e_tag().unwrap_or_default().trim_matches('"').to_owned(),
                    size: object.size().unwrap_or_default().max(0) as u64,
                },
            );
        }
    }
    if manifest_listed {
        let out = retry("GetObject", on_event, || s3.get_object().bucket(bucket).key(&manifest_key).send())
            .await
            .map_err(|e| s3_error("GetObject", bucket, &manifest_key, e))?;
        if out.content_length().unwrap_or_default() as usize > MAX_MANIFEST_BYTES {
            return Err(Error::ManifestTooLarge {
                object: format!("s3://{bucket}/{manifest_key}"),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let bytes = out.body.collect().await.map_err(|e| Error::S3 {
            op: "GetObject",
            object: format!("s3://{bucket}/{manifest_key}"),
            kind: ErrorKind::Unreachable,
            source: Box::new(e),
        })?;
        let manifest: ReleaseManifest = serde_json::from_slice(&bytes.into_bytes())
            .map_err(|source| Error::BadManifest { object: format!("s3://{bucket}/{manifest_key}"), source })?;
        remote.manifest = Some(manifest);
    }
    let wanted = remote.needs_head(site);
    let heads: Vec<Result<(String, HeadInfo), Error>> = futures::stream::iter(wanted)
        .map(|path| async move {
            let object = key(prefix, &path);
            let out = retry("HeadObject", on_event, || s3.head_object().bucket(bucket).key(&object).send())
                .await
                .map_err(|e| s3_error("HeadObject", bucket, &object, e))?;
            let info = HeadInfo {
                headers: headers_of(out.cache_control(), out.content_type(), out.content_encoding()),
                sha256: out.metadata().and_then(|m| m.get("sha256")).cloned(),
            };
            Ok((path, info))
        })
        .buffer_unordered(parallelism.max(1))
        .collect()
        .await;
    for head in heads {
        let (path, info) = head?;
        remote.heads.insert(path, info);
    }
    Ok(remote)
}

/// Percent-encodes a key for `CopySource`.
fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn md5_base64(hex_md5: &str) -> String {
    let bytes: Vec<u8> =
        (0..hex_md5.len() / 2).filter_map(|i| u8::from_str_radix(&hex_md5[2 * i..2 * i + 2], 16).ok()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn read_part(path: &std::path::Path, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
    let mut file = pipeline_config::fs::open_regular(path).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
    let mut buffer = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut buffer).map_err(|e| Error::io(path, e))?;
    Ok(buffer)
}

fn body_bytes(file: &LocalFile) -> Result<Vec<u8>, Error> {
    match &file.body {
        Body::Bytes(bytes) => Ok(bytes.clone()),
        Body::File(path) => read_part(path, 0, file.size),
    }
}

/// Puts one file in one request; its new ETag.
async fn put_whole(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    object: &str,
    file: &LocalFile,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<String, Error> {
    let h = &file.headers;
    let bytes = body_bytes(file)?;
    let out = retry("PutObject", on_event, || {
        s3.put_object()
            .bucket(bucket)
            .key(object)
            .body(ByteStream::from(bytes.clone()))
            .content_md5(md5_base64(&file.md5))
            .cache_control(&h.cache_control)
            .content_type(&h.content_type)
            .set_content_encoding(h.content_encoding.clone())
            .metadata("sha256", &file.sha256)
            .send()
    })
    .await
    .map_err(|e| s3_error("PutObject", bucket, object, e))?;
    Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
}

/// Puts one file (in parts above the threshold); its new ETag.
async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    object: &str,
    file: &LocalFile,
    threshold: u64,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<String, Error> {
    if file.size <= threshold || matches!(file.body, Body::Bytes(_)) {
        return put_whole(s3, bucket, object, file, on_event).await;
    }
    let h = &file.headers;
    let Body::File(path) = &file.body else { unreachable!("bytes are put whole") };
    let created = retry("CreateMultipartUpload", on_event, || {
        s3.create_multipart_upload()
            .bucket(bucket)
            .key(object)
            .cache_control(&h.cache_control)
            .content_type(&h.content_type)
            .set_content_encoding(h.content_encoding.clone())
            .metadata("sha256", &file.sha256)
            .send()
    })
    .await
    .map_err(|e| s3_error("CreateMultipartUpload", bucket, object, e))?;
    let upload_id = created.upload_id().unwrap_or_default().to_owned();
    let part_size = (threshold / 2).max(5 * 1024 * 1024);
    let parts = async {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < file.size {
            let len = part_size.min(file.size - offset);
            let bytes = read_part(path, offset, len)?;
            let out = retry("UploadPart", on_event, || {
                s3.upload_part()
                    .bucket(bucket)
                    .key(object)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(ByteStream::from(bytes.clone()))
                    .send()
            })
            .await
            .map_err(|e| s3_error("UploadPart", bucket, object, e))?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build());
            offset += len;
            number += 1;
        }
        let out = retry("CompleteMultipartUpload", on_event, || {
            s3.complete_multipart_upload()
                .bucket(bucket)
                .key(object)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts.clone())).build())
                .send()
        })
        .await
        .map_err(|e| s3_error("CompleteMultipartUpload", bucket, object, e))?;
        Ok::<_, Error>(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
    }
    .await;
    if parts.is_err() {
        // Parts left behind are billed until aborted; the error that matters is the upload's.
        let _ = s3.abort_multipart_upload().bucket(bucket).key(object).upload_id(&upload_id).send().await;
    }
    parts
}

/// Changes an object's headers without uploading it: `CopyObject` onto itself with
/// `MetadataDirective: REPLACE`; its new ETag.
async fn fix_headers(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    object: &str,
    file: &LocalFile,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<String, Error> {
    copy_object(s3, bucket, object, object, &file.headers, &file.sha256, on_event).await
}

/// Copies `from` to `object` in the bucket with `headers` and the `sha256` metadata (a
/// metadata-only copy when both are one key); the new ETag.
pub(crate) async fn copy_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    from: &str,
    object: &str,
    h: &crate::Headers,
    sha256: &str,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<String, Error> {
    let out = retry("CopyObject", on_event, || {
        s3.copy_object()
            .bucket(bucket)
            .key(object)
            .copy_source(format!("{}/{}", encode_key(bucket), encode_key(from)))
            .metadata_directive(MetadataDirective::Replace)
            .cache_control(&h.cache_control)
            .content_type(&h.content_type)
            .set_content_encoding(h.content_encoding.clone())
            .metadata("sha256", sha256)
            .send()
    })
    .await
    .map_err(|e| s3_error("CopyObject", bucket, object, e))?;
    Ok(out.copy_object_result().and_then(|r| r.e_tag()).unwrap_or_default().trim_matches('"').to_owned())
}

fn check_cancel(cancel: Option<&AtomicBool>) -> Result<(), Error> {
    if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) { Err(Error::Cancelled) } else { Ok(()) }
}

/// Applies a plan: new and changed assets (in parallel), then the runtime config, then the
/// HTML; then the release manifest; then the invalidation; then the deletes, in batches of
/// 1,000, of objects no retained release references. A failure stops before the next phase,
/// so the HTML that is live never references an object that is not there.
pub async fn apply(
    s3: &aws_sdk_s3::Client,
    cloudfront: Option<&aws_sdk_cloudfront::Client>,
    mut plan: Plan,
    options: &ApplyOptions,
    cancel: Option<&AtomicBool>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Summary, Error> {
    let deletes = plan.count(Action::Delete);
    if deletes > 0 && plan.delete_share() > options.max_delete_share && !options.force {
        return Err(Error::DeleteRefused { deletes, objects: plan.remote_objects, share: options.max_delete_share });
    }
    let bucket = plan.bucket.clone();
    let prefix = plan.prefix.clone();
    let etags: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let mut bytes_uploaded = 0;
    for phase in [Kind::Asset, Kind::RuntimeConfig, Kind::Html] {
        check_cancel(cancel)?;
        bytes_uploaded += upload_phase(s3, &plan, phase, &etags, options, cancel, on_event).await?;
    }
    // The release is live. Record it, with the ETags S3 gave.
    let etags = etags.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(release) = plan.manifest.releases.last_mut() {
        for (path, etag) in etags {
            if let Some(record) = release.files.get_mut(&path) {
                record.etag = etag;
            }
        }
    }
    let manifest_key = key(&prefix, MANIFEST_KEY);
    let manifest = serde_json::to_vec(&plan.manifest).unwrap_or_default();
    retry("PutObject", on_event, || {
        s3.put_object()
            .bucket(&bucket)
            .key(&manifest_key)
            .body(ByteStream::from(manifest.clone()))
            .content_type("application/json")
            .cache_control(crate::config::NO_CACHE)
            .send()
    })
    .await
    .map_err(|e| s3_error("PutObject", &bucket, &manifest_key, e))?;
    on_event(Event::ManifestWritten);

    let invalidation = match (cloudfront, &options.distribution, plan.invalidation.is_empty()) {
        (Some(cloudfront), Some(distribution), false) => Some(
            crate::invalidate::invalidate(
                cloudfront,
                distribution,
                &plan.release_id,
                &plan.invalidation,
                options.invalidation_backoff,
                options.invalidation_wait,
                on_event,
            )
            .await?,
        ),
        _ => None,
    };

    check_cancel(cancel)?;
    let doomed: Vec<String> = plan.with(Action::Delete).map(|i| key(&prefix, &i.path)).collect();
    delete_objects(s3, &bucket, &prefix, &doomed, on_event).await?;
    Ok(Summary {
        bucket,
        prefix,
        release: plan.release_id.clone(),
        uploaded: plan.count(Action::Upload),
        header_fixes: plan.count(Action::FixHeaders),
        unchanged: plan.count(Action::Unchanged),
        kept: plan.count(Action::Keep),
        deleted: deletes,
        bytes_uploaded,
        invalidation,
        dry_run: false,
        skipped: None,
    })
}

/// Uploads (or fixes the headers of) the plan's files of one kind, `options.parallelism` at a
/// time, keeping each object's ETag; the bytes uploaded.
async fn upload_phase(
    s3: &aws_sdk_s3::Client,
    plan: &Plan,
    phase: Kind,
    etags: &Mutex<BTreeMap<String, String>>,
    options: &ApplyOptions,
    cancel: Option<&AtomicBool>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<u64, Error> {
    let work: Vec<(&str, Action, &LocalFile)> = plan
        .items
        .iter()
        .filter(|i| i.kind == Some(phase) && matches!(i.action, Action::Upload | Action::FixHeaders))
        .filter_map(|i| plan.files.get(&i.path).map(|f| (i.path.as_str(), i.action, f)))
        .collect();
    let bytes = work.iter().filter(|(_, a, _)| *a == Action::Upload).map(|(_, _, f)| f.size).sum::<u64>();
    let bucket = &plan.bucket;
    let results: Vec<Result<(), Error>> = futures::stream::iter(work)
        .map(|(path, action, file)| {
            let object = key(&plan.prefix, path);
            async move {
                check_cancel(cancel)?;
                let etag = if action == Action::Upload {
                    let etag = upload(s3, bucket, &object, file, options.multipart_threshold, on_event).await?;
                    on_event(Event::Uploaded { path, bytes: file.size });
                    etag
                } else {
                    let etag = fix_headers(s3, bucket, &object, file, on_event).await?;
                    on_event(Event::HeadersFixed { path });
                    etag
                };
                etags.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_owned(), etag);
                Ok(())
            }
        })
        .buffer_unordered(options.parallelism.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
    Ok(bytes)
}

/// Deletes `keys` in batches of [`DELETE_BATCH`]; the first object S3 could not delete fails it.
async fn delete_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    keys: &[String],
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<(), Error> {
    for batch in keys.chunks(DELETE_BATCH) {
        let objects: Vec<ObjectIdentifier> =
            batch.iter().filter_map(|k| ObjectIdentifier::builder().key(k).build().ok()).collect();
        let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| Error::S3 {
            op: "DeleteObjects",
            object: format!("s3://{bucket}/{prefix}"),
            kind: ErrorKind::Other,
            source: Box::new(e),
        })?;
        let out = retry("DeleteObjects", on_event, || s3.delete_objects().bucket(bucket).delete(delete.clone()).send())
            .await
            .map_err(|e| s3_error("DeleteObjects", bucket, prefix, e))?;
        if let Some(first) = out.errors().first() {
            return Err(Error::DeleteFailed {
                object: format!("s3://{bucket}/{}", first.key().unwrap_or_default()),
                code: first.code().unwrap_or_default().to_owned(),
                failed: out.errors().len(),
            });
        }
        on_event(Event::Deleted { count: batch.len() });
    }
    Ok(())
}
