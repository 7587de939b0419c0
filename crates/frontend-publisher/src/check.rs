//! The site check (`frontend-publisher check`, the pipeline's built-in DAST): what a visitor
//! and an attacker would see of the published bucket, as validate's findings.

use std::collections::BTreeSet;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use validate::{Finding, Pos, Severity};

use crate::Error;
use crate::config::PublishConfig;
use crate::plan::MANIFEST_KEY;
use crate::s3::s3_error;

/// The root document could not be fetched.
pub const NO_ROOT: &str = "P001";
/// A referenced asset is missing.
pub const MISSING_ASSET: &str = "P002";
/// A referenced asset has the wrong Content-Type.
pub const WRONG_TYPE: &str = "P003";
/// A referenced asset has the wrong Cache-Control.
pub const WRONG_CACHE: &str = "P004";
/// A source map is published.
pub const SOURCE_MAP: &str = "P005";
/// A dotfile or `.env*` is published.
pub const DOTFILE: &str = "P006";
/// The bucket does not block public access.
pub const PUBLIC_BUCKET: &str = "P007";

/// What to check.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions<'a> {
    /// The bucket.
    pub bucket: &'a str,
    /// The config: prefix, root document, expected headers, runtime config files.
    pub config: &'a PublishConfig,
}

fn finding(bucket: &str, key: &str, rule: &str, severity: Severity, message: String) -> Finding {
    Finding {
        path: format!("s3://{bucket}/{key}"),
        pos: Pos { line: 1, column: 1 },
        rule: rule.into(),
        severity,
        message,
        check: None,
    }
}

/// The site paths an HTML page references (`src=` and `href=` that stay on the site),
/// resolved against the page's folder.
pub fn references(page: &str, html: &str) -> BTreeSet<String> {
    let pattern = regex::Regex::new(r#"(?i)\b(?:src|href)\s*=\s*["']([^"'#?]+)"#).expect("a valid regex");
    let folder = page.rsplit_once('/').map(|(f, _)| f).unwrap_or("");
    let mut out = BTreeSet::new();
    for capture in pattern.captures_iter(html) {
        let target = capture[1].trim();
        if target.is_empty() || target.contains(':') || target.starts_with("//") {
            continue;
        }
        let joined = match target.strip_prefix('/') {
            Some(absolute) => absolute.to_owned(),
            None if folder.is_empty() => target.to_owned(),
            None => format!("{folder}/{target}"),
        };
        let mut parts: Vec<&str> = Vec::new();
        for part in joined.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        if !parts.is_empty() {
            out.insert(parts.join("/"));
        }
    }
    out
}

async fn get_text(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let bytes = out.body.collect().await.map_err(|e| Error::S3 {
                op: "GetObject",
                object: format!("s3://{bucket}/{key}"),
                kind: aws_target::ErrorKind::Unreachable,
                source: Box::new(e),
            })?;
            Ok(Some(bytes.into_bytes().to_vec()))
        }
        Err(e)
            if aws_target::ErrorKind::of(&e) == aws_target::ErrorKind::NotFound
                && e.as_service_error().is_none_or(|s| s.code() != Some("NoSuchBucket")) =>
        {
            Ok(None)
        }
        Err(e) => Err(s3_error("GetObject", bucket, key, e)),
    }
}

/// Checks the published site: the root document fetched from the bucket, every asset it
/// references present with the configured Content-Type and Cache-Control, no source map,
/// dotfile or `.env*` published, public access blocked on the bucket, and no secret in the
/// runtime config (validate's scanner). Findings sorted by path and rule.
pub async fn check_site(s3: &aws_sdk_s3::Client, options: CheckOptions<'_>) -> Result<Vec<Finding>, Error> {
    let CheckOptions { bucket, config } = options;
    let prefix = config.prefix.as_str();
    let mut findings = Vec::new();
    let root_key = format!("{prefix}{}", config.root_document);
    match get_text(s3, bucket, &root_key).await? {
        None => findings.push(finding(
            bucket,
            &root_key,
            NO_ROOT,
            Severity::Error,
            "the root document is not published; publish the site".into(),
        )),
        Some(html) => {
            let html = String::from_utf8_lossy(&html);
            for path in references(&config.root_document, &html) {
                let key = format!("{prefix}{path}");
                let head = s3.head_object().bucket(bucket).key(&key).send().await;
                let out = match head {
                    Ok(out) => out,
                    Err(e) if aws_target::ErrorKind::of(&e) == aws_target::ErrorKind::NotFound => {
                        findings.push(finding(
                            bucket,
                            &key,
                            MISSING_ASSET,
                            Severity::Error,
                            format!("{} references `{path}`, which is not published", config.root_document),
                        ));
                        continue;
                    }
                    Err(e) => return Err(s3_error("HeadObject", bucket, &key, e)),
                };
                let expected = config.headers(&path);
                let content_type = out.content_type().unwrap_or_default();
                if content_type != expected.content_type {
                    findings.push(finding(
                        bucket,
                        &key,
                        WRONG_TYPE,
                        Severity::Error,
                        format!(
                            "served as Content-Type `{content_type}`, expected `{}`; publish again to fix the headers",
                            expected.content_type
                        ),
                    ));
                }
                let cache = out.cache_control().unwrap_or_default();
                if cache != expected.cache_control {
                    findings.push(finding(
                        bucket,
                        &key,
                        WRONG_CACHE,
                        Severity::Warning,
                        format!(
                            "served with Cache-Control `{cache}`, expected `{}`; publish again to fix the headers",
                            expected.cache_control
                        ),
                    ));
                }
            }
        }
    }
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_error("ListObjectsV2", bucket, prefix, e))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let path = key.strip_prefix(prefix).unwrap_or(key);
            // The publisher's own bookkeeping: the release manifest and the kept releases.
            if path == MANIFEST_KEY || path.starts_with(crate::release::KEPT_PREFIX) {
                continue;
            }
            if path.ends_with(".map") {
                findings.push(finding(
                    bucket,
                    key,
                    SOURCE_MAP,
                    Severity::Error,
                    "a source map is published (it gives away the source); delete it and publish without it".into(),
                ));
            }
            if let Some(part) = path.split('/').find(|p| p.starts_with('.')) {
                let what = if part.starts_with(".env") { "an .env file" } else { "a dotfile" };
                findings.push(finding(
                    bucket,
                    key,
                    DOTFILE,
                    Severity::Error,
                    format!("{what} is published; delete it, and leave it out of dist"),
                ));
            }
        }
    }
    match s3.get_public_access_block().bucket(bucket).send().await {
        Ok(out) => {
            let c = out.public_access_block_configuration();
            let all = c.is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            });
            if !all {
                findings.push(finding(
                    bucket,
                    "",
                    PUBLIC_BUCKET,
                    Severity::Error,
                    "the bucket does not block all public access; turn on all four Block Public Access settings and serve it through CloudFront".into(),
                ));
            }
        }
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NoSuchPublicAccessBlockConfiguration") => {
            findings.push(finding(
                bucket,
                "",
                PUBLIC_BUCKET,
                Severity::Error,
                "the bucket has no Block Public Access configuration; turn on all four settings and serve it through CloudFront".into(),
            ));
        }
        Err(e) => return Err(s3_error("GetPublicAccessBlock", bucket, "", e)),
    }
    if let Some(runtime) = &config.runtime_config {
        let scanner = validate::secrets::SecretScanner::default();
        for file in &runtime.files {
            let key = format!("{prefix}{file}");
            if let Some(bytes) = get_text(s3, bucket, &key).await? {
                for mut found in scanner.scan(&key, &bytes) {
                    found.path = format!("s3://{bucket}/{key}");
                    findings.push(found);
                }
            }
        }
    }
    findings.sort();
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_stay_on_the_site_and_resolve_against_the_page() {
        let html = r##"<link href="assets/a.css"><script src="/assets/b.js?x=1"></script>
            <a href="https://example.com/x.js">x</a><img src="./img/../logo.png"><a href="#top">t</a>
            <script SRC='//cdn.example.com/c.js'></script>"##;
        let refs: Vec<String> = references("index.html", html).into_iter().collect();
        assert_eq!(refs, ["assets/a.css", "assets/b.js", "logo.png"]);
        let nested: Vec<String> = references("docs/index.html", r#"<img src="x.png">"#).into_iter().collect();
        assert_eq!(nested, ["docs/x.png"]);
    }
}
