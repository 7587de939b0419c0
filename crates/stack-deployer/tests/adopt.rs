//! A repository adopted as it is (`fixtures/adopt`): a master template nesting its stacks by
//! S3 URL built from a parameter, functions reading their code from fixed keys, and a function
//! shipping another component's build output. Packaged through lambda-packager's stage and
//! deployed through the `stack-deployer` binary against the emulator; the tests read what AWS
//! holds after each step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use run_state::{FileStore, RunDir, Status, Step, StepRecord, Store};

mod support;
use support::{deployer, text};

/// The fixture in a fresh git repository, its names made unique to this test.
fn adopted(tag: &str) -> (test_support::GitRepo, String) {
    let repo = test_support::GitRepo::new();
    test_support::copy_tree(&test_support::workspace_root().join("fixtures/adopt"), repo.path());
    let prefix = format!("t{}{tag}", std::process::id());
    let toml = std::fs::read_to_string(repo.path().join("pipeline.toml")).unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), toml.replace("\"adopt-", &format!("\"{prefix}-adopt-"))).unwrap();
    repo.commit_all("adopted repository");
    (repo, format!("{prefix}-adopt"))
}

/// The adopted fixture's components.
const ADOPT_COMPONENTS: [&str; 4] = ["api-handler", "frontend", "frontend-builder", "infra"];

fn diff_json(head: &str, all: &[&str], changed: &[&str]) -> String {
    let components: Vec<String> = all
        .iter()
        .map(|c| format!("\"{c}\": {{\"changed\": {}, \"files\": [], \"because_of\": []}}", changed.contains(c)))
        .collect();
    format!(
        "{{\"base\": null, \"base_reason\": \"test\", \"head\": \"{head}\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {{{}}}, \"flags\": {{}}}}",
        components.join(", ")
    )
}

/// A run of the adopted fixture whose diff marks `changed`, validated (the default gate requires it).
fn run(repo: &Path, id: &str, head: &str, changed: &[&str]) -> RunDir {
    run_of(repo, id, head, &ADOPT_COMPONENTS, changed)
}

/// A run whose diff lists `all` components and marks `changed`, validated.
fn run_of(repo: &Path, id: &str, head: &str, all: &[&str], changed: &[&str]) -> RunDir {
    let run = RunDir::create(&repo.join(".pipeline"), id).unwrap();
    run.write(run_state::RunFile::Diff, diff_json(head, all, changed).as_bytes()).unwrap();
    let store = FileStore::open(&repo.join(".pipeline")).unwrap();
    store.record(&StepRecord::new(id, head, run_state::PIPELINE, Step::Validate, Status::Passed)).unwrap();
    run
}

fn context(repo: &Path) -> run_state::StageContext {
    run_state::StageContext::open(&run_state::StageOptions { repo: Some(repo.to_path_buf()), ..Default::default() })
        .unwrap()
}

/// The packaging stage of the run, as the `lambda-packager` binary runs it; its events as lines.
fn package(repo: &Path, run: &RunDir) -> (Result<lambda_packager::Manifest, lambda_packager::Error>, Vec<String>) {
    let store = FileStore::open(&repo.join(".pipeline")).unwrap();
    let events = std::sync::Mutex::new(Vec::new());
    let context = context(repo);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let inputs = run_state::StageInputs::new(&context, run, &store, &cancel);
    let result = lambda_packager::run_stage(&inputs, &lambda_packager::StageOptions::default(), &|event| {
        if let lambda_packager::Event::NotPackaged { function, reason } = event {
            events.lock().unwrap().push(format!("{function} not packaged: {reason}"));
        }
    });
    (result.and_then(lambda_packager::Outcome::into_manifest), events.into_inner().unwrap())
}

struct Aws {
    s3: aws_sdk_s3::Client,
    cloudformation: aws_sdk_cloudformation::Client,
    lambda: aws_sdk_lambda::Client,
}

async fn aws() -> Aws {
    let config = test_support::Moto::shared().sdk_config().await;
    Aws {
        s3: aws_target::s3(&config, None),
        cloudformation: aws_target::cloudformation(&config, None),
        lambda: aws_target::lambda(&config, None),
    }
}

impl Aws {
    /// The physical id of a resource, down a path of logical ids from a stack.
    async fn physical(&self, stack: &str, path: &[&str]) -> String {
        let mut current = stack.to_string();
        for logical in path {
            let out = self
                .cloudformation
                .describe_stack_resource()
                .stack_name(&current)
                .logical_resource_id(*logical)
                .send()
                .await
                .unwrap();
            current = out.stack_resource_detail().unwrap().physical_resource_id().unwrap().to_string();
        }
        current
    }

    async fn code_sha256(&self, function: &str) -> String {
        let out = self.lambda.get_function_configuration().function_name(function).send().await.unwrap();
        out.code_sha256().unwrap().to_string()
    }

    /// The hex SHA-256 of an object's bytes, `None` when it does not exist.
    async fn object_sha256(&self, bucket: &str, key: &str) -> Option<String> {
        let object = self.s3.get_object().bucket(bucket).key(key).send().await.ok()?;
        let bytes = object.body.collect().await.unwrap().into_bytes();
        Some(hex::encode(sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))))
    }

    async fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self.s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
    }
}

fn records(repo: &Path, run: &str) -> Vec<StepRecord> {
    FileStore::open(&repo.join(".pipeline")).unwrap().run(run).unwrap()
}

/// The adopted repository's dry run: every S3 reference mapped to the repository, nested
/// templates under content-addressed keys, each zip to the key its template reads.
fn check_adopted_dry_run(plan: &str) {
    assert!(plan.contains("artifacts (6; each uploaded unless already there):"), "{plan}");
    assert!(plan.contains("  cfn/database-stack.yaml -> templates/database-stack-"), "{plan}");
    assert!(plan.contains("  cfn/lambda-stack.yaml -> templates/lambda-stack-"), "{plan}");
    assert!(plan.contains("  api-handler -> lambda/api-handler.zip ("), "{plan}");
    assert!(plan.contains("  frontend-builder -> lambda/frontend-builder.zip ("), "{plan}");
    assert!(
        plan.contains("    lambda code: api-handler (LambdaStack/ApiHandlerFunction) from lambda/api-handler-")
            && plan.contains("also uploaded to lambda/api-handler.zip, the key the template reads"),
        "{plan}"
    );
    assert!(plan.contains("    lambda code: frontend-builder (LambdaStack/FrontendBuilderFunction)"), "{plan}");
}

#[tokio::test]
async fn s3_url_nested_stacks_and_fixed_key_code_are_deployed_then_a_backend_change_updates_only_its_function() {
    let (repo, name) = adopted("a");
    let aws = aws().await;
    let bucket = format!("{name}-artifacts-dev");
    let stack = format!("{name}-dev");
    aws.s3.create_bucket().bucket(&bucket).send().await.unwrap();

    // First run: everything changed; the frontend's build ran first (step-runner's build).
    let status = Command::new("sh").arg("frontend/build.sh").current_dir(repo.path()).status().unwrap();
    assert!(status.success());
    let first = run(repo.path(), "run-1", &repo.head(), &["api-handler", "frontend", "frontend-builder", "infra"]);
    let (manifest, _) = package(repo.path(), &first);
    let manifest = manifest.unwrap();
    let package_of = |m: &lambda_packager::Manifest, f: &str| m.packages.iter().find(|p| p.name == f).unwrap().clone();
    let api_v1 = package_of(&manifest, "api-handler");
    let builder_v1 = package_of(&manifest, "frontend-builder");

    // The dry run maps every S3 reference to the repository: nested templates uploaded under
    // content-addressed keys, each zip to the key its template reads, code updated after.
    let out = deployer(repo.path(), &first, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    check_adopted_dry_run(&text(&out.stdout));
    assert!(aws.keys(&bucket).await.is_empty(), "a dry run uploads nothing");

    let out = deployer(repo.path(), &first, &[]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    // What AWS holds: both nested stacks, each zip at the key the template reads, and each
    // function running its package.
    let database = aws.physical(&stack, &["DatabaseStack"]).await;
    let nested = aws.cloudformation.describe_stacks().stack_name(&database).send().await.unwrap();
    assert_eq!(nested.stacks()[0].stack_status().map(|s| s.as_str()), Some("CREATE_COMPLETE"));
    let api = aws.physical(&stack, &["LambdaStack", "ApiHandlerFunction"]).await;
    let builder = aws.physical(&stack, &["LambdaStack", "FrontendBuilderFunction"]).await;
    assert_eq!(aws.object_sha256(&bucket, "lambda/api-handler.zip").await.as_deref(), Some(api_v1.sha256.as_str()));
    assert_eq!(
        aws.object_sha256(&bucket, "lambda/frontend-builder.zip").await.as_deref(),
        Some(builder_v1.sha256.as_str())
    );
    assert_eq!(aws.code_sha256(&api).await, api_v1.code_sha256);
    assert_eq!(aws.code_sha256(&builder).await, builder_v1.code_sha256);
    let deployed = records(repo.path(), "run-1");
    assert!(
        deployed.iter().any(|r| r.component == "infra" && r.step == Step::Deploy && r.status == Status::Passed),
        "{deployed:#?}"
    );

    // Second run: a backend-only change in a fresh clone, which has no frontend/dist.
    std::fs::remove_dir_all(repo.path().join("frontend/dist")).unwrap();
    repo.write(
        "lambda/rbac_middleware.py",
        "\"\"\"Role checks for the API handler.\"\"\"\n\nWRITERS = {\"admin\"}\n\n\ndef allowed(role, method):\n    return method == \"GET\" or role in WRITERS\n",
    );
    repo.commit_all("only admins write");
    let second = run(repo.path(), "run-2", &repo.head(), &["api-handler", "infra"]);
    let (manifest, events) = package(repo.path(), &second);
    let manifest = manifest.unwrap();
    assert_eq!(
        events,
        [
            "frontend-builder not packaged: its include `frontend/dist` (the output of `frontend`'s build) is not in this checkout, and it did not change: its deployed code stays as it is"
        ]
    );
    assert_eq!(manifest.packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["api-handler"]);
    let api_v2 = package_of(&manifest, "api-handler");
    assert_ne!(api_v2.sha256, api_v1.sha256);

    let out = deployer(repo.path(), &second, &[]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("code updated: api-handler\n"), "{}", text(&out.stdout));
    assert_eq!(aws.code_sha256(&api).await, api_v2.code_sha256);
    assert_eq!(aws.object_sha256(&bucket, "lambda/api-handler.zip").await.as_deref(), Some(api_v2.sha256.as_str()));
    // The function whose package the run does not have is left as it is.
    assert_eq!(aws.code_sha256(&builder).await, builder_v1.code_sha256);
    assert_eq!(
        aws.object_sha256(&bucket, "lambda/frontend-builder.zip").await.as_deref(),
        Some(builder_v1.sha256.as_str())
    );
}

#[tokio::test]
async fn a_template_url_that_maps_to_no_file_is_refused_before_anything_is_uploaded() {
    let (repo, name) = adopted("b");
    let aws = aws().await;
    let bucket = format!("{name}-artifacts-dev");
    aws.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let master = std::fs::read_to_string(repo.path().join("cfn/master.yaml")).unwrap();
    repo.write("cfn/master.yaml", &master.replace("cfn/database-stack.yaml", "cfn/db/nowhere.yaml"));
    repo.commit_all("a nested template the repository does not have");
    let status = Command::new("sh").arg("frontend/build.sh").current_dir(repo.path()).status().unwrap();
    assert!(status.success());
    let run = run(repo.path(), "run-1", &repo.head(), &["api-handler", "frontend", "frontend-builder", "infra"]);
    package(repo.path(), &run).0.unwrap();

    let out = deployer(repo.path(), &run, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "stack-deployer: cfn/master.yaml:16: DatabaseStack TemplateURL `https://s3.amazonaws.com/{bucket}/cfn/db/nowhere.yaml` has the key `cfn/db/nowhere.yaml`, and no tail of it is a file of the repository; map its key to the file with [deploy.artifacts] templates = {{ \"KEY\" = \"cfn/FILE.yaml\" }}, use a local path, or set [deploy.artifacts] allow_remote = true to deploy it as it is"
        )
    );
    assert!(aws.keys(&bucket).await.is_empty(), "nothing uploaded");
    let failed = records(repo.path(), "run-1");
    assert!(
        failed.iter().any(|r| r.component == "infra" && r.step == Step::Deploy && r.status == Status::Failed),
        "{failed:#?}"
    );
    let stacks = aws.cloudformation.describe_stacks().stack_name(format!("{name}-dev")).send().await;
    assert!(stacks.is_err(), "no stack was created");
}

/// Plans the fixture's dev deploy with `edit` applied to its pipeline.toml.
fn plan_with(edit: impl Fn(String) -> String) -> Result<stack_deployer::Plan, stack_deployer::Error> {
    let (repo, _) = adopted("p");
    let path = repo.path().join("pipeline.toml");
    let config = pipeline_config::ConfigFile::from_text(&path, &edit(std::fs::read_to_string(&path).unwrap()));
    let env = stack_deployer::DeploySettings::from_config(&config)?.environment(&config, "dev")?;
    let functions = lambda_packager::LambdaSettings::from_config(&config)?.1;
    let changed = BTreeSet::from(["infra".to_string()]);
    let inputs = stack_deployer::PlanInputs {
        repo: repo.path(),
        manifest: None,
        functions: &functions,
        changed: Some(&changed),
        only: &[],
    };
    stack_deployer::plan(&env, inputs, &|_| None)
}

#[test]
fn the_capability_check_sees_iam_resources_in_templates_nested_by_s3_url() {
    let error = plan_with(|toml| toml.replace("capabilities = [\"CAPABILITY_IAM\"]\n", "")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "deploy.stacks.master.capabilities: add \"CAPABILITY_IAM\" (cfn/lambda-stack.yaml: FunctionRole is AWS::IAM::Role)"
    );
}

#[test]
fn fixed_code_no_function_maps_is_refused_naming_the_resource_or_passed_with_a_warning_when_allowed() {
    // Without api-handler in [lambda.functions], the key `lambda/api-handler.zip` is no package.
    let without = |toml: String| {
        toml.replace(
            "[lambda.functions.api-handler]\nsources = [\"lambda/index.py\", \"lambda/rbac_middleware.py\"]\n",
            "",
        )
    };
    let error = plan_with(without).unwrap_err();
    assert!(
        error.to_string().starts_with(
            "cfn/lambda-stack.yaml:48: ApiHandlerFunction Code `s3://"
        ) && error.to_string().contains(
            "-adopt-artifacts-dev/lambda/api-handler.zip` names no function of [lambda.functions] (by `template` and `resource`, or by the zip's name); declare the function with `template = \"cfn/lambda-stack.yaml\"` and `resource = \"ApiHandlerFunction\"` in [lambda.functions.NAME]"
        ),
        "{error}"
    );
    let plan = plan_with(|toml| without(toml) + "\n[deploy.artifacts]\nallow_remote = true\n").unwrap();
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(
        plan.describe().contains("\nwarning: cfn/lambda-stack.yaml:48: ApiHandlerFunction Code `s3://"),
        "{}",
        plan.describe()
    );
}

#[test]
fn a_changed_function_whose_include_is_missing_names_the_build_that_writes_it() {
    let (repo, _) = adopted("c");
    let run = run(repo.path(), "run-1", &repo.head(), &["frontend-builder", "infra"]);
    let error = package(repo.path(), &run).0.unwrap_err();
    assert_eq!(
        error.to_string(),
        "function `frontend-builder`: include `frontend/dist` does not exist: it is the output of component `frontend`'s build (`sh frontend/build.sh`), which has not run in this checkout; run that build first (`step-runner --step build` builds `frontend` when it changed)"
    );
}

#[test]
fn an_include_built_by_a_component_without_a_build_command_is_refused_naming_the_key() {
    let (repo, _) = adopted("d");
    let toml = std::fs::read_to_string(repo.path().join("pipeline.toml")).unwrap();
    repo.write("pipeline.toml", &toml.replace("build = { run = \"sh frontend/build.sh\", timeout = \"1m\" }\n", ""));
    repo.commit_all("the frontend's build removed");
    let run = run(repo.path(), "run-1", &repo.head(), &["api-handler", "infra"]);
    let error = package(repo.path(), &run).0.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}:31: lambda.functions.frontend-builder.include: component `frontend` has no `build` command, so nothing in the pipeline writes `frontend/dist`; add its build, or name the component whose build writes it",
            repo.path().join("pipeline.toml").display()
        )
    );
}

// `fixtures/drs-monorepo` deployed in `fixed` mode: as its own buildspec intends (`aws s3 sync
// cfn/ lambda/`, then the master, then `update-function-code`), but only what changed.

/// The DRS fixture's functions (their zips' names in the templates' code keys), each with its
/// sources and the template and resource that read its code.
const DRS_FUNCTIONS: [(&str, &str, &str, &str); 5] = [
    ("api-handler", "\"lambda/index.py\", \"lambda/rbac_middleware.py\"", "cfn/api-stack.yaml", "ApiHandlerFunction"),
    ("orchestration", "\"lambda/orchestration.py\"", "cfn/orchestration-stack.yaml", "OrchestrationFunction"),
    ("execution-finder", "\"lambda/poller/execution_finder.py\"", "cfn/poller-stack.yaml", "ExecutionFinderFunction"),
    ("execution-poller", "\"lambda/poller/execution_poller.py\"", "cfn/poller-stack.yaml", "ExecutionPollerFunction"),
    ("frontend-builder", "\"lambda/build_and_deploy.py\"", "cfn/frontend-stack.yaml", "FrontendBuilderFunction"),
];

/// The master's nested stacks: the key each TemplateURL reads is the repository file's path.
const DRS_NESTED: [&str; 10] = [
    "cfn/database-stack.yaml",
    "cfn/messaging-stack.yaml",
    "cfn/iam-stack.yaml",
    "cfn/config-stack.yaml",
    "cfn/api-stack.yaml",
    "cfn/orchestration-stack.yaml",
    "cfn/poller-stack.yaml",
    "cfn/events-stack.yaml",
    "cfn/frontend-stack.yaml",
    "cfn/monitoring-stack.yaml",
];

fn drs_components() -> Vec<&'static str> {
    DRS_FUNCTIONS.iter().map(|f| f.0).chain(["frontend", "infra"]).collect()
}

/// `fixtures/drs-monorepo` in a fresh repository with a `pipeline.toml` deploying its master in
/// `fixed` mode to an artifact bucket of its own; the frontend built (its build output ships in
/// `frontend-builder`'s zip). Returns the repository and the bucket.
fn drs(tag: &str) -> (test_support::GitRepo, String) {
    let repo = test_support::GitRepo::new();
    test_support::copy_tree(&test_support::workspace_root().join("fixtures/drs-monorepo"), repo.path());
    let bucket = format!("t{}{tag}-drs-artifacts-dev", std::process::id());
    let mut toml = String::from(
        "[diff]\ndefault_branch = \"main\"\n\n[components.frontend]\npaths = [\"frontend/**\"]\nexclude = [\"frontend/dist/**\"]\nbuild = { run = \"sh frontend/build.sh\", timeout = \"1m\" }\n\n[components.infra]\npaths = [\"cfn/**\"]\ndepends_on = [\"api-handler\", \"orchestration\", \"execution-finder\", \"execution-poller\", \"frontend-builder\"]\n\n[lambda]\nruntime = \"python3.12\"\n",
    );
    for (name, sources, template, resource) in DRS_FUNCTIONS {
        toml.push_str(&format!("\n[components.{name}]\npaths = [{sources}]\n"));
        toml.push_str(&format!(
            "\n[lambda.functions.{name}]\nsources = [{sources}]\ntemplate = \"{template}\"\nresource = \"{resource}\"\n"
        ));
    }
    toml.push_str("include = [{ from = \"frontend/dist\", to = \"dist\", component = \"frontend\" }]\n");
    toml.push_str(&format!(
        "\n[deploy]\nartifact_bucket = \"{bucket}\"\n\n[deploy.stacks.master]\ntemplate = \"cfn/master.yaml\"\nstack_name = \"t{}{tag}-drs-{{env}}\"\nparameters = {{ Environment = \"{{env}}\", SourceBucket = \"{bucket}\" }}\ncapabilities = [\"CAPABILITY_IAM\"]\ncomponents = [\"infra\"]\nartifact_mode = \"fixed\"\n\n[deploy.environments.dev]\nregion = \"us-east-1\"\n",
        std::process::id()
    ));
    repo.write("pipeline.toml", &toml);
    repo.commit_all("DRS orchestration, deployed as its buildspec does");
    let status = Command::new("sh").arg("frontend/build.sh").current_dir(repo.path()).status().unwrap();
    assert!(status.success());
    (repo, bucket)
}

fn stderr_lines(out: &std::process::Output) -> BTreeSet<String> {
    text(&out.stderr).lines().map(str::to_string).collect()
}

/// The fixed-mode dry run: every nested template and zip at the key the templates read, nothing
/// under a content-addressed key, each function's code updated from its fixed key.
fn check_fixed_dry_run(repo: &Path, plan: &str) {
    assert!(plan.contains("artifacts (15; each uploaded unless already there):"), "{plan}");
    for nested in DRS_NESTED {
        let size = std::fs::metadata(repo.join(nested)).unwrap().len();
        assert!(plan.contains(&format!("  {nested} -> {nested} ({size} bytes, the key the template reads)")), "{plan}");
    }
    assert!(
        plan.contains("    artifact mode: fixed (10 nested template(s) and the functions' zips uploaded to the keys the templates read; a change set every deploy)"),
        "{plan}"
    );
    for (function, ..) in DRS_FUNCTIONS {
        assert!(plan.contains(&format!("  {function} -> lambda/{function}.zip (")), "{function}: {plan}");
        assert!(
            plan.contains(&format!("from lambda/{function}.zip when its CodeSha256 differs\n")),
            "{function}: {plan}"
        );
    }
    assert!(!plan.contains("templates/") && !plan.contains("also uploaded to"), "{plan}");
}

/// The master's logical id of the nested stack of a DRS template.
fn nested_stack_of(template: &str) -> &'static str {
    ["ApiStack", "OrchestrationStack", "PollerStack", "FrontendStack"][[
        "cfn/api-stack.yaml",
        "cfn/orchestration-stack.yaml",
        "cfn/poller-stack.yaml",
        "cfn/frontend-stack.yaml",
    ]
    .iter()
    .position(|t| *t == template)
    .unwrap()]
}

#[tokio::test]
async fn fixed_mode_uploads_to_the_keys_the_templates_read_and_updates_only_the_changed_function() {
    let (repo, bucket) = drs("f");
    let stack = format!("t{}f-drs-dev", std::process::id());
    let aws = aws().await;
    aws.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let all = drs_components();
    let first = run_of(repo.path(), "run-1", &repo.head(), &all, &all);
    let v1 = package(repo.path(), &first).0.unwrap();
    let package_of = |m: &lambda_packager::Manifest, f: &str| m.packages.iter().find(|p| p.name == f).unwrap().clone();

    // The dry run: every nested template and zip at the key the templates read, nothing under
    // a content-addressed key, each function's code updated from its fixed key.
    let out = deployer(repo.path(), &first, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    check_fixed_dry_run(repo.path(), &text(&out.stdout));
    assert!(aws.keys(&bucket).await.is_empty(), "a dry run uploads nothing");

    let out = deployer(repo.path(), &first, &[]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    // S3 holds exactly what the buildspec's sync would: the nested templates byte for byte and
    // the zips the packager wrote, at the keys the templates read.
    let mut expected: Vec<String> = DRS_NESTED.iter().map(|n| n.to_string()).collect();
    expected.extend(DRS_FUNCTIONS.iter().map(|f| format!("lambda/{}.zip", f.0)));
    expected.sort();
    // (The release record and the master's template it names live elsewhere in the bucket.)
    let synced: Vec<String> =
        aws.keys(&bucket).await.into_iter().filter(|k| k.starts_with("cfn/") || k.starts_with("lambda/")).collect();
    assert_eq!(synced, expected);
    for nested in DRS_NESTED {
        let ours = std::fs::read(repo.path().join(nested)).unwrap();
        let theirs = aws.s3.get_object().bucket(&bucket).key(nested).send().await.unwrap();
        assert!(theirs.body.collect().await.unwrap().into_bytes() == ours, "{nested} is not the repository's file");
    }
    // The master deployed as written: its TemplateURLs still name those keys.
    let deployed = aws.cloudformation.get_template().stack_name(&stack).send().await.unwrap();
    let body = deployed.template_body().unwrap();
    assert!(body.contains("https://s3.amazonaws.com/${SourceBucket}/cfn/database-stack.yaml"), "{body}");
    let mut physical = BTreeMap::new();
    for (function, _, template, resource) in DRS_FUNCTIONS {
        let name = aws.physical(&stack, &[nested_stack_of(template), resource]).await;
        assert_eq!(name, format!("drs-dev-{function}"));
        let package = package_of(&v1, function);
        assert_eq!(aws.object_sha256(&bucket, &format!("lambda/{function}.zip")).await, Some(package.sha256));
        assert_eq!(aws.code_sha256(&name).await, package.code_sha256, "{function}");
        physical.insert(function, name);
    }

    // One function changes; the run packages all five (every component marked changed, as a
    // full rebuild would): four zips are the same bytes, so only one object and one function's
    // code change.
    let source = std::fs::read_to_string(repo.path().join("lambda/orchestration.py")).unwrap();
    repo.commit_files("at most ten waves", &[("lambda/orchestration.py", &format!("{source}\nMAX_WAVES = 10\n"))]);
    let second = run_of(repo.path(), "run-2", &repo.head(), &all, &all);
    let v2 = package(repo.path(), &second).0.unwrap();
    assert_eq!(v2.packages.len(), 5);
    let out = deployer(repo.path(), &second, &[]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let lines = stderr_lines(&out);
    assert!(lines.contains(&format!("orchestration: code updated ({})", physical["orchestration"])), "{lines:#?}");
    assert!(lines.contains("uploaded lambda/orchestration.zip"), "{lines:#?}");
    for (function, ..) in DRS_FUNCTIONS {
        let package = package_of(&v2, function);
        assert_eq!(aws.code_sha256(&physical[function]).await, package.code_sha256, "{function}");
        if function != "orchestration" {
            assert_eq!(package.sha256, package_of(&v1, function).sha256, "{function}'s zip is not reproducible");
            assert!(lines.contains(&format!("{function}: code already current")), "{function}: {lines:#?}");
            assert!(lines.contains(&format!("already there: lambda/{function}.zip")), "{function}: {lines:#?}");
        }
    }
    for nested in DRS_NESTED {
        assert!(lines.contains(&format!("already there: {nested}")), "{nested}: {lines:#?}");
    }
    assert_ne!(package_of(&v2, "orchestration").code_sha256, package_of(&v1, "orchestration").code_sha256);
    let deployed = records(repo.path(), "run-2");
    assert!(
        deployed.iter().any(|r| r.component == "infra" && r.step == Step::Deploy && r.status == Status::Passed),
        "{deployed:#?}"
    );
}

/// The DRS fixture in fixed mode with `edit` applied to a file, packaged: the deployer's exit
/// and output, the bucket's keys and whether the master stack exists.
async fn drs_refused(
    tag: &str,
    file: &str,
    edit: impl Fn(String) -> String,
) -> (std::process::Output, Vec<String>, bool) {
    let (repo, bucket) = drs(tag);
    let aws = aws().await;
    aws.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let text = std::fs::read_to_string(repo.path().join(file)).unwrap();
    repo.write(file, &edit(text));
    repo.commit_all("a second reference to one key");
    let all = drs_components();
    let run = run_of(repo.path(), "run-1", &repo.head(), &all, &all);
    package(repo.path(), &run).0.unwrap();
    let out = deployer(repo.path(), &run, &[]);
    let stack = format!("t{}{tag}-drs-dev", std::process::id());
    let exists = aws.cloudformation.describe_stacks().stack_name(&stack).send().await.is_ok();
    let failed = records(repo.path(), "run-1");
    assert!(
        failed.iter().any(|r| r.component == "infra" && r.step == Step::Deploy && r.status == Status::Failed),
        "{failed:#?}"
    );
    (out, aws.keys(&bucket).await, exists)
}

#[tokio::test]
async fn a_fixed_code_key_read_by_two_functions_is_refused_naming_the_line_before_anything_is_uploaded() {
    let (out, keys, exists) = drs_refused("k", "cfn/poller-stack.yaml", |text| {
        text.replace("S3Key: lambda/execution-poller.zip", "S3Key: lambda/execution-finder.zip")
    })
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let bucket = format!("t{}k-drs-artifacts-dev", std::process::id());
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "stack-deployer: cfn/poller-stack.yaml:42: ExecutionPollerFunction Code `s3://{bucket}/lambda/execution-finder.zip` is the code key of function `execution-poller` and also of function `execution-finder`: one zip would overwrite the other; give each function its own S3Key, or map both resources to one function"
        )
    );
    assert!(keys.is_empty(), "nothing uploaded: {keys:?}");
    assert!(!exists, "no stack was created");
}

#[tokio::test]
async fn two_references_filling_one_key_with_different_content_are_refused_before_anything_is_uploaded() {
    // The monitoring stack's template read from the key the orchestration function's zip goes to.
    let (out, keys, exists) = drs_refused("c", "cfn/master.yaml", |text| {
        text.replace("${SourceBucket}/cfn/monitoring-stack.yaml", "${SourceBucket}/lambda/orchestration.zip")
            + "# (the key's file, mapped in pipeline.toml)\n"
    })
    .await;
    // Without a mapping, the key's tail is no file of the repository.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("MonitoringStack TemplateURL"), "{}", text(&out.stderr));
    assert!(keys.is_empty() && !exists);

    let (repo, bucket) = drs("m");
    let aws = aws().await;
    aws.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let master = std::fs::read_to_string(repo.path().join("cfn/master.yaml")).unwrap();
    repo.write(
        "cfn/master.yaml",
        &master.replace("${SourceBucket}/cfn/monitoring-stack.yaml", "${SourceBucket}/lambda/orchestration.zip"),
    );
    let toml = std::fs::read_to_string(repo.path().join("pipeline.toml")).unwrap();
    repo.write(
        "pipeline.toml",
        &format!("{toml}\n[deploy.artifacts]\ntemplates = {{ \"lambda/orchestration.zip\" = \"cfn/monitoring-stack.yaml\" }}\n"),
    );
    repo.commit_all("the monitoring template mapped to a zip's key");
    let all = drs_components();
    let run = run_of(repo.path(), "run-1", &repo.head(), &all, &all);
    package(repo.path(), &run).0.unwrap();
    let out = deployer(repo.path(), &run, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "stack-deployer: cfn/master.yaml:123: MonitoringStack TemplateURL `s3://{bucket}/lambda/orchestration.zip` is `cfn/monitoring-stack.yaml`, but `orchestration` also goes to that key, with other content; give each its own key"
        )
    );
    assert!(aws.keys(&bucket).await.is_empty(), "nothing uploaded");
    let stack = format!("t{}m-drs-dev", std::process::id());
    assert!(aws.cloudformation.describe_stacks().stack_name(&stack).send().await.is_err(), "no stack was created");
}
