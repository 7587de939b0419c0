//! `[publish]` in `pipeline.toml`: what to publish where, with which headers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pipeline_config::{ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

/// The Cache-Control the runtime config always gets (it changes with every deploy).
pub const NO_CACHE: &str = "no-cache, no-store, must-revalidate";
/// The Cache-Control of content-hashed assets.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The `[publish]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSection {
    /// The component the site belongs to (its deploy step is recorded under it).
    pub component: Option<Spanned<String>>,
    /// The built site's folder, relative to the monorepo root.
    pub dist: Option<Spanned<String>>,
    /// The bucket: a name, or `{ output = "STACK.Output" }`.
    pub bucket: Option<Spanned<ValueSpec>>,
    /// The CloudFront distribution id (optional): an id, or `{ output = "STACK.Output" }`.
    pub distribution: Option<Spanned<ValueSpec>>,
    /// A key prefix inside the bucket (`site/`); empty by default.
    #[serde(default)]
    pub prefix: Option<Spanned<String>>,
    /// Glob (relative to dist) to Cache-Control, first match wins.
    #[serde(default)]
    pub headers: Vec<HeaderRuleSpec>,
    /// Cache-Control of files no rule matches [default: `no-cache`].
    pub default_cache_control: Option<String>,
    /// Precompressed siblings served with Content-Encoding: `["br", "gz"]`.
    #[serde(default)]
    pub precompressed: Vec<Spanned<String>>,
    /// Globs of files published although hidden (`.well-known/**`) or source maps.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// How many releases (this one included) keep their files [default: 2].
    pub retain_releases: Option<Spanned<u32>>,
    /// The largest share of the bucket's objects one publish may delete without `--force` [default: 0.5].
    pub max_delete_share: Option<Spanned<f64>>,
    /// Uploads at once [default: 16].
    pub parallelism: Option<Spanned<usize>>,
    /// Files above this many MiB go up in parts [default: 16, at least 5].
    pub multipart_threshold_mib: Option<Spanned<u64>>,
    /// Wait at most this long for the invalidation to complete (`"5m"`); not waited for by default.
    #[serde(default, deserialize_with = "pipeline_config::duration")]
    pub invalidation_wait: Option<Duration>,
    /// The site's root document [default: `index.html`].
    pub root_document: Option<Spanned<String>>,
    /// The runtime config the app loads, written from the stack outputs.
    pub runtime_config: Option<RuntimeConfigSpec>,
}

/// A literal value or a stack output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "expected a string or { output = \"STACK.Output\" }")]
pub enum ValueSpec {
    /// A literal.
    Literal(String),
    /// `{ output = "STACK.Output" }`.
    Output {
        /// `STACK.Output`.
        output: String,
    },
}

/// One header rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRuleSpec {
    /// A glob relative to dist.
    pub glob: Spanned<String>,
    /// The Cache-Control for the files it matches.
    pub cache_control: String,
}

/// `[publish.runtime_config]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfigSpec {
    /// Files to write: `aws-config.js` (`window.AWS_CONFIG = {…};`) and/or `aws-config.json`.
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
    /// Files written from a template of the repository: site path → the template (JSON or JS
    /// with `${Output}`, `${STACK.Output}` and `${AWS::Region}` placeholders, `$${` for a
    /// literal `${`), relative to the monorepo root.
    #[serde(default)]
    pub templates: BTreeMap<String, Spanned<String>>,
    /// The configured stack whose outputs fill it.
    pub stack: Spanned<String>,
    /// Config key to output name (`userPoolId = "UserPoolId"`, or `"STACK.Output"` for another
    /// stack's), nested as deep as the site reads it (`[publish.runtime_config.keys.Auth.Cognito]`).
    #[serde(default)]
    pub keys: BTreeMap<String, RuntimeKey>,
    /// The key that receives the stack's region (`region`); none when unset.
    pub region_key: Option<String>,
    /// The global the `.js` form assigns [default: `AWS_CONFIG`].
    pub global: Option<Spanned<String>>,
}

/// A key of the runtime config: an output, or an object of keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "expected an output name or a table of nested keys")]
pub enum RuntimeKey {
    /// `Output` of the runtime config's `stack`, or `STACK.Output` of another configured stack.
    Output(String),
    /// Nested keys (`Auth = { Cognito = { userPoolId = "UserPoolId" } }`).
    Nested(BTreeMap<String, RuntimeKey>),
}

/// Where a value comes from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// Written in the config.
    Literal(String),
    /// A stack output of the run's deploy stage.
    Output {
        /// The configured stack.
        stack: String,
        /// The output name.
        output: String,
    },
}

/// How a file is sent: its headers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Headers {
    /// Cache-Control.
    pub cache_control: String,
    /// Content-Type.
    pub content_type: String,
    /// Content-Encoding (`br`, `gzip`) of a precompressed sibling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
}

/// The runtime config, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Site paths of the files written from `keys` (`aws-config.js`).
    pub files: Vec<String>,
    /// Site paths of the files filled from a repository template → the template's path,
    /// relative to the monorepo root.
    pub templates: BTreeMap<String, String>,
    /// The configured stack.
    pub stack: String,
    /// Config key to output name, nested.
    pub keys: BTreeMap<String, RuntimeKey>,
    /// The key that receives the region.
    pub region_key: Option<String>,
    /// The global of the `.js` form.
    pub global: String,
}

/// `[publish]`, checked: every glob compiled, every name safe.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The component.
    pub component: String,
    /// The dist folder, relative to the root.
    pub dist: PathBuf,
    /// The bucket.
    pub bucket: ValueSource,
    /// The distribution.
    pub distribution: Option<ValueSource>,
    /// The key prefix: empty, or ending in `/`.
    pub prefix: String,
    rules: globset::GlobSet,
    rule_values: Vec<String>,
    default_cache_control: String,
    /// Encodings of precompressed siblings, by extension (`br` → `br`, `gz` → `gzip`).
    pub precompressed: BTreeMap<String, String>,
    include: globset::GlobSet,
    /// Releases that keep their files.
    pub retain_releases: usize,
    /// The share of objects a publish may delete without `--force`.
    pub max_delete_share: f64,
    /// Uploads at once.
    pub parallelism: usize,
    /// Multipart above this many bytes.
    pub multipart_threshold: u64,
    /// The bounded wait for the invalidation.
    pub invalidation_wait: Option<Duration>,
    /// The root document.
    pub root_document: String,
    /// The runtime config.
    pub runtime_config: Option<RuntimeConfig>,
}

/// The section's name.
pub const SECTION: &str = "publish";

fn err(config: &ConfigFile, span: std::ops::Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::at(&config.path, &config.text, span, format!("{SECTION}.{key}"), message)
}

/// Checks a relative site path: `/`-separated, no `..`, `.` or empty part, no leading `/`.
pub fn check_site_path(path: &str) -> Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        || path.chars().any(char::is_control)
    {
        return Err(format!(
            "`{}` is not a relative path inside the site (no leading `/`, no `..`, no empty part)",
            path.escape_debug()
        ));
    }
    Ok(())
}

impl PublishConfig {
    /// Reads and checks `[publish]`; `Ok(None)` when the file has none.
    pub fn from_config(config: &ConfigFile) -> Result<Option<PublishConfig>, ConfigError> {
        let section: Option<PublishSection> = config.section::<OptionalSection>(SECTION)?.0;
        let Some(section) = section else { return Ok(None) };
        PublishConfig::check(config, section).map(Some)
    }

    fn check(config: &ConfigFile, s: PublishSection) -> Result<PublishConfig, ConfigError> {
        let missing = |key: &str, example: &str| {
            ConfigError::file(&config.path, format!("{SECTION}.{key}: missing; add it to [publish], e.g. {example}"))
        };
        let component = s.component.ok_or_else(|| missing("component", "component = \"frontend\""))?;
        pipeline_config::check_name(component.get_ref()).map_err(|m| err(config, component.span(), "component", m))?;
        let dist = s.dist.ok_or_else(|| missing("dist", "dist = \"frontend/dist\""))?;
        check_dist(config, &dist)?;
        let bucket = s.bucket.ok_or_else(|| missing("bucket", "bucket = { output = \"master.SiteBucketName\" }"))?;
        let bucket = value_source(config, &bucket, "bucket")?;
        let distribution = s.distribution.as_ref().map(|d| value_source(config, d, "distribution")).transpose()?;
        let prefix = prefix(config, s.prefix.as_ref())?;
        let rules = pipeline_config::glob_set(
            &config.path,
            &config.text,
            s.headers.iter().map(|r| (r.glob.get_ref().as_str(), r.glob.span())),
            "publish.headers",
        )?;
        for rule in &s.headers {
            check_header_value(&rule.cache_control)
                .map_err(|m| err(config, rule.glob.span(), "headers.cache_control", m))?;
        }
        let precompressed = precompressed(config, &s.precompressed)?;
        let include = pipeline_config::glob_set(
            &config.path,
            &config.text,
            s.include.iter().map(|g| (g.get_ref().as_str(), g.span())),
            "publish.include",
        )?;
        let retain_releases = retain_releases(config, s.retain_releases.as_ref())?;
        let max_delete_share = max_delete_share(config, s.max_delete_share.as_ref())?;
        let (parallelism, multipart_threshold) =
            uploads(config, s.parallelism.as_ref(), s.multipart_threshold_mib.as_ref())?;
        let root_document = match &s.root_document {
            None => "index.html".to_owned(),
            Some(r) => {
                check_site_path(r.get_ref()).map_err(|m| err(config, r.span(), "root_document", m))?;
                r.get_ref().clone()
            }
        };
        let runtime_config = s.runtime_config.map(|r| runtime_config(config, r)).transpose()?;
        let default_cache_control = s.default_cache_control.unwrap_or_else(|| "no-cache".to_owned());
        check_header_value(&default_cache_control)
            .map_err(|m| ConfigError::file(&config.path, format!("{SECTION}.default_cache_control: {m}")))?;
        Ok(PublishConfig {
            component: component.into_inner(),
            dist: PathBuf::from(dist.into_inner()),
            bucket,
            distribution,
            prefix,
            rules,
            rule_values: s.headers.into_iter().map(|r| r.cache_control).collect(),
            default_cache_control,
            precompressed,
            include,
            retain_releases,
            max_delete_share,
            parallelism,
            multipart_threshold,
            invalidation_wait: s.invalidation_wait,
            root_document,
            runtime_config,
        })
    }

    /// The Cache-Control of a site path: the first matching rule's, else the default; the
    /// runtime config's files always get [`NO_CACHE`].
    pub fn cache_control(&self, path: &str) -> &str {
        if self.runtime_config.as_ref().is_some_and(|r| r.writes(path)) {
            return NO_CACHE;
        }
        match self.rules.matches(path).first() {
            Some(&index) => &self.rule_values[index],
            None => &self.default_cache_control,
        }
    }

    /// Whether a hidden file or source map is published anyway (`include`).
    pub fn included(&self, path: &str) -> bool {
        self.include.is_match(path)
    }

    /// The headers a site path is sent with: Cache-Control by rule, Content-Type from the
    /// MIME table (`charset=utf-8` for text), Content-Encoding for a configured
    /// precompressed sibling (`app.js.br`: the type of `app.js`, encoding `br`).
    pub fn headers(&self, path: &str) -> Headers {
        let (typed, encoding) = match path.rsplit_once('.') {
            Some((stem, ext)) if self.precompressed.contains_key(ext) && stem.contains('.') => {
                (stem, self.precompressed.get(ext).cloned())
            }
            _ => (path, None),
        };
        Headers {
            cache_control: self.cache_control(typed).to_owned(),
            content_type: content_type(typed),
            content_encoding: encoding,
        }
    }
}

/// `dist`: a folder inside the monorepo, relative to its root.
fn check_dist(config: &ConfigFile, dist: &Spanned<String>) -> Result<(), ConfigError> {
    if dist.get_ref().is_empty()
        || Path::new(dist.get_ref()).is_absolute()
        || Path::new(dist.get_ref()).components().any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(err(config, dist.span(), "dist", "must be a folder inside the monorepo, relative to its root"));
    }
    Ok(())
}

/// `prefix`: empty, or a site path with one trailing `/`.
fn prefix(config: &ConfigFile, prefix: Option<&Spanned<String>>) -> Result<String, ConfigError> {
    Ok(match prefix {
        None => String::new(),
        Some(p) if p.get_ref().trim_matches('/').is_empty() => String::new(),
        Some(p) => {
            let trimmed = p.get_ref().trim_matches('/');
            check_site_path(trimmed).map_err(|m| err(config, p.span(), "prefix", m))?;
            format!("{trimmed}/")
        }
    })
}

/// `precompressed`: each extension with the Content-Encoding it is served with.
fn precompressed(config: &ConfigFile, extensions: &[Spanned<String>]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut precompressed = BTreeMap::new();
    for ext in extensions {
        let encoding = match ext.get_ref().as_str() {
            "br" => "br",
            "gz" => "gzip",
            "zst" => "zstd",
            other => {
                return Err(err(
                    config,
                    ext.span(),
                    "precompressed",
                    format!("`{other}` is not a known precompressed extension; write \"br\", \"gz\" or \"zst\""),
                ));
            }
        };
        precompressed.insert(ext.get_ref().clone(), encoding.to_owned());
    }
    Ok(precompressed)
}

/// `retain_releases`: 1 to [`MAX_RETAIN_RELEASES`], 2 when unset.
fn retain_releases(config: &ConfigFile, retain: Option<&Spanned<u32>>) -> Result<usize, ConfigError> {
    Ok(match retain {
        None => 2,
        Some(k) if *k.get_ref() == 0 => {
            return Err(err(config, k.span(), "retain_releases", "must be at least 1 (the live release)"));
        }
        Some(k) if *k.get_ref() > MAX_RETAIN_RELEASES => {
            return Err(err(
                config,
                k.span(),
                "retain_releases",
                format!(
                    "must be at most {MAX_RETAIN_RELEASES}: every retained release keeps its files in the bucket and its entry in the release manifest"
                ),
            ));
        }
        Some(k) => *k.get_ref() as usize,
    })
}

/// `max_delete_share`: between 0 and 1, 0.5 when unset.
fn max_delete_share(config: &ConfigFile, share: Option<&Spanned<f64>>) -> Result<f64, ConfigError> {
    Ok(match share {
        None => 0.5,
        Some(v) if !(0.0..=1.0).contains(v.get_ref()) => {
            return Err(err(config, v.span(), "max_delete_share", "must be between 0 and 1 (0.5 is half the objects)"));
        }
        Some(v) => *v.get_ref(),
    })
}

/// `parallelism` and the multipart threshold in bytes, whose product (the files held in
/// memory at once) stays under [`MAX_UPLOAD_MEMORY`].
fn uploads(
    config: &ConfigFile,
    parallelism_spec: Option<&Spanned<usize>>,
    threshold_mib: Option<&Spanned<u64>>,
) -> Result<(usize, u64), ConfigError> {
    let parallelism = match parallelism_spec {
        None => 16,
        Some(p) if !(1..=256).contains(p.get_ref()) => {
            return Err(err(config, p.span(), "parallelism", "must be between 1 and 256"));
        }
        Some(p) => *p.get_ref(),
    };
    let multipart_threshold = match threshold_mib {
        None => 16 * MIB,
        Some(m) if !(5..=5 * 1024).contains(m.get_ref()) => {
            return Err(err(
                config,
                m.span(),
                "multipart_threshold_mib",
                "must be between 5 and 5120 (S3's part sizes)",
            ));
        }
        Some(m) => m.get_ref() * MIB,
    };
    let in_memory = multipart_threshold.saturating_mul(parallelism as u64);
    if in_memory > MAX_UPLOAD_MEMORY {
        let (key, span) = match (threshold_mib, parallelism_spec) {
            (Some(m), _) => ("multipart_threshold_mib", m.span()),
            (None, Some(p)) => ("parallelism", p.span()),
            (None, None) => ("parallelism", 0..0),
        };
        return Err(err(
            config,
            span,
            key,
            format!(
                "publish.multipart_threshold_mib ({}) × publish.parallelism ({parallelism}) is {} MiB of files held in memory at once, over {} MiB; lower one of them",
                multipart_threshold / MIB,
                in_memory / MIB,
                MAX_UPLOAD_MEMORY / MIB
            ),
        ));
    }
    Ok((parallelism, multipart_threshold))
}

const MIB: u64 = 1024 * 1024;

/// The most releases `retain_releases` may keep.
pub const MAX_RETAIN_RELEASES: u32 = 100;

/// The most bytes of files the uploads may hold at once: a file up to the multipart threshold
/// is read whole, and `parallelism` of them go up together.
pub const MAX_UPLOAD_MEMORY: u64 = 2 * 1024 * MIB;

/// The Content-Type of a path from the MIME table; text types get `charset=utf-8`.
pub fn content_type(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    let texty = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "image/svg+xml"
                | "application/manifest+json"
        );
    if texty { format!("{essence}; charset=utf-8") } else { essence.to_owned() }
}

fn check_header_value(value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().any(|c| c.is_control() || !c.is_ascii()) {
        return Err(format!("`{}` is not a valid header value (printable ASCII, not empty)", value.escape_debug()));
    }
    Ok(())
}

fn value_source(config: &ConfigFile, spec: &Spanned<ValueSpec>, key: &str) -> Result<ValueSource, ConfigError> {
    match spec.get_ref() {
        ValueSpec::Literal(value) if value.is_empty() => Err(err(config, spec.span(), key, "must not be empty")),
        ValueSpec::Literal(value) => Ok(ValueSource::Literal(value.clone())),
        ValueSpec::Output { output } => match output.split_once('.') {
            Some((stack, name)) if !stack.is_empty() && !name.is_empty() && !name.contains('.') => {
                Ok(ValueSource::Output { stack: stack.to_owned(), output: name.to_owned() })
            }
            _ => Err(err(
                config,
                spec.span(),
                key,
                format!("`{output}` is not `STACK.OutputName`; write e.g. {{ output = \"master.SiteBucketName\" }}"),
            )),
        },
    }
}

fn runtime_config(config: &ConfigFile, r: RuntimeConfigSpec) -> Result<RuntimeConfig, ConfigError> {
    let mut files = Vec::new();
    for file in &r.files {
        check_site_path(file.get_ref()).map_err(|m| err(config, file.span(), "runtime_config.files", m))?;
        if !(file.get_ref().ends_with(".js") || file.get_ref().ends_with(".json")) {
            return Err(err(
                config,
                file.span(),
                "runtime_config.files",
                "must end in `.js` (window.AWS_CONFIG = {…}) or `.json`",
            ));
        }
        files.push(file.get_ref().clone());
    }
    let mut templates = BTreeMap::new();
    for (site_path, template) in &r.templates {
        let key = format!("runtime_config.templates.\"{site_path}\"");
        check_site_path(site_path).map_err(|m| err(config, template.span(), &key, m))?;
        if files.contains(site_path) {
            return Err(err(config, template.span(), &key, "is also in runtime_config.files; write it one way"));
        }
        let path = template.get_ref();
        if path.is_empty()
            || Path::new(path).is_absolute()
            || Path::new(path).components().any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(err(config, template.span(), &key, "must be a file inside the monorepo, relative to its root"));
        }
        templates.insert(site_path.clone(), path.clone());
    }
    if files.is_empty() && templates.is_empty() {
        return Err(err(
            config,
            r.stack.span(),
            "runtime_config.files",
            "name at least one file, e.g. [\"aws-config.js\"], or a template in runtime_config.templates",
        ));
    }
    let global = match &r.global {
        None => "AWS_CONFIG".to_owned(),
        Some(g) => {
            let ok = g.get_ref().chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && g.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(err(config, g.span(), "runtime_config.global", "must be a JavaScript identifier"));
            }
            g.get_ref().clone()
        }
    };
    Ok(RuntimeConfig { files, templates, stack: r.stack.into_inner(), keys: r.keys, region_key: r.region_key, global })
}

impl RuntimeConfig {
    /// Whether the runtime config writes this site path (from `keys` or a template).
    pub fn writes(&self, path: &str) -> bool {
        self.files.iter().any(|f| f == path) || self.templates.contains_key(path)
    }
}

/// `Option<PublishSection>` with a `Default`, so a missing section reads as `None`.
#[derive(Default, Deserialize)]
#[serde(transparent)]
struct OptionalSection(Option<PublishSection>);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<PublishConfig>, ConfigError> {
        PublishConfig::from_config(&ConfigFile::from_text(Path::new("pipeline.toml"), text))
    }

    const BASE: &str = "[publish]\ncomponent = \"frontend\"\ndist = \"frontend/dist\"\nbucket = { output = \"master.SiteBucketName\" }\n";

    #[test]
    fn a_full_section_is_read_and_headers_follow_the_rules() {
        let text = format!(
            "{BASE}prefix = \"/site/\"\nheaders = [{{ glob = \"assets/**\", cache_control = \"{IMMUTABLE}\" }}, {{ glob = \"**/*.html\", cache_control = \"{NO_CACHE}\" }}]\nprecompressed = [\"br\"]\n[publish.runtime_config]\nfiles = [\"aws-config.js\"]\nstack = \"master\"\nkeys = {{ apiEndpoint = \"ApiEndpoint\" }}\nregion_key = \"region\"\n"
        );
        let config = parse(&text).unwrap().unwrap();
        assert_eq!(config.prefix, "site/");
        assert_eq!(config.bucket, ValueSource::Output { stack: "master".into(), output: "SiteBucketName".into() });
        assert_eq!(config.retain_releases, 2);
        let js = config.headers("assets/app.1234abcd.js");
        assert_eq!(js.cache_control, IMMUTABLE);
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        let br = config.headers("assets/app.1234abcd.js.br");
        assert_eq!((br.content_type.as_str(), br.content_encoding.as_deref()), (js.content_type.as_str(), Some("br")));
        assert_eq!(config.headers("index.html").cache_control, NO_CACHE);
        assert_eq!(config.headers("index.html").content_type, "text/html; charset=utf-8");
        assert_eq!(config.headers("aws-config.js").cache_control, NO_CACHE);
        assert_eq!(config.headers("robots.txt").cache_control, "no-cache");
        assert_eq!(config.headers("logo.png").content_type, "image/png");
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        assert!(parse("[gate]\n").unwrap().is_none());
        let err = parse(&format!("{BASE}retain = 3\n")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(5), "publish.retain"), "{err}");
        let err = parse(&format!("{BASE}retain_releases = 0\n")).unwrap_err();
        assert_eq!(err.to_string(), "pipeline.toml:5: publish.retain_releases: must be at least 1 (the live release)");
        let err = parse(&format!("{BASE}retain_releases = 100000\n")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(5), "publish.retain_releases"), "{err}");
        assert!(err.message.contains("at most 100"), "{err}");
        parse(&format!("{BASE}retain_releases = 100\n")).unwrap();
        let err = parse(&format!("{BASE}parallelism = 64\nmultipart_threshold_mib = 64\n")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(6), "publish.multipart_threshold_mib"), "{err}");
        assert!(err.message.contains("4096 MiB"), "{err}");
        let err = parse(&format!("{BASE}parallelism = 256\n")).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(5), "publish.parallelism"), "{err}");
        parse(&format!("{BASE}parallelism = 128\nmultipart_threshold_mib = 16\n")).unwrap();
        let err = parse(&format!("{BASE}headers = [{{ glob = \"a/[\", cache_control = \"x\" }}]\n")).unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        let err = parse(&BASE.replace("master.SiteBucketName", "SiteBucketName")).unwrap_err();
        assert!(
            err.to_string().starts_with("pipeline.toml:4: publish.bucket: `SiteBucketName` is not `STACK.OutputName`"),
            "{err}"
        );
        let err = parse(&BASE.replace("frontend/dist", "../dist")).unwrap_err();
        assert!(err.to_string().starts_with("pipeline.toml:3: publish.dist:"), "{err}");
        let err = parse("[publish]\ncomponent = \"frontend\"\n").unwrap_err();
        assert!(err.to_string().contains("publish.dist: missing"), "{err}");
        let err =
            parse(&format!("{BASE}[publish.runtime_config]\nfiles = [\"../x.js\"]\nstack = \"m\"\n")).unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
    }

    #[test]
    fn the_sample_monorepo_publishes_its_frontend() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/monorepo/pipeline.toml");
        let config = PublishConfig::from_config(&ConfigFile::load(&path).unwrap()).unwrap().unwrap();
        assert_eq!((config.component.as_str(), config.dist.to_str()), ("frontend", Some("frontend/dist")));
        assert_eq!(config.bucket, ValueSource::Output { stack: "master".into(), output: "SiteBucketName".into() });
        let runtime = config.runtime_config.as_ref().unwrap();
        assert_eq!(runtime.files, ["aws-config.js"]);
        assert_eq!(config.headers("assets/app.0a1b2c3d.js").cache_control, IMMUTABLE);
        assert_eq!(config.headers("index.html").cache_control, NO_CACHE);
    }

    #[test]
    fn a_nested_runtime_config_takes_outputs_of_several_stacks() {
        let config = parse(&format!(
            "{BASE}[publish.runtime_config]\nfiles = [\"assets/aws-config.js\", \"aws-config.json\"]\nstack = \"auth\"\nregion_key = \"region\"\n\
             [publish.runtime_config.keys.Auth.Cognito]\nuserPoolId = \"UserPoolId\"\nuserPoolClientId = \"UserPoolClientId\"\n\
             [publish.runtime_config.keys.API.REST]\nendpoint = \"api.ApiEndpoint\"\n"
        ))
        .unwrap()
        .unwrap();
        let runtime = config.runtime_config.as_ref().unwrap();
        let stack = |outputs: &[(&str, &str)]| run_state::DeployedStack {
            stack_name: "s".into(),
            region: "eu-west-1".into(),
            stack_id: None,
            outputs: outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let mut outputs = run_state::StackOutputs {
            environments: BTreeMap::from([(
                "dev".to_string(),
                BTreeMap::from([
                    ("auth".to_string(), stack(&[("UserPoolId", "eu-west-1_abc"), ("UserPoolClientId", "client")])),
                    ("api".to_string(), stack(&[("ApiEndpoint", "https://api.example.com")])),
                ]),
            )]),
        };
        let files = crate::runtime_config_files(runtime, Path::new("."), &outputs, "dev").unwrap();
        let json: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "API": { "REST": { "endpoint": "https://api.example.com" } },
                "Auth": { "Cognito": { "userPoolClientId": "client", "userPoolId": "eu-west-1_abc" } },
                "region": "eu-west-1"
            })
        );
        let js = String::from_utf8(files[0].1.clone()).unwrap();
        assert!(js.starts_with("window.AWS_CONFIG = {") && js.contains("\"Cognito\": {"), "{js}");
        // A missing output names itself and its stack.
        outputs.environments.get_mut("dev").unwrap().get_mut("api").unwrap().outputs.clear();
        let error = crate::runtime_config_files(runtime, Path::new("."), &outputs, "dev").unwrap_err().to_string();
        assert!(error.contains("ApiEndpoint") && error.contains("api"), "{error}");
    }
}
