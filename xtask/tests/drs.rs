//! A repository shaped like the real ones (`fixtures/drs-monorepo`: ten nested stacks by S3 URL
//! built from a parameter, one of them over 51,200 bytes, five flat-file functions whose code is
//! read from fixed keys, a site with a nested runtime config), taken from `cargo xtask init` to
//! production, each test against its own emulator, and what production's account holds read back:
//! the nested stacks complete, each nested template in S3 byte for byte the repository's file,
//! each function running the zip the packager wrote (also at the key its template reads), the
//! site published with its runtime config filled from the stacks' outputs.
//!
//! The fixture ships without `pipeline.toml`: `init` writes it, `init --check` maps every
//! reference, and the one hand edit the fixture's README documents (production's account, the
//! site, what `frontend-builder` ships) is appended as the README writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use run_state::{Status, Step, StepRecord, Store};
use sha2::Digest as _;

mod support;
use support::{Prod, aws_json, codebuild_run, compare_runs, pipeline_env, prod_env, records};

/// The functions, by their package names (the zips' names in the templates' code keys).
const FUNCTIONS: [&str; 5] =
    ["api-handler", "orchestration", "execution-finder", "execution-poller", "frontend-builder"];

/// The master's nested stacks and the repository file each one's TemplateURL names.
const NESTED: [(&str, &str); 10] = [
    ("DatabaseStack", "cfn/database-stack.yaml"),
    ("MessagingStack", "cfn/messaging-stack.yaml"),
    ("IamStack", "cfn/iam-stack.yaml"),
    ("ConfigStack", "cfn/config-stack.yaml"),
    ("ApiStack", "cfn/api-stack.yaml"),
    ("OrchestrationStack", "cfn/orchestration-stack.yaml"),
    ("PollerStack", "cfn/poller-stack.yaml"),
    ("EventsStack", "cfn/events-stack.yaml"),
    ("FrontendStack", "cfn/frontend-stack.yaml"),
    ("MonitoringStack", "cfn/monitoring-stack.yaml"),
];

/// Production, as the README's hand edit configures it.
const PROD_ROLE: &str = "arn:aws:iam::111111111111:role/pipeline-deploy";
const PROD_EXTERNAL_ID: &str = "drs-orchestration";

fn fixture() -> PathBuf {
    test_support::workspace_root().join("fixtures/drs-monorepo")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `cargo xtask init --repo DIR ARGS`.
fn init(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).arg("init").arg("--repo").arg(dir).args(args).output().unwrap()
}

/// The hand edit after `init`, exactly as the fixture's README writes it.
fn hand_edit() -> String {
    let readme = std::fs::read_to_string(fixture().join("README.md")).unwrap();
    let section = readme.split("## The hand edit after `init`").nth(1).expect("the README's hand-edit section");
    let block = section.split("```toml\n").nth(1).expect("its toml block");
    block.split("\n```").next().unwrap().to_string()
}

/// The fixture in a fresh git repository on `main`, with the `pipeline.toml` init writes (and
/// the README's hand edit), in one commit: no earlier production, so the first run deploys all.
fn repository() -> test_support::GitRepo {
    repository_with(|config| config)
}

/// [`repository`] with `edit` applied to the config init writes (before the hand edit).
fn repository_with(edit: impl Fn(String) -> String) -> test_support::GitRepo {
    let repo = test_support::GitRepo::new();
    test_support::copy_tree(&fixture(), repo.path());
    let config = repo.path().join("pipeline.toml");
    assert!(!config.exists(), "the fixture ships without pipeline.toml");

    let out = init(repo.path(), &[]);
    assert!(out.status.success(), "init: {}", text(&out));
    let written = std::fs::read_to_string(&config).unwrap();
    // What init maps by itself: every function from its handler and code key, with the shared
    // requirements up the tree and its pytest file; the master with its bucket parameter and
    // its environment (which has a default); the secrets allow-list.
    for function in FUNCTIONS {
        assert!(written.contains(&format!("[lambda.functions.{function}]\n")), "{function}:\n{written}");
        let test = format!("tests/test_{}.py", function.replace('-', "_"));
        assert!(written.contains(&format!("python -m pytest -q -p no:cacheprovider {test}")), "{test}:\n{written}");
    }
    assert_eq!(written.matches("requirements = \"lambda/requirements.txt\"\n").count(), 5, "{written}");
    assert!(written.contains("parameters = { Environment = \"{env}\", SourceBucket = \""), "{written}");
    assert!(written.contains("capabilities = [\"CAPABILITY_IAM\"]"), "{written}");
    assert!(written.contains("secrets_allowlist = \".secrets-allowlist\"\n"), "{written}");
    // The master nests by S3 URL: init offers the repository's own keys as the other mode.
    assert!(written.contains("\n# artifact_mode = \"fixed\"  # or upload to the keys the templates read"), "{written}");
    let written = edit(written);

    let out = init(repo.path(), &["--check"]);
    let check = text(&out);
    assert!(out.status.success(), "init --check: {check}");
    assert!(check.ends_with("template references not mapped: 0\n"), "{check}");
    assert!(
        check.contains(
            "api-handler: 4 file(s)\n  lambda/index.py\n  lambda/rbac_middleware.py\n  lambda/requirements.txt\n"
        ),
        "{check}"
    );
    let unowned = check.split("owned by no component: ").nth(1).unwrap().split("buildspecs/").next().unwrap();
    assert!(!unowned.contains("lambda/"), "every Lambda file is a function's: {unowned}");
    assert!(check.contains("infra: 11 file(s)\n"), "{check}");

    std::fs::write(
        &config,
        format!("{written}\n# The hand edit (fixtures/drs-monorepo/README.md).\n{}\n", hand_edit()),
    )
    .unwrap();
    repo.commit_all("DRS orchestration, adopted with `cargo xtask init`");
    assert_eq!(repo.git(&["rev-list", "--count", "HEAD"]).trim(), "1");
    repo
}

/// Production's master stack name and artifact bucket, as the config says.
fn prod_names(repo: &Path) -> (String, String) {
    let config = pipeline_config::ConfigFile::load(&repo.join("pipeline.toml")).unwrap();
    let settings = stack_deployer::DeploySettings::from_config(&config).unwrap();
    let env = settings.environment(&config, "prod").unwrap();
    assert_eq!(env.stacks.len(), 1, "only the master is a stack: {:?}", env.stacks);
    (env.stacks[0].stack_name.clone(), env.artifact_bucket.clone())
}

/// `cargo xtask pipeline` from the repository to production; the run's id and records.
fn pipeline(repo: &Path, endpoint: &str) -> (String, Vec<StepRecord>) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--repo"])
        .arg(repo)
        .args(["--endpoint-url", endpoint, "--all-on-missing-base", "--approve", "--approver", "alice"])
        .env("PIP_NO_INDEX", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "xtask pipeline: {}", text(&out));
    let store = run_state::FileStore::open(&repo.join(".pipeline")).unwrap();
    let run = store.run_ids().unwrap().pop().expect("the pipeline's run");
    let records = store.run(&run).unwrap();
    (run, records)
}

fn status(records: &[StepRecord], component: &str, step: Step) -> Status {
    records
        .iter()
        .rfind(|r| r.component == component && r.step == step)
        .unwrap_or_else(|| panic!("no {component} {step} record in {records:#?}"))
        .status
}

/// The packages a run wrote (`packages/manifest.json` and the zips): name → (the manifest's
/// CodeSha256, the zip's bytes), the CodeSha256 checked against the bytes.
fn packages(dir: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for package in manifest["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let zip = std::fs::read(dir.join(package["path"].as_str().unwrap())).unwrap();
        let code_sha256 = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&zip));
        assert_eq!(package["code_sha256"].as_str(), Some(code_sha256.as_str()), "{name}: the manifest's CodeSha256");
        out.insert(name, (code_sha256, zip));
    }
    out
}

/// The packages folder of the one run recorded under `state` (a `.pipeline` folder).
fn run_packages(state: &Path) -> PathBuf {
    let store = run_state::FileStore::open(state).unwrap();
    let run = store.run_ids().unwrap().pop().expect("a run");
    state.join("runs").join(run).join("packages")
}

/// An object's bytes.
fn object(env: &[(String, String)], bucket: &str, key: &str) -> Vec<u8> {
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    aws_json(&["s3api", "get-object", "--bucket", bucket, "--key", key, path], env);
    std::fs::read(file.path()).unwrap()
}

/// What production holds that a later run may change: each function's CodeSha256, and each
/// site object's (ETag, LastModified).
#[derive(Debug)]
struct Production {
    code: BTreeMap<String, String>,
    site: BTreeMap<String, (String, String)>,
}

/// Reads production's account (its role assumed with the external id) and asserts what it must
/// hold after a run that passed: `packaged` are the packages that run wrote.
fn assert_production(
    endpoint: &str,
    repo: &Path,
    (stack, bucket): &(String, String),
    packaged: &BTreeMap<String, (String, Vec<u8>)>,
) -> Production {
    let env = prod_env(endpoint, &Prod { role_arn: PROD_ROLE, external_id: PROD_EXTERNAL_ID, stack });
    let json = |args: &[&str]| aws_json(args, &env);
    let complete = |status: &str| status.ends_with("_COMPLETE") && !status.contains("ROLLBACK");

    // The master and its ten nested stacks, complete.
    let master = json(&["cloudformation", "describe-stacks", "--stack-name", stack]);
    let master = &master["Stacks"][0];
    assert!(complete(master["StackStatus"].as_str().unwrap()), "{stack}: {master}");
    let resources = json(&["cloudformation", "describe-stack-resources", "--stack-name", stack]);
    let nested: BTreeMap<String, String> = resources["StackResources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ResourceType"] == "AWS::CloudFormation::Stack")
        .map(|r| {
            (r["LogicalResourceId"].as_str().unwrap().to_owned(), r["PhysicalResourceId"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        nested.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        NESTED.iter().map(|(logical, _)| *logical).collect::<BTreeSet<_>>()
    );
    for (logical, physical) in &nested {
        let child = json(&["cloudformation", "describe-stacks", "--stack-name", physical]);
        let status = child["Stacks"][0]["StackStatus"].as_str().unwrap_or_default().to_owned();
        assert!(complete(&status), "{logical} ({physical}) is {status}");
    }

    // Each nested template, read back from the URL the deployed master names, is the
    // repository's file byte for byte (the 75 KB one too: by URL, never inline).
    let template = json(&["cloudformation", "get-template", "--stack-name", stack]);
    let body = match &template["TemplateBody"] {
        serde_json::Value::String(text) => serde_json::from_str(text).expect("the master as sent is JSON"),
        other => other.clone(),
    };
    let fixed = std::fs::read_to_string(repo.join("pipeline.toml")).unwrap().contains("\nartifact_mode = \"fixed\"");
    for (logical, file) in NESTED {
        let url = &body["Resources"][logical]["Properties"]["TemplateURL"];
        let key = if fixed {
            // As written (`!Sub 'https://s3.amazonaws.com/${SourceBucket}/cfn/…'`): the key is the file's path.
            assert!(!url.is_string() && url.to_string().contains(file), "{logical}: {url}");
            file
        } else {
            let url = url.as_str().unwrap_or_else(|| panic!("{logical}: {body}"));
            let (host, key) =
                url.strip_prefix("https://").and_then(|u| u.split_once('/')).unwrap_or_else(|| panic!("{url}"));
            assert_eq!(host, format!("{bucket}.s3.amazonaws.com"), "{logical}: {url}");
            key
        };
        let held = object(&env, bucket, key);
        let ours = std::fs::read(repo.join(file)).unwrap();
        assert!(
            held == ours,
            "{logical}: s3://{bucket}/{key} is not {file} as the repository holds it:\n{}",
            String::from_utf8_lossy(&held)
        );
    }
    assert!(std::fs::metadata(repo.join("cfn/config-stack.yaml")).unwrap().len() > 51_200);

    // Each function runs the zip its run packaged, which is also at the fixed key its template reads.
    let mut code = BTreeMap::new();
    for function in FUNCTIONS {
        let configuration =
            json(&["lambda", "get-function-configuration", "--function-name", &format!("drs-prod-{function}")]);
        let deployed = configuration["CodeSha256"].as_str().unwrap().to_owned();
        if let Some((code_sha256, zip)) = packaged.get(function) {
            assert_eq!(&deployed, code_sha256, "{function}: CodeSha256 in production");
            let fixed = object(&env, bucket, &format!("lambda/{function}.zip"));
            assert!(&fixed == zip, "{function}: s3://{bucket}/lambda/{function}.zip is not its package");
        }
        code.insert(function.to_owned(), deployed);
    }

    // The site: its files, and the runtime config nested as the app reads it, filled from the
    // master's outputs.
    let outputs: BTreeMap<String, String> = master["Outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (o["OutputKey"].as_str().unwrap().to_owned(), o["OutputValue"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let site_bucket = outputs.get("SiteBucketName").unwrap_or_else(|| panic!("no SiteBucketName: {outputs:?}"));
    assert_eq!(site_bucket, "drs-site-prod-111111111111");
    let listed = json(&["s3api", "list-objects-v2", "--bucket", site_bucket]);
    let site: BTreeMap<String, (String, String)> = listed["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let key = o["Key"].as_str().unwrap().to_owned();
            (key, (o["ETag"].as_str().unwrap().to_owned(), o["LastModified"].as_str().unwrap().to_owned()))
        })
        // The releases the publisher keeps (for a restore) are its bookkeeping, not the site.
        .filter(|(key, _)| !key.starts_with(frontend_publisher::release::KEPT_PREFIX))
        .collect();
    for file in ["index.html", "assets/app.js", "assets/aws-config.js", "aws-config.json", "assets/aws-exports.js"] {
        assert!(site.contains_key(file), "{file} not published: {site:?}");
    }
    assert_eq!(object(&env, site_bucket, "index.html"), std::fs::read(repo.join("frontend/src/index.html")).unwrap());
    let config: serde_json::Value = serde_json::from_slice(&object(&env, site_bucket, "aws-config.json")).unwrap();
    let expected = serde_json::json!({
        "API": { "REST": { "endpoint": outputs["ApiEndpoint"] } },
        "Storage": {
            "executionsTable": "drs-executions-prod",
            "protectionGroupsTable": "drs-protection-groups-prod",
        },
        "Notifications": {
            "topicArn": "arn:aws:sns:us-east-1:111111111111:drs-notifications-prod",
            "queueUrl": outputs["QueueUrl"],
        },
        "region": "us-east-1",
    });
    assert_eq!(config, expected);
    assert!(outputs["ApiEndpoint"].starts_with("https://"), "{outputs:?}");
    assert!(outputs["QueueUrl"].contains("/111111111111/drs-executions-prod"), "{outputs:?}");
    let script = String::from_utf8(object(&env, site_bucket, "assets/aws-config.js")).unwrap();
    let assigned = script.trim_end().strip_prefix("window.AWS_CONFIG = ").and_then(|s| s.strip_suffix(';'));
    let assigned: serde_json::Value =
        serde_json::from_str(assigned.unwrap_or_else(|| panic!("not `window.AWS_CONFIG = {{…}};`: {script}"))).unwrap();
    assert_eq!(assigned, expected);
    // The repository's own template, its placeholders filled.
    let exports = String::from_utf8(object(&env, site_bucket, "assets/aws-exports.js")).unwrap();
    let template = std::fs::read_to_string(repo.join("frontend/runtime/aws-exports.template.js")).unwrap();
    let filled = template
        .replace("${AWS::Region}", "us-east-1")
        .replace("${ApiEndpoint}", &outputs["ApiEndpoint"])
        .replace("${master.ExecutionsTableName}", "drs-executions-prod");
    assert_eq!(exports, filled);
    assert!(!exports.contains("${"), "{exports}");
    Production { code, site }
}

/// One function changes and `cargo xtask pipeline` runs again: only its package is built, and
/// only its code changes in production (`first` is what production held before).
fn one_function_change(
    repo: &test_support::GitRepo,
    endpoint: &str,
    names: &(String, String),
    first: &Production,
) -> (Production, Vec<StepRecord>) {
    let source = std::fs::read_to_string(repo.path().join("lambda/orchestration.py")).unwrap();
    repo.commit_files(
        "orchestration: at most ten waves",
        &[("lambda/orchestration.py", &format!("{source}\n\nMAX_WAVES = 10\n"))],
    );
    let (run, records) = pipeline(repo.path(), endpoint);
    let packaged = packages(&repo.path().join(".pipeline/runs").join(&run).join("packages"));
    assert_eq!(packaged.keys().map(String::as_str).collect::<Vec<_>>(), ["orchestration"]);
    let second = assert_production(endpoint, repo.path(), names, &packaged);
    for function in FUNCTIONS {
        if function == "orchestration" {
            assert_ne!(second.code[function], first.code[function], "{function}'s code was not updated");
        } else {
            assert_eq!(second.code[function], first.code[function], "{function} changed without a change");
        }
    }
    (second, records)
}

/// From init to production through `cargo xtask pipeline`, then a one-function change: only that
/// function's code changes in production, and the site is not uploaded again.
#[test]
fn init_to_production_through_the_pipeline_then_a_one_function_change_updates_only_its_code() {
    let repo = repository();
    let moto = test_support::Moto::start();
    let names = prod_names(repo.path());
    assert!(names.0.ends_with("-prod") && names.1.ends_with("-prod"), "{names:?}");

    // The debug script's committed test password is a secret to the scanner; the repository's
    // allow-list (which init found) keeps it, so validate passes with the script scanned.
    let script = std::fs::read(repo.path().join("frontend/scripts/debug-login.sh")).unwrap();
    let bare = validate::secrets::SecretScanner::new("").unwrap().scan("frontend/scripts/debug-login.sh", &script);
    assert!(bare.iter().any(|f| f.rule == "S004"), "{bare:#?}");
    let allowlist = std::fs::read_to_string(repo.path().join(".secrets-allowlist")).unwrap();
    let kept =
        validate::secrets::SecretScanner::new(&allowlist).unwrap().scan("frontend/scripts/debug-login.sh", &script);
    assert!(kept.is_empty(), "{kept:#?}");

    let (run, first_records) = pipeline(repo.path(), &moto.endpoint);
    assert_eq!(status(&first_records, run_state::PIPELINE, Step::Validate), Status::Passed);
    for component in ["infra", "frontend"] {
        assert_eq!(status(&first_records, component, Step::ProdDeploy), Status::Passed, "{component}");
    }
    for function in FUNCTIONS {
        assert_eq!(status(&first_records, function, Step::Test), Status::Passed, "{function}'s pytest suite");
    }
    let first_packages = packages(&repo.path().join(".pipeline/runs").join(&run).join("packages"));
    assert_eq!(first_packages.keys().map(String::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(FUNCTIONS));
    let (_, builder) = &first_packages["frontend-builder"];
    assert!(builder.windows(15).any(|w| w == b"dist/index.html"), "frontend-builder ships the built site");
    let first = assert_production(&moto.endpoint, repo.path(), &names, &first_packages);

    let (second, second_records) = one_function_change(&repo, &moto.endpoint, &names, &first);
    assert_eq!(status(&second_records, "frontend", Step::ProdDeploy), Status::Skipped);
    assert_eq!(second.site, first.site, "the site was uploaded again");
}

/// The same first run through the stage binaries in CodeBuild order (each stage a fresh clone,
/// artifacts passed as folders, production through its role), each path against its own
/// emulator: the same records as `cargo xtask pipeline`'s, and the same production.
#[test]
fn the_stage_binaries_in_codebuild_order_take_it_to_the_same_production() {
    let repo = repository();
    let head = repo.head();
    let names = prod_names(repo.path());

    let pipeline_moto = test_support::Moto::start();
    let clone = tempfile::tempdir().unwrap();
    let cloned = Command::new("git").args(["clone", "-q"]).arg(repo.path()).arg(clone.path()).status().unwrap();
    assert!(cloned.success());
    let (run, pipeline_records) = pipeline(clone.path(), &pipeline_moto.endpoint);
    let pipeline_packages = packages(&clone.path().join(".pipeline/runs").join(&run).join("packages"));
    let by_pipeline = assert_production(&pipeline_moto.endpoint, clone.path(), &names, &pipeline_packages);

    let binaries_moto = test_support::Moto::start();
    let mut env = pipeline_env(&binaries_moto.endpoint);
    env.extend(
        [
            ("ARTIFACT_BUCKET", "drs-contract-artifacts"),
            ("APPROVED_BY", "alice"),
            ("CFN_ROLE_ARN", "arn:aws:iam::123456789012:role/drs-contract-cfn"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    // The buckets the pipeline's own stack makes in AWS (`cargo xtask pipeline` makes them in
    // its emulator itself).
    let dev_bucket = names.1.replace("-prod", "-dev");
    for bucket in ["drs-contract-artifacts", dev_bucket.as_str(), names.1.as_str()] {
        aws_json(&["s3api", "create-bucket", "--bucket", bucket], &env);
    }
    let last = codebuild_run(repo.path(), &env);
    let binaries = records(&last);
    assert!(binaries.iter().chain(&pipeline_records).all(|r| r.commit == head), "a record of another commit");
    let differences = compare_runs(&binaries, &pipeline_records);
    assert!(differences.is_empty(), "the two paths recorded different runs:\n{}", differences.join("\n"));
    assert_eq!(status(&binaries, "infra", Step::ProdDeploy), Status::Passed);

    let binaries_packages = packages(&run_packages(&last.join("artifacts/.pipeline")));
    let by_binaries = assert_production(&binaries_moto.endpoint, repo.path(), &names, &binaries_packages);
    assert_eq!(by_binaries.code, by_pipeline.code, "different Lambda code in production");
    assert_eq!(
        by_binaries.site.keys().collect::<Vec<_>>(),
        by_pipeline.site.keys().collect::<Vec<_>>(),
        "different sites in production"
    );
    let _ = std::fs::remove_dir_all(&last);
}

/// A package including the output of a component that has no build command, through the
/// `lambda-packager` binary: one line naming the config's line and key, exit 2, nothing written.
#[test]
fn an_include_of_a_component_without_a_build_command_is_refused_by_the_binary() {
    let repo = repository();
    let config = repo.path().join("pipeline.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    let build = written.lines().find(|l| l.starts_with("build = ") && l.contains("npm run build")).unwrap();
    let edited = written.replace(&format!("{build}\n"), "");
    std::fs::write(&config, &edited).unwrap();
    repo.commit_all("the frontend's build left out");
    let include = edited.lines().position(|l| l == "[[lambda.functions.frontend-builder.include]]").unwrap();
    let line = include + edited.lines().skip(include).position(|l| l == "component = \"frontend\"").unwrap() + 1;

    let out_dir = tempfile::tempdir().unwrap();
    let packages = out_dir.path().join("packages");
    let out = Command::new(support::binary("lambda-packager"))
        .arg("--repo")
        .arg(repo.path())
        .arg("--out")
        .arg(&packages)
        .env("PIP_NO_INDEX", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("lambda-packager: ") && stderr.contains(&format!("pipeline.toml:{line}: lambda.functions.frontend-builder.include: component `frontend` has no `build` command, so nothing in the pipeline writes `frontend/dist`; add its build, or name the component whose build writes it")), "{stderr}");
    assert!(!packages.exists(), "nothing written");
}

/// The same repository with the mode init offers commented out taken (`artifact_mode =
/// "fixed"`), from init to production through `cargo xtask pipeline`: the nested templates and
/// the zips at the keys the templates read (the master deployed as written), then a one-function
/// change: only that function's code changes in production.
#[test]
fn fixed_mode_through_the_pipeline_deploys_to_the_keys_the_templates_read_and_updates_only_the_changed_code() {
    let repo = repository_with(|config| config.replace("# artifact_mode = \"fixed\"", "artifact_mode = \"fixed\""));
    let moto = test_support::Moto::start();
    let names = prod_names(repo.path());
    let (run, records) = pipeline(repo.path(), &moto.endpoint);
    assert_eq!(status(&records, "infra", Step::ProdDeploy), Status::Passed);
    let first_packages = packages(&repo.path().join(".pipeline/runs").join(&run).join("packages"));
    let first = assert_production(&moto.endpoint, repo.path(), &names, &first_packages);

    let (_, records) = one_function_change(&repo, &moto.endpoint, &names, &first);
    assert_eq!(status(&records, "infra", Step::ProdDeploy), Status::Passed);
}
