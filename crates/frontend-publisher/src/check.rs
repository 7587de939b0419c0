//! The site check (`frontend-publisher check`, the pipeline's built-in DAST): what a visitor
//! and an attacker would see of the published bucket, as validate's findings.

use std::collections::BTreeSet;
use std::path::Path;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use pipeline_config::ConfigFile;
use validate::{Finding, Node, Pos, Severity};

use crate::Error;
use crate::config::{PublishConfig, ValueSource};
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
    let mut findings = check_root_and_assets(s3, bucket, config).await?;
    findings.extend(check_listing(s3, bucket, &config.prefix).await?);
    findings.extend(check_public_access(s3, bucket).await?);
    if let Some(runtime) = &config.runtime_config {
        let scanner = validate::secrets::SecretScanner::default();
        for file in &runtime.files {
            let key = format!("{}{file}", config.prefix);
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

/// The root document, and every asset it references: present, with the configured
/// Content-Type and Cache-Control.
async fn check_root_and_assets(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    config: &PublishConfig,
) -> Result<Vec<Finding>, Error> {
    let prefix = config.prefix.as_str();
    let root_key = format!("{prefix}{}", config.root_document);
    let Some(html) = get_text(s3, bucket, &root_key).await? else {
        let message = "the root document is not published; publish the site".into();
        return Ok(vec![finding(bucket, &root_key, NO_ROOT, Severity::Error, message)]);
    };
    let mut findings = Vec::new();
    let html = String::from_utf8_lossy(&html);
    for path in references(&config.root_document, &html) {
        let key = format!("{prefix}{path}");
        let out = match s3.head_object().bucket(bucket).key(&key).send().await {
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
    Ok(findings)
}

/// Every object under the prefix: no source map, dotfile or `.env*` published.
async fn check_listing(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Result<Vec<Finding>, Error> {
    let mut findings = Vec::new();
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
    Ok(findings)
}

/// The bucket blocks all public access (all four settings).
async fn check_public_access(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Option<Finding>, Error> {
    let message = match s3.get_public_access_block().bucket(bucket).send().await {
        Ok(out) => {
            let c = out.public_access_block_configuration();
            let all = c.is_some_and(|c| {
                c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
            });
            if all {
                return Ok(None);
            }
            "the bucket does not block all public access; turn on all four Block Public Access settings and serve it through CloudFront"
        }
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("NoSuchPublicAccessBlockConfiguration") => {
            "the bucket has no Block Public Access configuration; turn on all four settings and serve it through CloudFront"
        }
        Err(e) => return Err(s3_error("GetPublicAccessBlock", bucket, "", e)),
    };
    Ok(Some(finding(bucket, "", PUBLIC_BUCKET, Severity::Error, message.into())))
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

/// Another writer of the site's bucket: a stack's custom resource or function given the bucket.
pub const SECOND_WRITER: &str = "P008";

/// The most read of one template while looking for other writers.
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// `[deploy.stacks.NAME] template`, the only part of `[deploy]` (stack-deployer's) read here.
#[derive(Debug, Default, serde::Deserialize)]
struct DeployStacks {
    #[serde(default)]
    stacks: std::collections::BTreeMap<String, StackTemplate>,
}

#[derive(Debug, serde::Deserialize)]
struct StackTemplate {
    template: String,
}

/// The other writers of the site's bucket, from the templates (pure apart from reading them):
/// the bucket named by a stack output (`bucket = { output = "master.SiteBucketName" }`) is
/// followed through the stack's template and its nested stacks (`!GetAtt Nested.Outputs.X`,
/// by local path or by the S3 URL's key whose tail is a repository file) to the
/// `AWS::S3::Bucket` it is; every custom resource or function of that template given the
/// bucket (`!Ref`, `!GetAtt`, `!Sub`) is a warning naming the stack, the template's line and
/// the resource: its uploads and the publish would overwrite each other. A chain that cannot be
/// followed (a literal bucket, an output of another form) finds nothing.
pub fn second_writers(root: &Path, config: &ConfigFile, publish: &PublishConfig) -> Vec<Finding> {
    let ValueSource::Output { stack, output } = &publish.bucket else { return Vec::new() };
    let Ok(deploy) = config.section::<DeployStacks>("deploy") else { return Vec::new() };
    let Some(template) = deploy.stacks.get(stack) else { return Vec::new() };
    let mut path = template.template.clone();
    let mut output = output.clone();
    let mut logical: Vec<String> = Vec::new();
    for _ in 0..8 {
        let Some(root_node) = read_template(root, &path) else { return Vec::new() };
        let value = root_node.get("Outputs").and_then(|o| o.get(&output)).and_then(|o| o.get("Value"));
        let Some((function, argument)) = value.and_then(Node::intrinsic) else { return Vec::new() };
        let resources = root_node.get("Resources");
        let resource = |name: &str| resources.and_then(|r| r.get(name));
        let kind = |name: &str| resource(name).and_then(|r| r.get("Type")).and_then(Node::as_str).unwrap_or("");
        match function.name.as_str() {
            "Ref" => {
                let Some(bucket) = argument.as_str().filter(|b| kind(b) == "AWS::S3::Bucket") else {
                    return Vec::new();
                };
                return writers_of(&root_node, bucket, stack, &path, &logical);
            }
            "Fn::GetAtt" => {
                let (nested, attribute) = match (argument.as_str(), argument.items()) {
                    (Some(text), _) => text.split_once('.').map(|(n, a)| (n.to_owned(), a.to_owned())),
                    (None, [n, a]) => n.as_str().zip(a.as_str()).map(|(n, a)| (n.to_owned(), a.to_owned())),
                    _ => None,
                }
                .unwrap_or_default();
                let Some(next) = attribute.strip_prefix("Outputs.") else { return Vec::new() };
                if kind(&nested) != "AWS::CloudFormation::Stack" {
                    return Vec::new();
                }
                let url = resource(&nested).and_then(|r| r.get("Properties")).and_then(|p| p.get("TemplateURL"));
                let Some(child) = url.and_then(|u| nested_template(root, &path, u)) else { return Vec::new() };
                logical.push(nested);
                output = next.to_owned();
                path = child;
            }
            _ => return Vec::new(),
        }
    }
    Vec::new()
}

fn read_template(root: &Path, path: &str) -> Option<Node> {
    let bytes = pipeline_config::fs::read_regular(&root.join(path), MAX_TEMPLATE_BYTES).ok()?;
    validate::template::parse_bytes(&bytes, &validate::template::Limits::default()).ok()
}

/// The repository file a nested stack's `TemplateURL` names: a local path (relative to the
/// parent's folder), or an S3 URL whose key's longest tail is a file of the repository.
fn nested_template(root: &Path, parent: &str, url: &Node) -> Option<String> {
    let text = match (url.as_str(), url.intrinsic()) {
        (Some(text), _) => text.to_owned(),
        (None, Some((f, arg))) if f.name == "Fn::Sub" => {
            arg.as_str().or_else(|| arg.items().first().and_then(Node::as_str))?.to_owned()
        }
        (None, Some((f, arg))) if f.name == "Fn::Join" => {
            let parts = arg.items().get(1)?.items();
            parts.iter().map(|p| p.as_str().unwrap_or("${}")).collect()
        }
        _ => return None,
    };
    if !text.contains("://") {
        let dir = Path::new(parent).parent().unwrap_or(Path::new(""));
        let joined = dir.join(&text);
        let inside = joined.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        return inside.then(|| joined.to_string_lossy().into_owned());
    }
    // What follows the last substitution (the bucket's), else the host.
    let key = text.rsplit('}').next().unwrap_or(&text);
    let key = key.split_once("://").map_or(key, |(_, rest)| rest.split_once('/').map_or("", |(_, k)| k));
    let parts: Vec<&str> = key.split(['?', '#']).next()?.split('/').filter(|p| !p.is_empty()).collect();
    (0..parts.len())
        .map(|i| parts[i..].join("/"))
        .find(|candidate| !candidate.split('/').any(|p| p == "..") && root.join(candidate).is_file())
}

/// The custom resources and functions of a template whose properties name `bucket`.
fn writers_of(template: &Node, bucket: &str, stack: &str, path: &str, logical: &[String]) -> Vec<Finding> {
    let mut found = Vec::new();
    for (key, resource) in resource_entries(template) {
        let kind = resource.get("Type").and_then(Node::as_str).unwrap_or("");
        let what = if kind.starts_with("Custom::") || kind == "AWS::CloudFormation::CustomResource" {
            "custom resource"
        } else if kind == "AWS::Lambda::Function" || kind == "AWS::Serverless::Function" {
            "function"
        } else {
            continue;
        };
        if key.name == bucket || !resource.get("Properties").is_some_and(|p| names(p, bucket)) {
            continue;
        }
        let mut at = logical.to_vec();
        at.push(key.name.clone());
        found.push(Finding {
            path: path.to_owned(),
            pos: key.pos,
            rule: SECOND_WRITER.into(),
            severity: Severity::Warning,
            message: format!(
                "the site's bucket has a second writer: stack `{stack}`'s {what} {} ({kind}) is given `{bucket}`, so its uploads and the publish overwrite each other; let one of them write the site",
                at.join("/")
            ),
            check: None,
        });
    }
    found
}

fn resource_entries(template: &Node) -> &[(validate::Key, Node)] {
    template.get("Resources").map(Node::entries).unwrap_or_default()
}

/// Whether an expression names the resource `name` (`Ref`, `Fn::GetAtt`, `${name}` in `Fn::Sub`).
fn names(node: &Node, name: &str) -> bool {
    node.walk().any(|n| match n.intrinsic() {
        Some((f, arg)) if f.name == "Ref" => arg.as_str() == Some(name),
        Some((f, arg)) if f.name == "Fn::GetAtt" => {
            arg.as_str().is_some_and(|t| t.split('.').next() == Some(name))
                || arg.items().first().and_then(Node::as_str) == Some(name)
        }
        Some((f, arg)) if f.name == "Fn::Sub" => {
            let text = arg.as_str().or_else(|| arg.items().first().and_then(Node::as_str)).unwrap_or("");
            text.contains(&format!("${{{name}}}")) || text.contains(&format!("${{{name}."))
        }
        _ => false,
    })
}
