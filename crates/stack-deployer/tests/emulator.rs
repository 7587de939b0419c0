//! Deploys against the moto emulator through the real SDK clients: create, update, unchanged
//! without a change set, a change set with nothing to change deleted, artifacts skipped when
//! present, nested stacks with rewritten URLs, Lambda code updated only when it changed, a
//! lock refused, a missing bucket caught before any stack changes.

use std::path::Path;
use std::time::Duration;

use aws_target::RequestCounter;
use base64::Engine as _;
use lambda_packager::{Architecture, Entry, LambdaSettings, Manifest, Package, archive};
use pipeline_config::ConfigFile;
use run_state::{FileStore, StageOutcome, Store};
use stack_deployer::stage::Locks;
use stack_deployer::{ApplyOptions, Clients, DeploySettings, Error, Plan, PlanInputs, Report, StackOutcome};

struct Fixture {
    repo: tempfile::TempDir,
    state: tempfile::TempDir,
    store: FileStore,
    bucket: String,
    prefix: String,
    counter: RequestCounter,
    clients: Clients,
}

async fn fixture(name: &str) -> Fixture {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let counter = RequestCounter::default();
    let clients = Clients {
        s3: aws_target::s3(&config, Some(&counter)),
        cloudformation: aws_target::cloudformation(&config, Some(&counter)),
        lambda: aws_target::lambda(&config, Some(&counter)),
    };
    let prefix = format!("sd-{name}-{}", std::process::id());
    let bucket = format!("{prefix}-artifacts");
    clients.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let store = FileStore::open(state.path()).unwrap();
    Fixture { repo: tempfile::tempdir().unwrap(), state, store, bucket, prefix, counter, clients }
}

impl Fixture {
    fn write(&self, path: &str, text: &str) {
        let full = self.repo.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// `[deploy]` with the fixture's bucket, then `rest` (stacks, `[lambda]`).
    fn config(&self, rest: &str) -> ConfigFile {
        let text = format!("[deploy]\nartifact_bucket = \"{}\"\nkey_prefix = \"deploys\"\n\n{rest}", self.bucket);
        ConfigFile::from_text(&self.repo.path().join("pipeline.toml"), &text)
    }

    fn plan(&self, rest: &str, manifest: Option<&Manifest>) -> Plan {
        let config = self.config(rest);
        let env = DeploySettings::from_config(&config).unwrap().environment(&config, "dev").unwrap();
        let functions = LambdaSettings::from_config(&config).map(|(_, f)| f).unwrap();
        let inputs = PlanInputs { repo: self.repo.path(), manifest, functions: &functions, changed: None, only: &[] };
        stack_deployer::plan(&env, inputs, &|_| None).unwrap()
    }

    async fn deploy(&self, plan: &Plan, holder: &str) -> Result<Report, Error> {
        let mut options = ApplyOptions::new(
            &stack_deployer::apply::change_set_name(&[
                holder,
                &format!(
                    "{:?}",
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                ),
            ]),
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        options.first_poll = Duration::from_millis(50);
        options.max_poll = Duration::from_millis(400);
        let locks = Locks { store: &self.store, holder, ttl: Duration::from_secs(600) };
        stack_deployer::deploy(plan, &self.clients, 2, Some(locks), &options, &|_| None, &|_| {}).await
    }

    async fn status(&self, stack: &str) -> Option<String> {
        stack_deployer::apply::describe_stack(&self.clients.cloudformation, stack)
            .await
            .unwrap()
            .and_then(|s| s.stack_status().map(|s| s.as_str().to_string()))
    }

    /// Change sets left on the stack. AWS removes a stack's change sets once one is executed;
    /// moto keeps the executed one listed, so executed change sets are not counted.
    async fn change_sets(&self, stack: &str) -> usize {
        let out = self.clients.cloudformation.list_change_sets().stack_name(stack).send().await.unwrap();
        out.summaries()
            .iter()
            // moto may list other stacks' change sets too.
            .filter(|s| s.stack_name() == Some(stack))
            .filter(|s| s.execution_status() != Some(&aws_sdk_cloudformation::types::ExecutionStatus::ExecuteComplete))
            .count()
    }
}

const TOPIC: &str = "Parameters:\n  Label:\n    Type: String\nResources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      DisplayName: !Ref Label\n";

fn outcome(report: &Report, stack: &str) -> StackOutcome {
    report.stacks.iter().find(|s| s.name == stack).unwrap().outcome.clone()
}

#[tokio::test]
async fn create_then_unchanged_without_a_change_set_then_update() {
    let fx = fixture("cycle").await;
    fx.write("cfn/topic.yaml", TOPIC);
    let stacks = |label: &str| {
        format!(
            "[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{}-topic\"\nparameters = {{ Label = \"{label}\" }}\ntags = {{ team = \"a\" }}\n",
            fx.prefix
        )
    };
    let name = format!("{}-topic", fx.prefix);

    let report = fx.deploy(&fx.plan(&stacks("one"), None), "run-1").await.unwrap();
    assert!(matches!(outcome(&report, "topic"), StackOutcome::Deployed { .. }), "{}", report.summary());
    assert_eq!(fx.status(&name).await.as_deref(), Some("CREATE_COMPLETE"));
    assert_eq!(report.exit_code(), 0);
    assert!(report.stacks[0].stack_id.as_deref().is_some_and(|id| id.starts_with("arn:")));

    // Unchanged: no change set, at most 3 read calls for the stack.
    fx.counter.reset();
    let report = fx.deploy(&fx.plan(&stacks("one"), None), "run-2").await.unwrap();
    assert_eq!(outcome(&report, "topic"), StackOutcome::Unchanged, "{}", report.summary());
    let calls = fx.counter.snapshot();
    let cloudformation: u64 = calls.iter().filter(|(op, _)| op.starts_with("CloudFormation.")).map(|(_, n)| n).sum();
    assert!(cloudformation <= 3, "{calls:?}");
    assert!(!calls.keys().any(|op| op.ends_with("ChangeSet")), "{calls:?}");
    assert_eq!(fx.change_sets(&name).await, 0);

    // A new parameter value updates the stack through one change set, which is gone after.
    let report = fx.deploy(&fx.plan(&stacks("two"), None), "run-3").await.unwrap();
    assert!(matches!(outcome(&report, "topic"), StackOutcome::Deployed { .. }), "{}", report.summary());
    assert_eq!(fx.status(&name).await.as_deref(), Some("UPDATE_COMPLETE"));
    let deployed = stack_deployer::apply::describe_stack(&fx.clients.cloudformation, &name).await.unwrap().unwrap();
    assert_eq!(deployed.parameters()[0].parameter_value(), Some("two"));
    // The lock was given back: another run may deploy.
    fx.store.acquire_lock(&format!("deploy/us-east-1/{name}"), "someone else", Duration::from_secs(60)).unwrap();
}

#[tokio::test]
async fn a_change_set_with_nothing_to_change_is_a_success_and_is_deleted() {
    let fx = fixture("noop").await;
    fx.write("cfn/topic.yaml", TOPIC);
    let stacks = format!(
        "[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{}-topic\"\nparameters = {{ Label = \"one\" }}\n",
        fx.prefix
    );
    let name = format!("{}-topic", fx.prefix);
    fx.deploy(&fx.plan(&stacks, None), "run-1").await.unwrap();
    // Tags changed outside the deployer: the unchanged check cannot skip the change set, and
    // CloudFormation finds nothing to change in the template.
    let plan = fx.plan(&stacks, None);
    let mut tagged = plan.clone();
    tagged.stacks[0].tags.insert("extra".into(), "x".into());
    let report = fx.deploy(&tagged, "run-2").await.unwrap();
    let result = outcome(&report, "topic");
    assert_eq!(result, StackOutcome::NoChanges, "{}", report.summary());
    let listed = fx.clients.cloudformation.list_change_sets().stack_name(&name).send().await.unwrap();
    assert_eq!(fx.change_sets(&name).await, 0, "no change set is left behind: {} {listed:?}", report.summary());
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test]
async fn nested_stacks_go_up_under_content_addressed_urls_and_are_not_uploaded_twice() {
    let fx = fixture("nested").await;
    fx.write(
        "cfn/parent.yaml",
        "Resources:\n  Child:\n    Type: AWS::CloudFormation::Stack\n    Properties:\n      TemplateURL: ./child/queue.yaml\n      Parameters:\n        Label: from-parent\n",
    );
    fx.write("cfn/child/queue.yaml", TOPIC);
    let stacks =
        format!("[deploy.stacks.parent]\ntemplate = \"cfn/parent.yaml\"\nstack_name = \"{}-parent\"\n", fx.prefix);
    let plan = fx.plan(&stacks, None);
    assert_eq!(plan.artifacts.len(), 1);
    let key = &plan.artifacts[0].key;
    let report = fx.deploy(&plan, "run-1").await.unwrap();
    assert!(matches!(outcome(&report, "parent"), StackOutcome::Deployed { .. }), "{}", report.summary());
    assert_eq!((report.uploaded, report.present), (1, 0));
    // The child template is in the bucket under its hash, and the nested stack exists.
    let object = fx.clients.s3.head_object().bucket(&fx.bucket).key(key).send().await.unwrap();
    assert_eq!(object.metadata().unwrap()["sha256"], plan.artifacts[0].sha256);
    let child = fx
        .clients
        .cloudformation
        .describe_stack_resource()
        .stack_name(format!("{}-parent", fx.prefix))
        .logical_resource_id("Child")
        .send()
        .await
        .unwrap();
    let child_id = child.stack_resource_detail().unwrap().physical_resource_id().unwrap().to_string();
    assert_eq!(fx.status(&child_id).await.as_deref(), Some("CREATE_COMPLETE"));

    // Again: the artifact is there already (HEAD, no PUT) and the stack is unchanged.
    fx.counter.reset();
    let report = fx.deploy(&fx.plan(&stacks, None), "run-2").await.unwrap();
    assert_eq!(outcome(&report, "parent"), StackOutcome::Unchanged);
    assert_eq!((report.uploaded, report.present), (0, 1));
    assert_eq!(fx.counter.count(|op| op == "PutObject"), 0, "{:?}", fx.counter.snapshot());
}

fn package(dir: &Path, name: &str, body: &str, changed: bool) -> Package {
    let source = dir.join(format!("{name}.py"));
    std::fs::write(&source, format!("def handler(event, context):\n    return {body:?}\n")).unwrap();
    let bytes = std::fs::read(&source).unwrap();
    let entry = Entry {
        zip_path: "index.py".into(),
        source: source.clone(),
        mode: 0o644,
        size: bytes.len() as u64,
        sha256: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes)).into(),
    };
    let path = dir.join(format!("{name}-{body}.zip"));
    let written = archive::write_zip(&path, &[entry], None).unwrap();
    Package {
        name: name.into(),
        path,
        code_sha256: base64::engine::general_purpose::STANDARD.encode(written.sha256),
        sha256: hex::encode(written.sha256),
        size: written.size,
        unzipped_size: bytes.len() as u64,
        files: 1,
        runtime: "python3.12".into(),
        architecture: Architecture::X86_64,
        input_hash: String::new(),
        reused: false,
        changed,
    }
}

#[tokio::test]
async fn lambda_code_is_updated_only_when_its_package_changed() {
    let fx = fixture("code").await;
    let zips = tempfile::tempdir().unwrap();
    fx.write("src/fn/index.py", "def handler(event, context):\n    return 1\n");
    let template = format!(
        "Resources:\n  Role:\n    Type: AWS::IAM::Role\n    Properties:\n      AssumeRolePolicyDocument:\n        Version: '2012-10-17'\n        Statement:\n          - Effect: Allow\n            Principal: {{Service: lambda.amazonaws.com}}\n            Action: sts:AssumeRole\n  Fn:\n    Type: AWS::Lambda::Function\n    Properties:\n      FunctionName: {}-fn\n      Runtime: python3.12\n      Handler: index.handler\n      Role: !GetAtt Role.Arn\n      Code:\n        S3Bucket: {}\n        S3Key: fixed/fn.zip\n",
        fx.prefix, fx.bucket
    );
    fx.write("cfn/app.yaml", &template);
    let rest = format!(
        "[deploy.stacks.app]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"{}-app\"\ncapabilities = [\"CAPABILITY_IAM\"]\n\n[lambda.functions.fn]\nsources = [\"src/fn\"]\ntemplate = \"cfn/app.yaml\"\nresource = \"Fn\"\n",
        fx.prefix
    );
    let v1 = package(zips.path(), "fn", "one", true);
    // The template's fixed key holds v1, as an earlier pipeline left it.
    fx.clients
        .s3
        .put_object()
        .bucket(&fx.bucket)
        .key("fixed/fn.zip")
        .body(std::fs::read(&v1.path).unwrap().into())
        .send()
        .await
        .unwrap();
    let function = format!("{}-fn", fx.prefix);
    let code_sha = || async {
        fx.clients
            .lambda
            .get_function_configuration()
            .function_name(&function)
            .send()
            .await
            .unwrap()
            .code_sha256()
            .unwrap()
            .to_string()
    };

    let manifest = Manifest { packages: vec![v1.clone()] };
    let report = fx.deploy(&fx.plan(&rest, Some(&manifest)), "run-1").await.unwrap();
    assert!(matches!(outcome(&report, "app"), StackOutcome::Deployed { .. }), "{}", report.summary());
    assert!(report.stacks[0].code_updated.is_empty(), "v1 is what the function runs");
    assert_eq!(code_sha().await, v1.code_sha256);

    // v2: the stack is unchanged, the function's code is updated from its content-addressed key.
    let v2 = package(zips.path(), "fn", "two", true);
    let manifest = Manifest { packages: vec![v2.clone()] };
    let report = fx.deploy(&fx.plan(&rest, Some(&manifest)), "run-2").await.unwrap();
    assert_eq!(outcome(&report, "app"), StackOutcome::Unchanged, "{}", report.summary());
    assert_eq!(report.stacks[0].code_updated, ["fn"]);
    assert_eq!(code_sha().await, v2.code_sha256);

    // The package did not change in this run's diff: Lambda is not even asked.
    let manifest = Manifest { packages: vec![package(zips.path(), "fn", "two", false)] };
    fx.counter.reset();
    let report = fx.deploy(&fx.plan(&rest, Some(&manifest)), "run-3").await.unwrap();
    assert!(report.stacks[0].code_updated.is_empty());
    assert_eq!(
        fx.counter.snapshot().keys().filter(|op| op.starts_with("Lambda.")).count(),
        0,
        "{:?}",
        fx.counter.snapshot()
    );
}

#[tokio::test]
async fn a_held_lock_refuses_the_deploy_naming_its_holder() {
    let fx = fixture("lock").await;
    fx.write("cfn/topic.yaml", TOPIC);
    let stacks = format!(
        "[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{}-topic\"\nparameters = {{ Label = \"x\" }}\n",
        fx.prefix
    );
    let name = format!("{}-topic", fx.prefix);
    fx.store.acquire_lock(&format!("deploy/us-east-1/{name}"), "run other (ci:42)", Duration::from_secs(600)).unwrap();
    let error = fx.deploy(&fx.plan(&stacks, None), "run-mine").await.unwrap_err();
    assert!(
        error.to_string().starts_with(&format!("`deploy/us-east-1/{name}` is locked by run other (ci:42) since ")),
        "{error}"
    );
    assert_eq!(fx.status(&name).await, None, "nothing was deployed");
    drop(fx.state);
}

#[tokio::test]
async fn a_missing_bucket_is_caught_before_any_stack_changes() {
    let fx = fixture("nobucket").await;
    fx.write("cfn/topic.yaml", TOPIC);
    let stacks = format!(
        "[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{}-topic\"\nparameters = {{ Label = \"x\" }}\n",
        fx.prefix
    );
    let mut plan = fx.plan(&stacks, None);
    plan.bucket = format!("{}-missing", fx.prefix);
    let error = fx.deploy(&plan, "run-1").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the artifact bucket `{}-missing` does not exist (or is in another account); create it or fix deploy.artifact_bucket",
            fx.prefix
        )
    );
    assert_eq!(fx.status(&format!("{}-topic", fx.prefix)).await, None);
}
