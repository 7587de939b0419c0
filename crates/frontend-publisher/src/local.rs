//! The site as built: the dist folder walked safely, each file hashed, plus the runtime config.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::config::{Headers, PublishConfig, RuntimeConfig, RuntimeKey};

/// S3's largest single object written without parts, and the largest CopyObject source.
pub const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Where a file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A file under dist.
    File(PathBuf),
    /// Bytes made here (the runtime config).
    Bytes(Vec<u8>),
}

/// What a file is, for the order of publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Anything HTML references: published first.
    Asset,
    /// The runtime config: published after the assets.
    RuntimeConfig,
    /// HTML: published last, so it never references what is not there yet.
    Html,
}

/// One file of the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Its path in the site (`assets/app.1234.js`), without the bucket prefix.
    pub path: String,
    /// Its bytes.
    pub body: Body,
    /// Its size.
    pub size: u64,
    /// MD5, lowercase hex (a single-part object's ETag).
    pub md5: String,
    /// SHA-256, lowercase hex (kept in the object's metadata).
    pub sha256: String,
    /// The headers it is sent with.
    pub headers: Headers,
    /// What it is.
    pub kind: Kind,
}

/// A file of dist left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Its path in dist.
    pub path: String,
    /// Why.
    pub reason: &'static str,
}

/// The site: dist's files and the runtime config.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// Every file to publish, by path.
    pub files: BTreeMap<String, LocalFile>,
    /// Files left out.
    pub skipped: Vec<Skipped>,
}

fn kind_of(config: &PublishConfig, path: &str) -> Kind {
    if config.runtime_config.as_ref().is_some_and(|r| r.writes(path)) {
        Kind::RuntimeConfig
    } else if path.ends_with(".html") || path.ends_with(".htm") {
        Kind::Html
    } else {
        Kind::Asset
    }
}

/// The site to publish: `dist` walked (regular files only; a link is followed only to a
/// regular file inside dist; hidden files, `.env*` and source maps left out unless
/// `include` names them), then the runtime config files added (`runtime`: path → bytes).
///
/// A link is resolved, never followed out of dist, and the same rules apply to its target's
/// path: a link to a dotfile, an `.env*` file or a source map (`config.json -> .env.production`)
/// is refused ([`Error::LinkToHidden`]), since publishing it under the link's name would
/// publish what the rules keep out.
pub fn read_site(config: &PublishConfig, dist: &Path, runtime: Vec<(String, Vec<u8>)>) -> Result<Site, Error> {
    let meta = std::fs::symlink_metadata(dist);
    let root = match meta {
        Ok(m) if m.is_dir() => std::fs::canonicalize(dist).map_err(|e| Error::io(dist, e))?,
        Ok(_) | Err(_) => return Err(Error::MissingDist { dist: dist.to_path_buf() }),
    };
    let mut site = Site::default();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            add_entry(config, &root, &entry, &mut site, &mut stack)?;
        }
    }
    if site.files.is_empty() {
        return Err(Error::EmptyDist { dist: dist.to_path_buf() });
    }
    for (path, bytes) in runtime {
        let kind = kind_of(config, &path);
        site.files.insert(
            path.clone(),
            LocalFile {
                headers: config.headers(&path),
                size: bytes.len() as u64,
                md5: hex::encode(Md5::digest(&bytes)),
                sha256: hex::encode(Sha256::digest(&bytes)),
                path,
                body: Body::Bytes(bytes),
                kind,
            },
        );
    }
    site.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(site)
}

/// One entry of a folder of dist: a file added to the site, a folder pushed on `stack`, or
/// what is left out noted in `site.skipped`.
fn add_entry(
    config: &PublishConfig,
    root: &Path,
    entry: &std::fs::DirEntry,
    site: &mut Site,
    stack: &mut Vec<PathBuf>,
) -> Result<(), Error> {
    let full = entry.path();
    let relative = full.strip_prefix(root).unwrap_or(&full);
    let Some(path) = relative.to_str().map(|p| p.replace(std::path::MAIN_SEPARATOR, "/")) else {
        return Err(Error::NonUtf8Name { path: escaped(relative) });
    };
    if path.chars().any(char::is_control) {
        return Err(Error::BadName { path: path.escape_debug().to_string() });
    }
    let file_type = entry.file_type().map_err(|e| Error::io(&full, e))?;
    let name = entry.file_name();
    let name = name.to_str().unwrap_or_default();
    let hidden = name.starts_with('.');
    if hidden && !config.included(&path) && !(file_type.is_dir() && config.included(&format!("{path}/x"))) {
        site.skipped.push(Skipped {
            path,
            reason: if name.starts_with(".env") { "an .env file" } else { "hidden (a dotfile)" },
        });
        return Ok(());
    }
    let is_link = file_type.is_symlink();
    let target = if is_link {
        let target = std::fs::canonicalize(&full).map_err(|e| Error::io(&full, e))?;
        if !target.starts_with(root) {
            return Err(Error::SymlinkOutside { path: full, target });
        }
        target
    } else {
        full.clone()
    };
    let target_meta = std::fs::metadata(&target).map_err(|e| Error::io(&target, e))?;
    if target_meta.is_dir() {
        if file_type.is_symlink() {
            // Its files are published under their own paths inside dist.
            site.skipped.push(Skipped { path, reason: "a link to a folder inside dist" });
        } else {
            stack.push(full);
        }
        return Ok(());
    }
    if !target_meta.is_file() {
        return Err(Error::NotRegularFile { path: full });
    }
    if is_link {
        check_link_target(config, root, &full, &target)?;
    }
    if path.ends_with(".map") && !config.included(&path) {
        site.skipped.push(Skipped { path, reason: "a source map" });
        return Ok(());
    }
    if target_meta.len() > MAX_FILE_BYTES {
        return Err(Error::TooLarge { path: full, size: target_meta.len() });
    }
    let (size, md5, sha256) = hash_file(&target)?;
    let kind = kind_of(config, &path);
    site.files.insert(
        path.clone(),
        LocalFile { headers: config.headers(&path), path, body: Body::File(target), size, md5, sha256, kind },
    );
    Ok(())
}

/// The rules for names, applied to a link's target (inside dist): no part of its path hidden, and
/// not a source map, unless `include` names it.
fn check_link_target(config: &PublishConfig, root: &Path, link: &Path, target: &Path) -> Result<(), Error> {
    let inside = target.strip_prefix(root).unwrap_or(target);
    let path = inside.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
    if config.included(&path) {
        return Ok(());
    }
    let names: Vec<String> = inside.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let what = if names.iter().any(|n| n.starts_with(".env")) {
        "an .env file"
    } else if names.iter().any(|n| n.starts_with('.')) {
        "hidden (a dotfile)"
    } else if path.ends_with(".map") {
        "a source map"
    } else {
        return Ok(());
    };
    Err(Error::LinkToHidden { path: link.to_path_buf(), target: target.to_path_buf(), what })
}

/// Scans the runtime config's files (`runtime`: path → bytes) with validate's secret scanner
/// (the patterns the redactor shares) before anything is uploaded: the site is public, so an
/// error finding (a key, a password-like value) refuses the publish. The findings never hold
/// the secret.
pub fn check_runtime_secrets(runtime: &[(String, Vec<u8>)]) -> Result<(), Error> {
    let scanner = validate::secrets::SecretScanner::default();
    let findings: Vec<String> = runtime
        .iter()
        .flat_map(|(path, bytes)| scanner.scan(path, bytes))
        .filter(|f| f.severity == validate::Severity::Error)
        .map(|f| format!("{}:{}: {} {}", f.path, f.pos.line, f.rule, f.message))
        .collect();
    if findings.is_empty() { Ok(()) } else { Err(Error::SecretInRuntimeConfig { findings }) }
}

fn hash_file(path: &Path) -> Result<(u64, String, String), Error> {
    let mut file = pipeline_config::fs::open_regular(path).map_err(|e| Error::io(path, e))?;
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        sha.update(&buffer[..n]);
        size += n as u64;
        if size > MAX_FILE_BYTES {
            return Err(Error::TooLarge { path: path.to_path_buf(), size });
        }
    }
    Ok((size, hex::encode(md5.finalize()), hex::encode(sha.finalize())))
}

fn escaped(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().escape_ascii().to_string()
}

/// The runtime config's keys filled from the outputs, nested as configured; `STACK.Output`
/// names another configured stack's output (an output's name has no `.`).
fn runtime_object(
    keys: &BTreeMap<String, RuntimeKey>,
    runtime: &RuntimeConfig,
    outputs: &run_state::StackOutputs,
    environment: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let mut object = serde_json::Map::new();
    for (key, spec) in keys {
        let value = match spec {
            RuntimeKey::Output(name) => {
                let (stack, output) = name.split_once('.').unwrap_or((&runtime.stack, name));
                let value = outputs.output(environment, stack, output).map_err(Error::Output)?;
                serde_json::Value::String(value.to_owned())
            }
            RuntimeKey::Nested(inner) => {
                serde_json::Value::Object(runtime_object(inner, runtime, outputs, environment)?)
            }
        };
        object.insert(key.clone(), value);
    }
    Ok(object)
}

/// The runtime config's files (path → bytes) from the stack's outputs and region: `.js` as
/// `window.GLOBAL = {…};`, `.json` as the object; then each template of the repository
/// (`root`) filled ([`fill_template`]). A missing output is an error naming it and the stack
/// (for a template, its file and line).
pub fn runtime_config_files(
    runtime: &RuntimeConfig,
    root: &Path,
    outputs: &run_state::StackOutputs,
    environment: &str,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut files = if runtime.files.is_empty() { Vec::new() } else { keyed_files(runtime, outputs, environment)? };
    for (site_path, template) in &runtime.templates {
        let full = root.join(template);
        let bytes = pipeline_config::fs::read_regular(&full, MAX_TEMPLATE_BYTES).map_err(|e| Error::io(&full, e))?;
        let text = String::from_utf8(bytes)
            .map_err(|e| Error::io(&full, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let filled = fill_template(template, &text, runtime, outputs, environment)?;
        files.push((site_path.clone(), filled.into_bytes()));
    }
    Ok(files)
}

/// The largest runtime-config template read.
pub const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// A runtime-config template filled: `${Output}` (an output of the runtime config's stack),
/// `${STACK.Output}` (another configured stack's), `${AWS::Region}` (the stack's region);
/// `$${` is a literal `${`. Values are escaped for a JSON or JavaScript string (the
/// placeholder stands inside quotes). A placeholder naming no output, or text after `${`
/// that is no placeholder, is an error naming `file` and the line.
pub fn fill_template(
    file: &str,
    text: &str,
    runtime: &RuntimeConfig,
    outputs: &run_state::StackOutputs,
    environment: &str,
) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let at = index + 1;
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            if rest[..start].ends_with('$') {
                out.push_str(&rest[..start - 1]);
                out.push_str("${");
                rest = &rest[start + 2..];
                continue;
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let bad = || Error::BadPlaceholder {
                file: file.to_owned(),
                line: at,
                text: after.trim_end().chars().take(40).collect(),
            };
            let name = &after[..after.find('}').ok_or_else(bad)?];
            let value = placeholder_value(name, runtime, outputs, environment).map_err(|source| match source {
                None => bad(),
                Some(source) => Error::MissingPlaceholder {
                    file: file.to_owned(),
                    line: at,
                    placeholder: name.to_owned(),
                    source: Box::new(source),
                },
            })?;
            let quoted = serde_json::to_string(&value).unwrap_or_default();
            out.push_str(&quoted[1..quoted.len() - 1].replace('\'', "\\u0027"));
            rest = &after[name.len() + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// A placeholder's value; `Err(None)` when the name is no placeholder.
fn placeholder_value(
    name: &str,
    runtime: &RuntimeConfig,
    outputs: &run_state::StackOutputs,
    environment: &str,
) -> Result<String, Option<run_state::outputs::LookupError>> {
    let word = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if name == "AWS::Region" {
        return match outputs.environments.get(environment).and_then(|stacks| stacks.get(&runtime.stack)) {
            Some(stack) => Ok(stack.region.clone()),
            // No such environment or stack: the lookup's error says which.
            None => outputs.output(environment, &runtime.stack, "AWS::Region").map(str::to_owned).map_err(Some),
        };
    }
    let (stack, output) = name.split_once('.').unwrap_or((&runtime.stack, name));
    if !word(stack) || !word(output) {
        return Err(None);
    }
    outputs.output(environment, stack, output).map(str::to_owned).map_err(Some)
}

/// The files of `runtime.files`, the object of `keys` in each.
fn keyed_files(
    runtime: &RuntimeConfig,
    outputs: &run_state::StackOutputs,
    environment: &str,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut object = runtime_object(&runtime.keys, runtime, outputs, environment)?;
    if let Some(key) = &runtime.region_key {
        let stack = outputs.environments.get(environment).and_then(|stacks| stacks.get(&runtime.stack));
        let region = match stack {
            Some(stack) => stack.region.clone(),
            // No such environment or stack: the lookup's error says which.
            None => match outputs.output(environment, &runtime.stack, key) {
                Err(error) => return Err(Error::Output(error)),
                Ok(_) => String::new(),
            },
        };
        object.insert(key.clone(), serde_json::Value::String(region));
    }
    let json = serde_json::to_string_pretty(&serde_json::Value::Object(object)).unwrap_or_default();
    Ok(runtime
        .files
        .iter()
        .map(|file| {
            let text = if file.ends_with(".js") {
                format!("window.{} = {json};\n", runtime.global)
            } else {
                format!("{json}\n")
            };
            (file.clone(), text.into_bytes())
        })
        .collect())
}
