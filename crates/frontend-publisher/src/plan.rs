//! Planning, pure: the site as built and the bucket as listed in, what to do out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::Headers;
use crate::local::{Kind, LocalFile, Site, Skipped};

/// The release manifest's key under the prefix. It lists, for the last releases, every
/// path with its ETag, SHA-256 and headers: the planner reads a key's headers from it
/// instead of a `HeadObject` whenever the listed ETag is the one it recorded.
pub const MANIFEST_KEY: &str = ".publish/releases.json";

/// The releases the bucket holds, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// Newest last.
    pub releases: Vec<Release>,
}

/// One publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Its id (the run id).
    pub id: String,
    /// Site path to the object as published.
    pub files: BTreeMap<String, ObjectRecord>,
}

/// An object as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Its ETag, without quotes.
    pub etag: String,
    /// SHA-256 of its body, hex.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Its headers.
    #[serde(flatten)]
    pub headers: Headers,
}

/// One object of the bucket as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// ETag without quotes.
    pub etag: String,
    /// Size.
    pub size: u64,
}

/// What a `HeadObject` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadInfo {
    /// The headers.
    pub headers: Headers,
    /// The `sha256` metadata, when set.
    pub sha256: Option<String>,
}

/// The bucket as read: the listing under the prefix (site paths), the manifest, and the
/// heads taken where the manifest could not say.
#[derive(Debug, Clone, Default)]
pub struct RemoteState {
    /// Site path to object (the manifest itself left out).
    pub objects: BTreeMap<String, RemoteObject>,
    /// The release manifest, when there is one.
    pub manifest: Option<ReleaseManifest>,
    /// Heads, by site path.
    pub heads: BTreeMap<String, HeadInfo>,
}

impl RemoteState {
    /// What the manifest's newest release recorded for `path`, when the listed object is
    /// still that object.
    pub fn recorded(&self, path: &str) -> Option<&ObjectRecord> {
        let object = self.objects.get(path)?;
        let record = self.manifest.as_ref()?.releases.last()?.files.get(path)?;
        (record.etag == object.etag && record.size == object.size).then_some(record)
    }

    /// The site paths whose headers (or multipart hash) only a `HeadObject` can tell.
    pub fn needs_head(&self, site: &Site) -> Vec<String> {
        site.files
            .keys()
            .filter(|path| self.objects.contains_key(*path) && self.recorded(path).is_none())
            .cloned()
            .collect()
    }
}

/// What to do with one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Put the file (new or changed content).
    Upload,
    /// Same content, other headers: a metadata-only `CopyObject` onto itself.
    FixHeaders,
    /// Nothing to do.
    Unchanged,
    /// Not in this release, but a retained release references it: kept.
    Keep,
    /// Referenced by no retained release: deleted after the new release is live.
    Delete,
}

impl Action {
    fn label(self) -> &'static str {
        match self {
            Action::Upload => "upload",
            Action::FixHeaders => "fix-headers",
            Action::Unchanged => "unchanged",
            Action::Keep => "keep",
            Action::Delete => "delete",
        }
    }
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// The site path.
    pub path: String,
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Its size.
    pub bytes: u64,
    /// What it is (none for objects not in this release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
}

/// What a publish will do. Serialised without the files' bytes and the manifest to write: the
/// items say what happens to each path.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (empty, or ending in `/`).
    pub prefix: String,
    /// This release's id.
    pub release_id: String,
    /// How many releases keep their files.
    pub retain_releases: usize,
    /// Every path, sorted by path.
    pub items: Vec<Item>,
    /// Files of dist left out.
    pub skipped: Vec<Skipped>,
    /// Objects listed under the prefix (the manifest left out).
    pub remote_objects: usize,
    /// The site's files (what `items` uploads or fixes).
    #[serde(skip)]
    pub files: BTreeMap<String, LocalFile>,
    /// The manifest to write once the release is live (ETags filled in as uploads answer).
    #[serde(skip)]
    pub manifest: ReleaseManifest,
    /// The paths to invalidate.
    pub invalidation: Vec<String>,
}

impl run_state::StagePlan for Plan {
    fn describe(&self) -> String {
        Plan::describe(self)
    }
}

impl Plan {
    /// The items with this action.
    pub fn with(&self, action: Action) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(move |i| i.action == action)
    }

    /// How many items have this action.
    pub fn count(&self, action: Action) -> usize {
        self.with(action).count()
    }

    /// The share of the bucket's objects this plan deletes.
    pub fn delete_share(&self) -> f64 {
        if self.remote_objects == 0 { 0.0 } else { self.count(Action::Delete) as f64 / self.remote_objects as f64 }
    }

    /// The plan as `--dry-run` prints it ([`run_state::StagePlan::describe`]): a header, one line
    /// per path that changes, counts.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "publish release {} to s3://{}/{} ({} files; {} objects there; keeping the last {} releases)\n",
            self.release_id,
            self.bucket,
            self.prefix,
            self.files.len(),
            self.remote_objects,
            self.retain_releases
        );
        let width =
            self.items.iter().filter(|i| i.action != Action::Unchanged).map(|i| i.path.len()).max().unwrap_or(0);
        for item in self.items.iter().filter(|i| i.action != Action::Unchanged) {
            let _ = writeln!(
                out,
                "  {:<11} {:<width$} {:>10}  {}",
                item.action.label(),
                item.path,
                human_bytes(item.bytes),
                item.reason
            );
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "  {:<11} {:<width$} {:>10}  {}", "left-out", skipped.path, "", skipped.reason);
        }
        let bytes: u64 = self.with(Action::Upload).map(|i| i.bytes).sum();
        let _ = writeln!(
            out,
            "{} to upload ({}), {} header fixes, {} unchanged, {} kept for retained releases, {} to delete after the release is live",
            self.count(Action::Upload),
            human_bytes(bytes),
            self.count(Action::FixHeaders),
            self.count(Action::Unchanged),
            self.count(Action::Keep),
            self.count(Action::Delete)
        );
        if self.invalidation.is_empty() {
            out.push_str("no invalidation needed\n");
        } else {
            let _ = writeln!(out, "invalidate: {}", self.invalidation.join(" "));
        }
        out
    }
}

/// `1.2 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn describe_headers(old: &Headers, new: &Headers) -> String {
    let mut parts = Vec::new();
    if old.cache_control != new.cache_control {
        parts.push(format!("Cache-Control `{}` → `{}`", old.cache_control, new.cache_control));
    }
    if old.content_type != new.content_type {
        parts.push(format!("Content-Type `{}` → `{}`", old.content_type, new.content_type));
    }
    if old.content_encoding != new.content_encoding {
        parts.push(format!(
            "Content-Encoding `{}` → `{}`",
            old.content_encoding.as_deref().unwrap_or("none"),
            new.content_encoding.as_deref().unwrap_or("none")
        ));
    }
    parts.join(", ")
}

/// What the bucket holds for a path beyond the listing: its SHA-256 and headers, from the
/// manifest when it recorded this very object, else from a head.
fn remote_view(remote: &RemoteState, path: &str) -> (Option<String>, Option<Headers>) {
    if let Some(record) = remote.recorded(path) {
        return (Some(record.sha256.clone()), Some(record.headers.clone()));
    }
    let head = remote.heads.get(path);
    (head.and_then(|h| h.sha256.clone()), head.map(|h| h.headers.clone()))
}

/// What a file of the site needs against the object listed at its path, and why.
fn site_file_action(remote: &RemoteState, path: &str, file: &LocalFile) -> (Action, String) {
    let Some(object) = remote.objects.get(path) else { return (Action::Upload, "new".to_owned()) };
    let (sha, headers) = remote_view(remote, path);
    // A single-part object's ETag is its MD5; a multipart (or SSE-KMS) one's is
    // not, and its SHA-256 is kept in its metadata and the manifest.
    let same_content = (!object.etag.contains('-') && object.etag == file.md5 && object.size == file.size)
        || sha.as_deref() == Some(file.sha256.as_str());
    if !same_content {
        return (Action::Upload, "content changed".to_owned());
    }
    match headers {
        Some(headers) if headers == file.headers => (Action::Unchanged, "same content and headers".into()),
        Some(headers) => (Action::FixHeaders, describe_headers(&headers, &file.headers)),
        None => (Action::FixHeaders, "headers unknown".into()),
    }
}

/// The CloudFront paths a replaced file is invalidated under: its own, and its folder's (or
/// `/`) when it is the root document.
fn invalidate(invalidation: &mut BTreeSet<String>, path: &str, root_document: &str) {
    invalidation.insert(format!("/{}", encode_path(path)));
    if path == root_document {
        invalidation.insert("/".to_owned());
    } else if let Some(folder) = path.strip_suffix(root_document).filter(|f| f.ends_with('/')) {
        invalidation.insert(format!("/{}", encode_path(folder)));
    }
}

/// Plans a release: each file of the site against the object listed at its path (content
/// by MD5 = single-part ETag, or by the SHA-256 of the manifest or the object's metadata
/// for multipart objects; headers from the manifest, or a head), and each listed object
/// not in the site against the last `retain_releases - 1` releases of the manifest.
pub fn plan(
    bucket: &str,
    prefix: &str,
    release_id: &str,
    retain_releases: usize,
    root_document: &str,
    site: Site,
    remote: &RemoteState,
) -> Plan {
    let mut items = Vec::new();
    let mut invalidation = BTreeSet::new();
    let mut release = Release { id: release_id.to_owned(), files: BTreeMap::new() };
    for (path, file) in &site.files {
        let (action, reason) = site_file_action(remote, path, file);
        let replaced = remote.objects.contains_key(path);
        if matches!(action, Action::Upload | Action::FixHeaders) && replaced && !is_immutable(&file.headers) {
            invalidate(&mut invalidation, path, root_document);
        }
        let etag = match action {
            Action::Unchanged => remote.objects.get(path).map(|o| o.etag.clone()).unwrap_or_default(),
            _ => String::new(),
        };
        release.files.insert(
            path.clone(),
            ObjectRecord { etag, sha256: file.sha256.clone(), size: file.size, headers: file.headers.clone() },
        );
        items.push(Item { path: path.clone(), action, reason, bytes: file.size, kind: Some(file.kind) });
    }
    let previous = remote.manifest.as_ref().map(|m| m.releases.as_slice()).unwrap_or_default();
    // A release published again under the same id (a retried action) replaces its earlier
    // entry rather than pushing an older release out of the retained ones.
    let retained: Vec<&Release> =
        previous.iter().rev().filter(|r| r.id != release_id).take(retain_releases.saturating_sub(1)).collect();
    for (path, object) in &remote.objects {
        if site.files.contains_key(path) {
            continue;
        }
        let (action, reason) = match retained.iter().find(|r| r.files.contains_key(path)) {
            Some(release) => (Action::Keep, format!("referenced by retained release {}", release.id)),
            None => (Action::Delete, format!("in none of the last {retain_releases} releases")),
        };
        items.push(Item { path: path.clone(), action, reason, bytes: object.size, kind: None });
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    let mut releases: Vec<Release> = retained.into_iter().rev().cloned().collect();
    releases.push(release);
    Plan {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        release_id: release_id.to_owned(),
        retain_releases,
        items,
        skipped: site.skipped,
        remote_objects: remote.objects.len(),
        files: site.files,
        manifest: ReleaseManifest { releases },
        invalidation: collapse_invalidation(invalidation.into_iter().collect(), MAX_INVALIDATION_PATHS, MAX_WILDCARDS),
    }
}

/// Whether headers mark an object that never changes under its name.
pub fn is_immutable(headers: &Headers) -> bool {
    headers.cache_control.split(',').any(|d| d.trim().eq_ignore_ascii_case("immutable"))
}

/// CloudFront's limit of paths in progress per distribution.
pub const MAX_INVALIDATION_PATHS: usize = 3000;
/// CloudFront's limit of wildcard paths in progress per distribution.
pub const MAX_WILDCARDS: usize = 15;

/// Percent-encodes what CloudFront wants encoded in an invalidation path.
fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Keeps a list of paths within CloudFront's limits: past `max_paths`, paths are collapsed
/// into a wildcard per top folder (`/assets/*`, the root's files kept); past `max_wildcards`
/// wildcards (or still too many paths), into `/*`.
pub fn collapse_invalidation(paths: Vec<String>, max_paths: usize, max_wildcards: usize) -> Vec<String> {
    if paths.len() <= max_paths {
        return paths;
    }
    let mut collapsed = BTreeSet::new();
    for path in &paths {
        match path.trim_start_matches('/').split_once('/') {
            Some((folder, _)) => collapsed.insert(format!("/{folder}/*")),
            None => collapsed.insert(path.clone()),
        };
    }
    let wildcards = collapsed.iter().filter(|p| p.ends_with('*')).count();
    if wildcards > max_wildcards || collapsed.len() > max_paths {
        return vec!["/*".to_owned()];
    }
    collapsed.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(id: &str, paths: &[&str]) -> Release {
        let record = |path: &&str| {
            let headers =
                Headers { cache_control: "no-cache".into(), content_type: "text/html".into(), content_encoding: None };
            (path.to_string(), ObjectRecord { etag: "e".into(), sha256: "s".into(), size: 1, headers })
        };
        Release { id: id.into(), files: paths.iter().map(record).collect() }
    }

    /// Publishing the same release id again (a retried action) keeps the older releases the
    /// retention promises: `old.js` of release r1 stays while r1 is one of the last two.
    #[test]
    fn republishing_one_release_id_does_not_evict_an_older_release() {
        let objects: BTreeMap<String, RemoteObject> =
            ["old.js", "new.js"].iter().map(|p| (p.to_string(), RemoteObject { etag: "e".into(), size: 1 })).collect();
        let manifest = ReleaseManifest { releases: vec![release("r1", &["old.js"]), release("r2", &["new.js"])] };
        let remote = RemoteState { objects, manifest: Some(manifest), heads: BTreeMap::new() };
        let site = Site { files: BTreeMap::new(), skipped: Vec::new() };
        let plan = plan("b", "", "r2", 2, "index.html", site, &remote);
        let ids: Vec<&str> = plan.manifest.releases.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"], "r2 once, r1 still retained");
        let old = plan.items.iter().find(|i| i.path == "old.js").unwrap();
        assert_eq!(old.action, Action::Keep, "{old:?}");
    }

    #[test]
    fn invalidations_collapse_to_wildcards_past_the_limits() {
        let paths: Vec<String> = (0..10).map(|i| format!("/a/{i}.html")).chain(["/index.html".into()]).collect();
        assert_eq!(collapse_invalidation(paths.clone(), 20, 15), paths);
        assert_eq!(collapse_invalidation(paths.clone(), 5, 15), vec!["/a/*".to_owned(), "/index.html".to_owned()]);
        let many: Vec<String> = (0..20).map(|i| format!("/f{i}/x.html")).collect();
        assert_eq!(collapse_invalidation(many, 5, 15), vec!["/*".to_owned()]);
        assert_eq!(encode_path("a b/ü.html"), "a%20b/%C3%BC.html");
    }
}
