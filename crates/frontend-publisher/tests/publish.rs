//! Publishing against moto through the real SDK clients: first publish, republish after a
//! fresh checkout, one changed asset, a header-only change, retention, a fault midway, bad
//! inputs, the site check, and the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use frontend_publisher::{CheckOptions, Clients, Error, PublishConfig, StageOptions, Summary};
use run_state::{DeployedStack, FileStore, RunDir, StackOutputs, StageContext, Status, Step, Store};

mod support;
use support::{distribution, keys};

/// A monorepo in a temp folder with a `[publish]` section for `bucket` and a built site.
struct Repo {
    dir: tempfile::TempDir,
    runs: usize,
}

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache, no-store, must-revalidate";

fn config_text(bucket: &str, css_cache: &str) -> String {
    format!(
        "[publish]\ncomponent = \"frontend\"\ndist = \"dist\"\nbucket = \"{bucket}\"\n\
         headers = [{{ glob = \"assets/*.css\", cache_control = \"{css_cache}\" }}, {{ glob = \"assets/**\", cache_control = \"{IMMUTABLE}\" }}, {{ glob = \"**/*.html\", cache_control = \"{NO_CACHE}\" }}]\n\
         [publish.runtime_config]\nfiles = [\"aws-config.js\"]\nstack = \"master\"\nkeys = {{ apiEndpoint = \"ApiEndpoint\", userPoolId = \"UserPoolId\" }}\nregion_key = \"region\"\n"
    )
}

impl Repo {
    fn new(bucket: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.toml"), config_text(bucket, IMMUTABLE)).unwrap();
        let repo = Repo { dir, runs: 0 };
        repo.build("v1", &["one", "two"]);
        repo
    }

    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    fn dist(&self) -> PathBuf {
        self.root().join("dist")
    }

    /// Writes a site: `index.html` referencing `assets/app.VERSION.js` and one stylesheet
    /// per name, plus a source map and an `.env` file that must never be published.
    fn build(&self, version: &str, styles: &[&str]) {
        let dist = self.dist();
        let _ = std::fs::remove_dir_all(&dist);
        std::fs::create_dir_all(dist.join("assets")).unwrap();
        let mut html = String::from("<!doctype html><script src=\"aws-config.js\"></script>");
        html.push_str(&format!("<script type=\"module\" src=\"assets/app.{version}.js\"></script>"));
        std::fs::write(dist.join(format!("assets/app.{version}.js")), format!("console.log('{version}')")).unwrap();
        std::fs::write(dist.join(format!("assets/app.{version}.js.map")), "{}").unwrap();
        for style in styles {
            html.push_str(&format!("<link rel=\"stylesheet\" href=\"assets/{style}.css\">"));
            std::fs::write(dist.join(format!("assets/{style}.css")), format!("body {{ --{style}: 1 }}")).unwrap();
        }
        std::fs::write(dist.join("index.html"), html).unwrap();
        std::fs::write(dist.join(".env.local"), "SECRET=1").unwrap();
    }

    fn context(&self) -> StageContext {
        StageContext::open(&run_state::StageOptions { repo: Some(self.root()), ..Default::default() }).unwrap()
    }

    fn new_run(&mut self) -> RunDir {
        self.runs += 1;
        let context = self.context();
        let run = RunDir::create(&context.state_dir, &format!("run-{}", self.runs)).unwrap();
        outputs(&[("ApiEndpoint", "https://api.example.com"), ("UserPoolId", "us-east-1_abc")])
            .merge_into(&run)
            .unwrap();
        frontend_changed(&run, &self.store());
        run
    }

    fn store(&self) -> FileStore {
        self.context().file_store().unwrap()
    }

    async fn publish(&mut self, s3: &aws_sdk_s3::Client) -> Result<Summary, Error> {
        self.publish_with(s3, false).await
    }

    async fn publish_with(&mut self, s3: &aws_sdk_s3::Client, force: bool) -> Result<Summary, Error> {
        let run = self.new_run();
        let options = StageOptions { environment: "dev".into(), force, ..Default::default() };
        run_stage(&self.context(), &run, &self.store(), Clients { s3, cloudfront: None }, &options).await
    }

    fn last_record(&self) -> run_state::StepRecord {
        let run = format!("run-{}", self.runs);
        self.store().run(&run).unwrap().into_iter().find(|r| r.step == Step::Deploy).unwrap()
    }
}

/// What the earlier stages leave for a publish: a diff marking `frontend` changed, and the
/// pipeline's validate passed (the default [gate] requires it before any deploy).
/// The publish stage of `run`, as the binary runs it, with a cancel flag nothing sets.
async fn run_stage(
    context: &run_state::StageContext,
    run: &RunDir,
    store: &dyn run_state::Store,
    clients: Clients<'_>,
    options: &StageOptions,
) -> Result<Summary, Error> {
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let inputs = run_state::StageInputs::new(context, run, store, &cancel);
    frontend_publisher::run_stage(&inputs, clients, options, &|_| {}).await
}

fn frontend_changed(run: &RunDir, store: &dyn run_state::Store) {
    diff_with(run, store, true);
}

fn diff_with(run: &RunDir, store: &dyn run_state::Store, changed: bool) {
    let diff = format!(
        "{{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {{\"frontend\": {{\"changed\": {changed}, \"files\": [], \"because_of\": []}}}}, \"flags\": {{}}}}"
    );
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let validated = run_state::StepRecord::new(&run.run_id, "abc", run_state::PIPELINE, Step::Validate, Status::Passed);
    store.record(&validated).unwrap();
}

fn outputs(values: &[(&str, &str)]) -> StackOutputs {
    let stack = DeployedStack {
        stack_name: "app-dev".into(),
        region: "eu-west-1".into(),
        stack_id: None,
        outputs: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    StackOutputs { environments: BTreeMap::from([("dev".into(), BTreeMap::from([("master".into(), stack)]))]) }
}

async fn clients(counter: Option<&aws_target::RequestCounter>) -> aws_sdk_s3::Client {
    let config = test_support::Moto::shared().sdk_config().await;
    aws_target::s3(&config, counter)
}

async fn bucket(s3: &aws_sdk_s3::Client, name: &str) -> String {
    s3.create_bucket().bucket(name).send().await.unwrap();
    name.to_owned()
}

async fn body(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let out = s3.get_object().bucket(bucket).key(key).send().await.unwrap();
    String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
}

fn touch_all(dir: &Path) {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            touch_all(&path);
        } else {
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        }
    }
}

#[tokio::test]
async fn publishes_only_what_changed_and_keeps_what_retained_releases_reference() {
    let counter = aws_target::RequestCounter::default();
    let s3 = clients(Some(&counter)).await;
    let bucket = bucket(&s3, "fp-retention").await;
    let mut repo = Repo::new(&bucket);

    // First publish: every file, with its headers; the source map and .env stay home.
    let first = repo.publish(&s3).await.unwrap();
    assert_eq!((first.uploaded, first.unchanged, first.deleted), (5, 0, 0), "{first:?}");
    let (mut kept, mut published): (Vec<String>, Vec<String>) =
        keys(&s3, &bucket).await.into_iter().partition(|k| k.starts_with(".publish/kept/"));
    published.sort();
    kept.sort();
    // Kept for a rollback: the release's file list and a copy of each file that is not
    // immutable (the HTML and the runtime config, which the next release overwrites).
    assert_eq!(kept.iter().filter(|k| k.starts_with(".publish/kept/blobs/")).count(), 2, "{kept:?}");
    assert_eq!(kept.iter().filter(|k| k.starts_with(".publish/kept/releases/")).count(), 1, "{kept:?}");
    assert_eq!(
        published,
        [
            ".publish/releases.json",
            "assets/app.v1.js",
            "assets/one.css",
            "assets/two.css",
            "aws-config.js",
            "index.html"
        ]
    );
    let js = s3.head_object().bucket(&bucket).key("assets/app.v1.js").send().await.unwrap();
    assert_eq!(js.cache_control(), Some(IMMUTABLE));
    assert_eq!(js.content_type(), Some("text/javascript; charset=utf-8"));
    let html = s3.head_object().bucket(&bucket).key("index.html").send().await.unwrap();
    assert_eq!((html.cache_control(), html.content_type()), (Some(NO_CACHE), Some("text/html; charset=utf-8")));
    let config = body(&s3, &bucket, "aws-config.js").await;
    assert!(config.starts_with("window.AWS_CONFIG = {"), "{config}");
    assert!(
        config.contains("\"apiEndpoint\": \"https://api.example.com\"") && config.contains("\"region\": \"eu-west-1\"")
    );
    let record = repo.last_record();
    assert_eq!((record.component.as_str(), record.status), ("frontend", Status::Passed));
    let summary: Summary = repo.context().run_dir(None).unwrap().read_json(run_state::RunFile::Publish).unwrap();
    assert_eq!(summary, first);

    // A fresh checkout: every mtime changes, no content does. Nothing is uploaded or headed.
    touch_all(&repo.dist());
    counter.reset();
    let second = repo.publish(&s3).await.unwrap();
    assert_eq!((second.uploaded, second.header_fixes, second.unchanged), (0, 0, 5), "{second:?}");
    assert_eq!(
        counter.count(|op| op == "PutObject"),
        2,
        "the manifest and the kept file list: {:?}",
        counter.snapshot()
    );
    assert_eq!(counter.count(|op| op == "CopyObject"), 0, "the copies are kept already: {:?}", counter.snapshot());
    assert_eq!(counter.count(|op| op == "HeadObject"), 0, "{:?}", counter.snapshot());

    // One asset changed (a new hashed name): that asset and the HTML; the old one is kept.
    repo.build("v2", &["one", "two"]);
    let third = repo.publish(&s3).await.unwrap();
    assert_eq!((third.uploaded, third.kept, third.deleted), (2, 1, 0), "{third:?}");
    assert!(keys(&s3, &bucket).await.contains(&"assets/app.v1.js".to_owned()));

    // Another release: v1's asset is in neither of the last two releases and goes.
    repo.build("v3", &["one", "two"]);
    let fourth = repo.publish(&s3).await.unwrap();
    assert_eq!((fourth.uploaded, fourth.kept, fourth.deleted), (2, 1, 1), "{fourth:?}");
    let now = keys(&s3, &bucket).await;
    assert!(!now.contains(&"assets/app.v1.js".to_owned()) && now.contains(&"assets/app.v2.js".to_owned()), "{now:?}");
}

#[tokio::test]
async fn a_header_only_change_is_a_copy_not_an_upload() {
    let counter = aws_target::RequestCounter::default();
    let s3 = clients(Some(&counter)).await;
    let bucket = bucket(&s3, "fp-headers").await;
    let mut repo = Repo::new(&bucket);
    repo.publish(&s3).await.unwrap();

    std::fs::write(repo.root().join("pipeline.toml"), config_text(&bucket, "public, max-age=600")).unwrap();
    counter.reset();
    let summary = repo.publish(&s3).await.unwrap();
    assert_eq!((summary.uploaded, summary.header_fixes), (0, 2), "{summary:?}");
    // Two header fixes, and a kept copy of each of the two files that are no longer immutable
    // (a rollback must be able to put them back).
    assert_eq!(counter.count(|op| op == "CopyObject"), 4, "{:?}", counter.snapshot());
    assert_eq!(
        counter.count(|op| op == "PutObject"),
        2,
        "the manifest and the kept file list: {:?}",
        counter.snapshot()
    );
    let css = s3.head_object().bucket(&bucket).key("assets/one.css").send().await.unwrap();
    assert_eq!(css.cache_control(), Some("public, max-age=600"));
    assert_eq!(css.content_type(), Some("text/css; charset=utf-8"));
    assert_eq!(body(&s3, &bucket, "assets/one.css").await, "body { --one: 1 }");
}

/// Fails every `PutObject` after the first `allowed`.
#[derive(Debug, Clone)]
struct FailPutsAfter {
    allowed: usize,
    seen: Arc<AtomicUsize>,
}

impl Intercept for FailPutsAfter {
    fn name(&self) -> &'static str {
        "FailPutsAfter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Metadata>().is_some_and(|m| m.name() == "PutObject")
            && self.seen.fetch_add(1, Ordering::SeqCst) >= self.allowed
        {
            return Err("injected fault: the network went away".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failure_midway_leaves_the_previous_site_whole() {
    let s3 = clients(None).await;
    let bucket = bucket(&s3, "fp-fault").await;
    let mut repo = Repo::new(&bucket);
    repo.publish(&s3).await.unwrap();
    let old_html = body(&s3, &bucket, "index.html").await;

    // A release with many new assets; the third upload fails.
    let styles: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    repo.build("v2", &styles.iter().map(String::as_str).collect::<Vec<_>>());
    let config = test_support::Moto::shared().sdk_config().await;
    let faulty = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .interceptor(FailPutsAfter { allowed: 3, seen: Arc::default() })
            .build(),
    );
    let error = repo.publish(&faulty).await.unwrap_err();
    assert!(matches!(error, Error::S3 { op: "PutObject", .. }), "{error}");
    let record = repo.last_record();
    assert_eq!(record.status, Status::Failed);
    assert!(record.details.error.unwrap().starts_with("PutObject s3://fp-fault/"));

    // The old page is still served, and everything it references is there.
    assert_eq!(body(&s3, &bucket, "index.html").await, old_html);
    for path in ["assets/app.v1.js", "assets/one.css", "assets/two.css", "aws-config.js"] {
        assert!(old_html.contains(path));
        s3.head_object().bucket(&bucket).key(path).send().await.unwrap_or_else(|e| panic!("{path}: {e:?}"));
    }

    // The next publish finishes the job.
    let summary = repo.publish(&s3).await.unwrap();
    assert!(summary.uploaded >= 9, "{summary:?}");
    assert!(body(&s3, &bucket, "index.html").await.contains("app.v2.js"));
}

#[tokio::test]
async fn a_large_delete_is_refused_without_force() {
    let s3 = clients(None).await;
    let bucket = bucket(&s3, "fp-share").await;
    for i in 0..10 {
        s3.put_object().bucket(&bucket).key(format!("old/{i}.html")).body(b"x".to_vec().into()).send().await.unwrap();
    }
    let mut repo = Repo::new(&bucket);
    let error = repo.publish(&s3).await.unwrap_err();
    assert!(error.to_string().contains("would delete 10 of the bucket's 10 objects"), "{error}");
    assert!(error.to_string().ends_with("or pass --force"), "{error}");
    assert_eq!(keys(&s3, &bucket).await.len(), 10, "nothing published or deleted");
    let summary = repo.publish_with(&s3, true).await.unwrap();
    assert_eq!(summary.deleted, 10);
}

#[tokio::test]
async fn bad_inputs_are_one_line_errors_and_change_nothing() {
    let s3 = clients(None).await;
    let bucket = bucket(&s3, "fp-bad").await;
    let mut repo = Repo::new(&bucket);

    std::fs::remove_dir_all(repo.dist()).unwrap();
    let error = repo.publish(&s3).await.unwrap_err();
    assert!(
        error.to_string().ends_with("does not exist or is not a folder; build the site first, or fix publish.dist")
    );
    assert_eq!(repo.last_record().status, Status::Failed);

    std::fs::create_dir_all(repo.dist().join("assets")).unwrap();
    std::fs::write(repo.dist().join(".env"), "X=1").unwrap();
    let error = repo.publish(&s3).await.unwrap_err();
    assert!(matches!(error, Error::EmptyDist { .. }), "{error}");

    repo.build("v1", &["one"]);
    std::os::unix::fs::symlink("/etc/hostname", repo.dist().join("assets/host.txt")).unwrap();
    let error = repo.publish(&s3).await.unwrap_err();
    assert!(error.to_string().contains("outside the dist folder"), "{error}");
    std::fs::remove_file(repo.dist().join("assets/host.txt")).unwrap();

    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(repo.dist().join(name), "x").unwrap();
        let error = repo.publish(&s3).await.unwrap_err();
        assert!(error.to_string().contains("`caf\\xe9.txt` in dist is not UTF-8"), "{error}");
        std::fs::remove_file(repo.dist().join(name)).unwrap();
    }

    std::fs::write(repo.dist().join("a\nb.txt"), "x").unwrap();
    let error = repo.publish(&s3).await.unwrap_err();
    assert!(matches!(error, Error::BadName { .. }), "{error}");
    std::fs::remove_file(repo.dist().join("a\nb.txt")).unwrap();

    // A config mistake is recorded as the deploy step's failure.
    let good = std::fs::read_to_string(repo.root().join("pipeline.toml")).unwrap();
    std::fs::write(repo.root().join("pipeline.toml"), good.replace("dist = \"dist\"", "dist = \"../dist\"")).unwrap();
    let error = repo.publish(&s3).await.unwrap_err();
    assert!(error.to_string().contains("publish.dist: must be a folder inside the monorepo"), "{error}");
    let record = repo.last_record();
    assert_eq!((record.component.as_str(), record.status), (run_state::PIPELINE, Status::Failed));
    std::fs::write(repo.root().join("pipeline.toml"), good).unwrap();

    // A stack output the runtime config needs.
    let run = repo.new_run();
    outputs(&[("ApiEndpoint", "https://api.example.com")]).merge_into(&run).unwrap();
    let error = run_stage(
        &repo.context(),
        &run,
        &repo.store(),
        Clients { s3: &s3, cloudfront: None },
        &StageOptions { environment: "dev".into(), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "stack `app-dev` (`master` in `dev`) has no output `UserPoolId`; add it to the template's Outputs or fix the name"
    );

    // A bucket that does not exist.
    std::fs::write(repo.root().join("pipeline.toml"), config_text("fp-no-such-bucket", IMMUTABLE)).unwrap();
    let error = repo.publish(&s3).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "bucket `fp-no-such-bucket` does not exist; fix publish.bucket, or deploy the stack that creates it first"
    );
    assert!(keys(&s3, &bucket).await.is_empty(), "nothing was published by any of these");
}

#[tokio::test]
async fn the_site_check_catches_a_wrong_content_type_and_a_published_source_map() {
    let s3 = clients(None).await;
    let bucket = bucket(&s3, "fp-check").await;
    let mut repo = Repo::new(&bucket);
    repo.publish(&s3).await.unwrap();
    s3.put_public_access_block()
        .bucket(&bucket)
        .public_access_block_configuration(
            aws_sdk_s3::types::PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let config = PublishConfig::from_config(&repo.context().config).unwrap().unwrap();
    let clean = frontend_publisher::check_site(&s3, CheckOptions { bucket: &bucket, config: &config }).await.unwrap();
    assert!(clean.is_empty(), "{clean:?}");

    s3.copy_object()
        .bucket(&bucket)
        .key("assets/one.css")
        .copy_source(format!("{bucket}/assets/one.css"))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .content_type("text/plain")
        .cache_control(IMMUTABLE)
        .send()
        .await
        .unwrap();
    s3.put_object().bucket(&bucket).key("assets/app.v1.js.map").body(b"{}".to_vec().into()).send().await.unwrap();
    s3.put_object().bucket(&bucket).key("aws-config.js").body(
        b"window.AWS_CONFIG = { key: \"AKIAIOSFODNN7EXAMPLF\", secret: \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\" };".to_vec().into(),
    ).send().await.unwrap();
    let findings =
        frontend_publisher::check_site(&s3, CheckOptions { bucket: &bucket, config: &config }).await.unwrap();
    let found: Vec<(&str, &str)> = findings.iter().map(|f| (f.path.as_str(), f.rule.as_str())).collect();
    assert!(found.contains(&("s3://fp-check/assets/one.css", "P003")), "{found:?}");
    assert!(found.contains(&("s3://fp-check/assets/app.v1.js.map", "P005")), "{found:?}");
    assert!(
        found.iter().any(|(path, rule)| *path == "s3://fp-check/aws-config.js" && rule.starts_with('S')),
        "{found:?}"
    );
    assert!(findings.iter().all(|f| !f.message.contains("AKIAIOSFODNN7EXAMPLF")));
}

#[test]
fn the_binary_prints_a_dry_run_then_publishes() {
    let moto = test_support::Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(clients(None));
    let bucket = runtime.block_on(bucket(&s3, "fp-binary"));
    let mut repo = Repo::new(&bucket);
    repo.new_run();
    let run = |extra: &[&str]| binary(moto, &repo, &[&["publish", "--env", "dev"], extra].concat());
    let dry = run(&["--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let text = String::from_utf8(dry.stdout).unwrap();
    assert!(text.contains("upload      assets/app.v1.js"), "{text}");
    assert!(text.contains("left-out    .env.local") && text.contains("a source map"), "{text}");
    assert!(runtime.block_on(keys(&s3, &bucket)).is_empty());

    let out = run(&["--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Summary = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary.uploaded, 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("uploaded index.html"));

    // The check: a bucket that does not block public access is an error finding (exit 1).
    let check = binary(moto, &repo, &["check", "--env", "dev"]);
    assert_eq!(check.status.code(), Some(1), "{}", String::from_utf8_lossy(&check.stderr));
    let report = String::from_utf8(check.stdout).unwrap();
    assert!(report.contains("P007"), "{report}");

    std::fs::write(repo.root().join("pipeline.toml"), config_text("fp-binary-missing", IMMUTABLE)).unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("frontend-publisher: bucket `fp-binary-missing` does not exist"), "{stderr}");
}

#[tokio::test]
async fn changed_html_is_invalidated_with_the_root_and_immutable_assets_are_not() {
    let config = test_support::Moto::shared().sdk_config().await;
    let s3 = aws_target::s3(&config, None);
    let cloudfront = aws_target::cloudfront(&config, None);
    let bucket = bucket(&s3, "fp-invalidate").await;
    let id = distribution(&cloudfront, &bucket).await;
    let mut repo = Repo::new(&bucket);
    let text = config_text(&bucket, IMMUTABLE).replace(
        "[publish.runtime_config]",
        &format!("distribution = \"{id}\"\ninvalidation_wait = \"10s\"\n[publish.runtime_config]"),
    );
    std::fs::write(repo.root().join("pipeline.toml"), text).unwrap();
    let publish = |repo: &mut Repo| {
        let run = repo.new_run();
        let (context, store) = (repo.context(), repo.store());
        let (s3, cloudfront) = (s3.clone(), cloudfront.clone());
        async move {
            let options = StageOptions { environment: "dev".into(), ..Default::default() };
            let clients = Clients { s3: &s3, cloudfront: Some(&cloudfront) };
            run_stage(&context, &run, &store, clients, &options).await
        }
    };
    // A first publish replaces nothing a cache can hold.
    let first = publish(&mut repo).await.unwrap();
    assert_eq!(first.invalidation, None);

    repo.build("v2", &["one", "two"]);
    let second = publish(&mut repo).await.unwrap();
    let invalidation = second.invalidation.expect("an invalidation");
    assert_eq!(invalidation.paths, ["/", "/index.html"]);
    assert!(invalidation.completed, "moto says {}", invalidation.status);
}

mod recorded {
    //! Recorded responses shaped like AWS's (aws-smithy-mocks): moto never answers
    //! `TooManyInvalidationsInProgress`, says `COMPLETED` where AWS says `Completed`
    //! after `InProgress`, enforces no IAM (so never denies access) and never throttles.

    use std::time::Duration;

    use aws_sdk_cloudfront::operation::create_invalidation::{CreateInvalidationError, CreateInvalidationOutput};
    use aws_sdk_cloudfront::operation::get_invalidation::GetInvalidationOutput;
    use aws_sdk_cloudfront::types::Invalidation;
    use aws_sdk_cloudfront::types::error::TooManyInvalidationsInProgress;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    fn invalidation(status: &str) -> Invalidation {
        Invalidation::builder()
            .id("I2J0I21PCUYOIK")
            .status(status)
            .create_time(aws_smithy_types::DateTime::from_secs(0))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn too_many_in_progress_is_waited_out_and_completion_is_waited_for() {
        let busy = || {
            mock!(aws_sdk_cloudfront::Client::create_invalidation).then_error(|| {
            CreateInvalidationError::TooManyInvalidationsInProgress(
                TooManyInvalidationsInProgress::builder()
                    .message("Processing your request will cause you to exceed the maximum number of in-progress wildcard invalidations.")
                    .meta(ErrorMetadata::builder().code("TooManyInvalidationsInProgress").build())
                    .build(),
            )
        })
        };
        let created = mock!(aws_sdk_cloudfront::Client::create_invalidation)
            .then_output(|| CreateInvalidationOutput::builder().invalidation(invalidation("InProgress")).build());
        let running = mock!(aws_sdk_cloudfront::Client::get_invalidation)
            .then_output(|| GetInvalidationOutput::builder().invalidation(invalidation("InProgress")).build());
        let done = mock!(aws_sdk_cloudfront::Client::get_invalidation)
            .then_output(|| GetInvalidationOutput::builder().invalidation(invalidation("Completed")).build());
        let (busy1, busy2) = (busy(), busy());
        let client =
            mock_client!(aws_sdk_cloudfront, RuleMode::Sequential, [&busy1, &busy2, &created, &running, &done]);
        let retries = std::sync::Mutex::new(0);
        let summary = frontend_publisher::invalidate(
            &client,
            "E2QWRUHAPOMQZL",
            "run-7",
            &["/index.html".to_owned(), "/".to_owned()],
            Duration::from_millis(10),
            Some(Duration::from_secs(20)),
            &|event| {
                if let frontend_publisher::Event::Retrying { kind, .. } = event {
                    assert_eq!(kind, aws_target::ErrorKind::Throttled);
                    *retries.lock().unwrap() += 1;
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(*retries.lock().unwrap(), 2);
        assert_eq!((summary.status.as_str(), summary.completed), ("Completed", true));
        assert_eq!(done.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_wait_is_bounded() {
        let created = mock!(aws_sdk_cloudfront::Client::create_invalidation)
            .then_output(|| CreateInvalidationOutput::builder().invalidation(invalidation("InProgress")).build());
        let running = mock!(aws_sdk_cloudfront::Client::get_invalidation)
            .then_output(|| GetInvalidationOutput::builder().invalidation(invalidation("InProgress")).build());
        let client = mock_client!(aws_sdk_cloudfront, RuleMode::MatchAny, [&created, &running]);
        let summary = frontend_publisher::invalidate(
            &client,
            "E2QWRUHAPOMQZL",
            "run-8",
            &["/*".to_owned()],
            Duration::from_millis(10),
            Some(Duration::from_millis(700)),
            &|_| {},
        )
        .await
        .unwrap();
        assert_eq!((summary.status.as_str(), summary.completed), ("InProgress", false));
        assert!(running.num_calls() >= 1);
    }

    fn site(dir: &std::path::Path) -> (frontend_publisher::PublishConfig, frontend_publisher::Site) {
        std::fs::create_dir_all(dir.join("dist")).unwrap();
        std::fs::write(dir.join("dist/app.js"), "console.log(1)").unwrap();
        let text = "[publish]\ncomponent = \"web\"\ndist = \"dist\"\nbucket = \"site\"\n";
        let config = pipeline_config::ConfigFile::from_text("pipeline.toml".as_ref(), text);
        let config = frontend_publisher::PublishConfig::from_config(&config).unwrap().unwrap();
        let site = frontend_publisher::read_site(&config, &dir.join("dist"), Vec::new()).unwrap();
        (config, site)
    }

    #[tokio::test]
    async fn access_denied_names_the_call_and_what_to_do() {
        use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
        let dir = tempfile::tempdir().unwrap();
        let (_, site) = site(dir.path());
        let denied = mock!(aws_sdk_s3::Client::list_objects_v2).then_error(|| {
            ListObjectsV2Error::generic(ErrorMetadata::builder().code("AccessDenied").message("Access Denied").build())
        });
        let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&denied]);
        let error = frontend_publisher::read_remote(&s3, "site", "", &site, 4, &|_| {}).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "ListObjectsV2 s3://site/: access denied; the role needs the permission named in the error"
        );
    }

    #[tokio::test]
    async fn a_throttled_upload_is_tried_again() {
        use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
        let dir = tempfile::tempdir().unwrap();
        let (_, site) = site(dir.path());
        let plan = frontend_publisher::plan("site", "", "run-1", 2, "index.html", site, &Default::default());
        let put = mock!(aws_sdk_s3::Client::put_object)
            .sequence()
            .error(|| {
                PutObjectError::generic(
                    ErrorMetadata::builder().code("SlowDown").message("Please reduce your request rate.").build(),
                )
            })
            .output(|| PutObjectOutput::builder().e_tag("\"abc\"").build())
            .output(|| PutObjectOutput::builder().e_tag("\"def\"").build())
            .build();
        let s3 = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&put]);
        let options = frontend_publisher::ApplyOptions::default();
        let summary = frontend_publisher::apply(&s3, None, plan, &options, None, &|_| {}).await.unwrap();
        assert_eq!(summary.uploaded, 1);
        assert_eq!(put.num_calls(), 3, "SlowDown, the asset again, the manifest");
    }
}

#[tokio::test]
async fn a_multipart_object_is_compared_by_its_sha256_from_the_manifest_or_its_metadata() {
    let counter = aws_target::RequestCounter::default();
    let s3 = clients(Some(&counter)).await;
    let bucket = bucket(&s3, "fp-multipart").await;
    let mut repo = Repo::new(&bucket);
    let text = config_text(&bucket, IMMUTABLE)
        .replace("[publish.runtime_config]", "multipart_threshold_mib = 5\n[publish.runtime_config]");
    std::fs::write(repo.root().join("pipeline.toml"), text).unwrap();
    let big: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(repo.dist().join("assets/video.0123abcd.mp4"), &big).unwrap();

    let first = repo.publish(&s3).await.unwrap();
    assert_eq!(first.uploaded, 6);
    assert_eq!(counter.count(|op| op == "UploadPart"), 2, "{:?}", counter.snapshot());
    let head = s3.head_object().bucket(&bucket).key("assets/video.0123abcd.mp4").send().await.unwrap();
    assert!(head.e_tag().unwrap().contains('-'), "a multipart ETag: {:?}", head.e_tag());
    assert_eq!(head.content_length(), Some(big.len() as i64));
    assert_eq!(head.content_type(), Some("video/mp4"));

    // Without the manifest, the object's own sha256 metadata says it is unchanged.
    s3.delete_object().bucket(&bucket).key(frontend_publisher::MANIFEST_KEY).send().await.unwrap();
    touch_all(&repo.dist());
    counter.reset();
    let second = repo.publish(&s3).await.unwrap();
    assert_eq!((second.uploaded, second.unchanged), (0, 6), "{second:?}");
    assert_eq!(counter.count(|op| op == "HeadObject"), 6, "{:?}", counter.snapshot());

    // With the manifest back, nothing is headed.
    counter.reset();
    let third = repo.publish(&s3).await.unwrap();
    assert_eq!((third.uploaded, third.unchanged), (0, 6), "{third:?}");
    assert_eq!(counter.count(|op| op == "HeadObject"), 0, "{:?}", counter.snapshot());
}

/// `frontend-publisher ARGS` on the repository, in moto's us-east-1, with the test keys only.
fn binary(moto: &test_support::Moto, repo: &Repo, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_frontend-publisher"));
    command
        .args(args)
        .args(["--region", "us-east-1", "--endpoint-url", &moto.endpoint])
        .args(["--repo".as_ref(), repo.root().as_os_str()]);
    test_support::only_test_credentials(&mut command).output().unwrap()
}

/// The run's prod-deploy record.
fn prod_record(store: &dyn Store, run: &RunDir) -> run_state::StepRecord {
    let records = store.run(&run.run_id).unwrap();
    records.into_iter().find(|r| r.step == Step::ProdDeploy).expect("prod recorded")
}

/// The deploy decision, asked by the publisher itself: an unchanged frontend and a frontend
/// whose test failed are skipped with the reason and nothing is uploaded; a prod publish while
/// dev failed is refused through the binary (exit 1, recorded failed, nothing uploaded).
#[test]
fn the_publisher_asks_the_deploy_decision_itself() {
    let moto = test_support::Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(clients(None));
    let bucket = runtime.block_on(bucket(&s3, "fp-decision"));
    let mut repo = Repo::new(&bucket);
    let store = repo.store();
    let publish = |repo: &Repo, run: &RunDir| {
        let options = StageOptions { environment: "dev".into(), ..Default::default() };
        let clients = Clients { s3: &s3, cloudfront: None };
        runtime.block_on(run_stage(&repo.context(), run, &store, clients, &options))
    };

    let unchanged = repo.new_run();
    diff_with(&unchanged, &store, false);
    let summary = publish(&repo, &unchanged).unwrap();
    assert_eq!(summary.skipped.as_deref(), Some("frontend did not change in this run"));
    assert_eq!(repo.last_record().status, Status::Skipped);

    let failed_test = repo.new_run();
    let mut test = run_state::StepRecord::new(&failed_test.run_id, "abc", "frontend", Step::Test, Status::Failed);
    test.details.error = Some("exit 1".into());
    store.record(&test).unwrap();
    let summary = publish(&repo, &failed_test).unwrap();
    assert_eq!(summary.skipped.as_deref(), Some("frontend is refused: its test failed: exit 1"));
    let record = repo.last_record();
    assert_eq!((record.status, record.details.note.as_deref()), (Status::Skipped, summary.skipped.as_deref()));
    assert!(runtime.block_on(keys(&s3, &bucket)).is_empty(), "nothing uploaded");

    // prod is promoted after dev with approval; dev's publish of this run failed.
    let text = std::fs::read_to_string(repo.root().join("pipeline.toml")).unwrap();
    let gated = format!("{text}[gate.environments.prod]\nafter = \"dev\"\napproval = true\n");
    std::fs::write(repo.root().join("pipeline.toml"), gated).unwrap();
    let run = repo.new_run();
    let mut dev = run_state::StepRecord::new(&run.run_id, "abc", "frontend", Step::Deploy, Status::Failed);
    dev.details.error = Some("bucket gone".into());
    store.record(&dev).unwrap();
    gate::approval::approve(&store, &run.run_id, "alice", None).unwrap();
    let out = binary(moto, &repo, &["publish", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "frontend-publisher: publishing to `prod` is refused: before promotion: frontend deploy failed: bucket gone; "
        ),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let prod = prod_record(&store, &run);
    assert_eq!((prod.component.as_str(), prod.status), ("frontend", Status::Failed));
    assert!(runtime.block_on(keys(&s3, &bucket)).is_empty(), "nothing uploaded");

    // A run (from a commit) whose site was never published to dev, only another component
    // deployed there, then approved: the site is refused for prod, saying what to do, and
    // nothing is uploaded.
    let never = repo.new_run();
    let diff = std::fs::read_to_string(never.file(run_state::RunFile::Diff)).unwrap();
    never
        .write(run_state::RunFile::Diff, diff.replace("\"worktree\": true", "\"worktree\": false").as_bytes())
        .unwrap();
    store.record(&run_state::StepRecord::new(&never.run_id, "abc", "infra", Step::Deploy, Status::Passed)).unwrap();
    gate::approval::approve(&store, &never.run_id, "alice", None).unwrap();
    let out = binary(moto, &repo, &["publish", "--env", "prod"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let prod = prod_record(&store, &never);
    assert_eq!((prod.component.as_str(), prod.status), ("frontend", Status::Skipped));
    assert_eq!(
        prod.details.note.as_deref(),
        Some(
            "frontend is refused: it was never deployed to `dev` in this run; deploy it to `dev` first (a preview is no deploy)"
        )
    );
    assert!(runtime.block_on(keys(&s3, &bucket)).is_empty(), "nothing uploaded");
}
