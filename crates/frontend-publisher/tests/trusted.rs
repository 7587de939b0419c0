//! What a publish must never do, through the binary against moto: sign prod's calls with the
//! pipeline's own credentials (prod lives in another account, reached through its role, in its
//! region), publish a runtime config holding a secret, or publish a dotfile or a source map
//! under a link's name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use aws_target::{AssumeRole, Target};
use run_state::{DeployedStack, FileStore, RunDir, StackOutputs, Status, Step, StepRecord, Store};

mod support;
use support::{distribution, keys};

const BIN: &str = env!("CARGO_BIN_EXE_frontend-publisher");
const PROD_ROLE: &str = "arn:aws:iam::111111111111:role/site-deploy";
const PROD_REGION: &str = "eu-west-1";

/// A monorepo in a temp folder: `pipeline.toml` as given, a built site, one run whose diff
/// changed `frontend`, validate passed, and stack outputs for `env`.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new(config: &str, env: &str, outputs: &[(&str, &str)]) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.toml"), config).unwrap();
        let repo = Repo { dir };
        let dist = repo.dist();
        std::fs::create_dir_all(dist.join("assets")).unwrap();
        std::fs::write(dist.join("index.html"), "<script src=\"aws-config.js\"></script>").unwrap();
        std::fs::write(dist.join("assets/app.v1.js"), "console.log(1)").unwrap();
        std::fs::write(dist.join("assets/app.v1.js.map"), "{\"sources\": []}").unwrap();
        std::fs::write(dist.join(".env.production"), "DB_PASSWORD=Zx9qP2mK7vL4wR8tYb3N\n").unwrap();
        let run = RunDir::create(&repo.root().join(".pipeline"), "run-1").unwrap();
        let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"frontend\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
        run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
        let stack = DeployedStack {
            stack_name: format!("site-{env}"),
            region: PROD_REGION.into(),
            stack_id: None,
            outputs: outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let outputs = StackOutputs {
            environments: BTreeMap::from([(env.to_string(), BTreeMap::from([("master".to_string(), stack)]))]),
        };
        outputs.merge_into(&run).unwrap();
        repo.store()
            .record(&StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
            .unwrap();
        repo
    }

    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    fn dist(&self) -> PathBuf {
        self.root().join("dist")
    }

    fn store(&self) -> FileStore {
        FileStore::open(&self.root().join(".pipeline")).unwrap()
    }

    /// `frontend-publisher publish --env ENV` with the pipeline's own (test) credentials and
    /// no region of its own: only the config may name one.
    fn publish(&self, env: &str, endpoint: &str) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(["publish", "--env", env, "--endpoint-url", endpoint])
            .arg("--repo")
            .arg(self.root())
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
        test_support::only_test_credentials(&mut command).output().unwrap()
    }

    fn deploy_record(&self) -> StepRecord {
        let records = self.store().run("run-1").unwrap();
        records
            .into_iter()
            .rev()
            .find(|r| r.component == "frontend" && r.step == Step::Deploy)
            .expect("a deploy record")
    }
}

fn site_config(bucket: &str, distribution: Option<&str>, keys: &str) -> String {
    let distribution = distribution.map(|d| format!("distribution = \"{d}\"\n")).unwrap_or_default();
    format!(
        "[publish]\ncomponent = \"frontend\"\ndist = \"dist\"\nbucket = \"{bucket}\"\n{distribution}\
         [publish.runtime_config]\nfiles = [\"aws-config.js\"]\nstack = \"master\"\nkeys = {{ {keys} }}\nregion_key = \"region\"\n\n\
         [deploy]\nartifact_bucket = \"artifacts-{{env}}\"\n[deploy.stacks.master]\ntemplate = \"cfn/master.yaml\"\nstack_name = \"site-{{env}}\"\ncomponents = [\"frontend\"]\n\
         [deploy.environments.dev]\nregion = \"us-east-1\"\n\
         [deploy.environments.prod]\nregion = \"{PROD_REGION}\"\nrole_arn = \"{PROD_ROLE}\"\nexternal_id = \"site-ext\"\n"
    )
}

/// SDK config for moto as the pipeline (`role`: None) or as prod's role, assumed.
async fn sdk(role: Option<&str>, region: &str) -> aws_config::SdkConfig {
    let moto = test_support::Moto::shared();
    let target = Target {
        endpoint_url: Some(moto.endpoint.clone()),
        region: Some(region.into()),
        profile: None,
        assume_role: role.map(|role_arn| AssumeRole {
            role_arn: role_arn.into(),
            external_id: Some("site-ext".into()),
            session_name: "test".into(),
        }),
        external_id: None,
    };
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).test_credentials();
    aws_target::load_with(&target, loader).await.unwrap()
}

/// `publish --env prod` reaches prod the way the stack deployer does: prod's role assumed (with
/// its external id), in prod's region. Every S3 and CloudFront call is signed with the keys STS
/// issued for the role, none with the pipeline's own; the objects and the invalidation are in
/// prod's account.
#[test]
fn publishing_to_prod_signs_every_call_with_prods_role_in_prods_region() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = "trusted-prod-site";
    let prod = runtime.block_on(sdk(Some(PROD_ROLE), PROD_REGION));
    let (s3, cloudfront) = (aws_target::s3(&prod, None), aws_target::cloudfront(&prod, None));
    let distribution = runtime.block_on(async {
        let who = aws_target::identity(&prod).await.unwrap();
        assert_eq!(who.account, "111111111111", "moto's STS gives the role's account");
        s3.create_bucket()
            .bucket(bucket)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        distribution(&cloudfront, bucket).await
    });
    let repo = Repo::new(
        &site_config(bucket, Some(&distribution), "apiEndpoint = \"ApiEndpoint\""),
        "prod",
        &[("ApiEndpoint", "https://api.example.com")],
    );
    let relay = test_support::Relay::start(&test_support::Moto::shared().endpoint);

    // The first publish, then a changed page (whose cached copies are invalidated).
    let out = repo.publish("prod", &relay.endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(repo.dist().join("index.html"), "<script src=\"aws-config.js\"></script><p>v2</p>").unwrap();
    let out = repo.publish("prod", &relay.endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let issued = relay.issued_keys();
    assert_eq!(issued.len(), 2, "one AssumeRole per process: {issued:?}");
    assert!(issued.iter().all(|k| k.starts_with("ASIA")), "{issued:?}");
    let signatures = relay.signatures();
    let by = |service: &str| signatures.iter().filter(|s| s.service == service).collect::<Vec<_>>();
    // The pipeline's own keys sign the AssumeRole only, in prod's region.
    assert_eq!(
        by("sts").iter().map(|s| (s.key.as_str(), s.region.as_str())).collect::<Vec<_>>(),
        [("testing", PROD_REGION); 2],
        "{signatures:?}"
    );
    let s3_calls = by("s3");
    assert!(s3_calls.len() >= 6, "lists, puts, manifests: {signatures:?}");
    assert!(s3_calls.iter().all(|s| issued.contains(&s.key) && s.region == PROD_REGION), "{signatures:?}");
    let cloudfront_calls = by("cloudfront");
    assert!(!cloudfront_calls.is_empty(), "the invalidation: {signatures:?}");
    assert!(cloudfront_calls.iter().all(|s| issued.contains(&s.key)), "{signatures:?}");
    assert!(signatures.iter().all(|s| issued.contains(&s.key) || s.service == "sts"), "{signatures:?}");

    // What prod's account holds: the site, and the invalidation of its distribution.
    runtime.block_on(async {
        let mut objects = keys(&s3, bucket).await;
        objects.sort();
        assert!(objects.contains(&"index.html".to_string()) && objects.contains(&"aws-config.js".to_string()));
        assert!(!objects.iter().any(|k| k.ends_with(".map") || k.contains(".env")), "{objects:?}");
        let invalidations = cloudfront.list_invalidations().distribution_id(&distribution).send().await.unwrap();
        assert_eq!(invalidations.invalidation_list().map(|l| l.quantity()), Some(1));
    });
    assert_eq!(repo.deploy_record().status, Status::Passed);
}

/// A runtime config that would carry a secret (a stack output fed from a NoEcho parameter) is
/// refused before anything is uploaded: exit 1, recorded failed, the secret printed nowhere.
#[test]
fn a_secret_in_the_runtime_config_refuses_the_publish() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = "trusted-secret-site";
    let dev = runtime.block_on(sdk(None, "us-east-1"));
    let s3 = aws_target::s3(&dev, None);
    runtime.block_on(s3.create_bucket().bucket(bucket).send()).unwrap();
    let secret = "Zx9qP2mK7vL4wR8tYb3N";
    let repo = Repo::new(
        &site_config(bucket, None, "apiEndpoint = \"ApiEndpoint\", dbPassword = \"DbPassword\""),
        "dev",
        &[("ApiEndpoint", "https://api.example.com"), ("DbPassword", secret)],
    );

    let out = repo.publish("dev", &test_support::Moto::shared().endpoint);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("the runtime config would publish a secret"), "{stderr}");
    assert!(stderr.contains("aws-config.js"), "{stderr}");
    assert!(!stderr.contains(secret) && !String::from_utf8_lossy(&out.stdout).contains(secret));
    assert!(runtime.block_on(keys(&s3, bucket)).is_empty(), "nothing uploaded");
    let record = repo.deploy_record();
    assert_eq!(record.status, Status::Failed);
    assert!(record.details.error.as_deref().unwrap_or_default().contains("would publish a secret"));
    let state = std::fs::read_to_string(repo.root().join(".pipeline/state.jsonl")).unwrap();
    assert!(!state.contains(secret), "the store keeps no secret");
}

/// Links in dist are resolved: a link to a dotfile or a source map is refused (the rules for
/// names apply to the target), and nothing is uploaded; a link to an ordinary file inside dist
/// is published under its own name.
#[test]
fn a_link_to_a_dotfile_or_a_source_map_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = "trusted-link-site";
    let dev = runtime.block_on(sdk(None, "us-east-1"));
    let s3 = aws_target::s3(&dev, None);
    runtime.block_on(s3.create_bucket().bucket(bucket).send()).unwrap();
    let repo = Repo::new(
        &site_config(bucket, None, "apiEndpoint = \"ApiEndpoint\""),
        "dev",
        &[("ApiEndpoint", "https://api.example.com")],
    );
    let dist = repo.dist();
    let endpoint = &test_support::Moto::shared().endpoint;

    for (link, target, what) in
        [("config.json", ".env.production", "an .env file"), ("bundle.js", "assets/app.v1.js.map", "a source map")]
    {
        let _ = std::fs::remove_file(dist.join("config.json"));
        let _ = std::fs::remove_file(dist.join("bundle.js"));
        std::os::unix::fs::symlink(target, dist.join(link)).unwrap();
        let out = repo.publish("dev", endpoint);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(&format!("{link} links to")) && stderr.contains(what), "{stderr}");
        assert!(runtime.block_on(keys(&s3, bucket)).is_empty(), "nothing uploaded for {link}");
        assert_eq!(repo.deploy_record().status, Status::Failed);
    }

    // A link to an ordinary file inside dist is fine.
    std::fs::remove_file(dist.join("bundle.js")).unwrap();
    std::os::unix::fs::symlink("assets/app.v1.js", dist.join("latest.js")).unwrap();
    let out = repo.publish("dev", endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let objects = runtime.block_on(keys(&s3, bucket));
    assert!(objects.contains(&"latest.js".to_string()), "{objects:?}");
    assert!(!objects.iter().any(|k| k.contains(".env") || k.ends_with(".map")), "{objects:?}");
}
