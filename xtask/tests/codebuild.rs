//! The CodeBuild path as written: every buildspec in `buildspecs/` calls toolkit binaries and
//! flags that exist, exports only variables source-diff writes, publishes reports some command
//! writes, and `cfn/pipeline.yaml` (the pipeline's own infrastructure) wires them together, is
//! clean for validate and cfn-lint, and grants no `*` action.
//!
//! These read the files a user copies into their monorepo, so a renamed flag or a buildspec the
//! template does not know about fails here, not in the user's first CodeBuild run.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use validate::{Node, Value};

mod support;
use support::{Rehearsal, SAMPLE_PROD, TOOLKIT, binary, codebuild_run, compare_runs, production_state, records, root};

fn read_yaml(path: &Path) -> Node {
    let text = std::fs::read_to_string(path).unwrap();
    validate::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn buildspecs() -> Vec<(String, Node)> {
    let mut specs: Vec<(String, Node)> = std::fs::read_dir(root().join("buildspecs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), read_yaml(&p)))
        .collect();
    specs.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(specs.len() >= 9, "a buildspec per stage: {:?}", specs.iter().map(|s| &s.0).collect::<Vec<_>>());
    specs
}

fn strings(node: Option<&Node>) -> Vec<String> {
    node.map(|n| n.items().iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// Every command of every phase, in order.
fn commands(spec: &Node) -> Vec<String> {
    let Some(phases) = spec.get("phases") else { return Vec::new() };
    phases.entries().iter().flat_map(|(_, phase)| strings(phase.get("commands"))).collect()
}

/// The toolkit calls in a shell command: the binary in command position, then its words up to the next `;`, `&&`,
/// `||`, `|`, `>` or `)`, quotes removed.
fn toolkit_calls(command: &str) -> Vec<Vec<String>> {
    let spaced = command.replace("&&", " ; ").replace("||", " ; ").replace(['|', ')', '(', ';', '>'], " ; ");
    let mut calls = Vec::new();
    let mut current: Option<Vec<String>> = None;
    // Only a word in command position is a call: `cargo build -p validate` calls cargo.
    let mut at_start = true;
    for word in spaced.split_whitespace() {
        let word = word.trim_matches(|c| c == '"' || c == '\'');
        if word == ";" {
            calls.extend(current.take());
            at_start = true;
            continue;
        }
        match &mut current {
            Some(words) => words.push(word.to_owned()),
            None if at_start && TOOLKIT.contains(&word) => current = Some(vec![word.to_owned()]),
            // `NAME=value` before a command keeps the command position.
            None => at_start = at_start && word.contains('=') && !word.starts_with('-'),
        }
    }
    calls.extend(current);
    calls
}

fn help(binary_name: &str, subcommand: Option<&str>) -> String {
    let mut command = Command::new(binary(binary_name));
    command.args(subcommand).arg("--help");
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{binary_name} {subcommand:?} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_toolkit_command_in_a_buildspec_exists_with_its_flags() {
    let mut checked = 0;
    for (name, spec) in buildspecs() {
        assert_eq!(spec.get("version").and_then(Node::as_str), Some("0.2"), "{name}: version 0.2");
        for command in commands(&spec) {
            for call in toolkit_calls(&command) {
                let top = help(&call[0], None);
                let subcommand =
                    call.get(1).filter(|w| !w.starts_with('-') && top.contains("Commands:")).map(String::as_str);
                let help = match subcommand {
                    Some(sub) => {
                        assert!(
                            top.lines().any(|l| l.trim_start().starts_with(sub)),
                            "{name}: `{}` has no subcommand `{sub}` (in `{command}`)",
                            call[0]
                        );
                        help(&call[0], Some(sub))
                    }
                    None => top,
                };
                for (i, word) in call.iter().enumerate().skip(1) {
                    let Some(flag) = word.strip_prefix("--") else { continue };
                    let flag = flag.split('=').next().unwrap();
                    assert!(
                        help.contains(&format!("--{flag}")),
                        "{name}: `{}` has no flag --{flag} (in `{command}`)",
                        call[0]
                    );
                    // Values from a fixed set must be among the values the help lists.
                    if matches!(flag, "format" | "step")
                        && let Some(value) = call.get(i + 1).filter(|v| !v.starts_with('$'))
                    {
                        assert!(
                            help.contains(value.as_str()),
                            "{name}: `{} --{flag} {value}` is not a value it takes",
                            call[0]
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} toolkit calls found in the buildspecs");
}

#[test]
fn exported_variables_are_ones_source_diff_writes() {
    let repo = test_support::sample_monorepo();
    let out = Command::new(binary("source-diff"))
        .current_dir(repo.path())
        .args(["--format", "env", "--all-on-missing-base"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    let mut exported = 0;
    // The toolkit stage exports its own (toolkit_sha256, checked with the template below).
    for (name, spec) in buildspecs().into_iter().filter(|(n, _)| n != "toolkit.yml") {
        for variable in strings(spec.get("env").and_then(|e| e.get("exported-variables"))) {
            assert!(
                written.contains(&variable),
                "{name} exports `{variable}`, which source-diff never writes: {written:?}"
            );
            exported += 1;
        }
    }
    assert!(exported > 0, "the diff stage exports its flags");
}

#[test]
fn every_report_is_written_by_a_command_of_its_buildspec() {
    for (name, spec) in buildspecs() {
        let Some(reports) = spec.get("reports") else { continue };
        let commands = commands(&spec).join("\n");
        for (group, report) in reports.entries() {
            for file in strings(report.get("files")) {
                assert!(
                    commands.contains(&format!("--output {file}")),
                    "{name}: report group `{}` reads {file}, which no command writes",
                    group.name
                );
            }
        }
    }
}

/// Every string value of a node, recursively.
fn all_strings(node: &Node, out: &mut Vec<String>) {
    match &node.value {
        Value::String(s) => out.push(s.clone()),
        Value::Seq(items) => items.iter().for_each(|i| all_strings(i, out)),
        Value::Map(entries) => entries.iter().for_each(|(_, v)| all_strings(v, out)),
        _ => {}
    }
}

#[test]
fn the_pipeline_template_wires_every_buildspec_and_artifact() {
    let template = read_yaml(&root().join("cfn/pipeline.yaml"));
    let resources = template.get("Resources").unwrap();
    let mut roles = BTreeSet::new();
    let mut specs_used = BTreeSet::new();
    for (key, resource) in resources.entries() {
        let props = resource.get("Properties");
        match resource.get("Type").and_then(Node::as_str) {
            Some("AWS::CodeBuild::Project") => {
                let props = props.unwrap();
                let spec = props.get("Source").and_then(|s| s.get("BuildSpec")).and_then(Node::as_str).unwrap();
                assert!(root().join(spec).is_file(), "{}: BuildSpec {spec} is not in this repository", key.name);
                specs_used.insert(spec.trim_start_matches("buildspecs/").to_owned());
                let mut role = Vec::new();
                all_strings(props.get("ServiceRole").unwrap(), &mut role);
                assert!(roles.insert(role.concat()), "{}: shares its role with another project", key.name);
            }
            Some("AWS::IAM::Role") => {
                for node in props.unwrap().walk() {
                    for (k, v) in node.entries() {
                        if k.name == "Action" || k.name == "NotAction" {
                            let mut actions = Vec::new();
                            all_strings(v, &mut actions);
                            assert!(
                                actions.iter().all(|a| a != "*" && !a.ends_with(":*")),
                                "{}: an action wildcard in {actions:?}",
                                key.name
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let on_disk: BTreeSet<String> = buildspecs().into_iter().map(|(n, _)| n).collect();
    assert_eq!(specs_used, on_disk, "every buildspec has its CodeBuild project and every project its buildspec");

    // Each CodeBuild action that names a state artifact takes it as an input, and every buildspec
    // that reads the toolkit binaries gets the `Toolkit` artifact.
    let mut actions = Vec::new();
    for stage in resources.get("Pipeline").unwrap().get("Properties").unwrap().get("Stages").unwrap().items() {
        actions.extend(stage.get("Actions").unwrap().items().iter().cloned());
    }
    let mut state_inputs = 0;
    for action in &actions {
        let inputs: Vec<String> = action
            .get("InputArtifacts")
            .map(|i| i.items().iter().filter_map(|a| a.get("Name")?.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let Some(env) = action.get("Configuration").and_then(|c| c.get("EnvironmentVariables")).and_then(Node::as_str)
        else {
            continue;
        };
        let env: serde_json::Value = serde_json::from_str(env).unwrap();
        for var in env.as_array().unwrap() {
            if var["name"] == "STATE_ARTIFACT" {
                let artifact = var["value"].as_str().unwrap();
                assert!(
                    inputs.iter().any(|i| i == artifact),
                    "an action reads {artifact} without taking it: {inputs:?}"
                );
                assert!(inputs.iter().any(|i| i == "Toolkit"), "an action runs the toolkit without its artifact");
                state_inputs += 1;
            }
        }
    }
    assert!(state_inputs >= 7, "every stage after Diff gets the run folder of the one before");
    for (name, spec) in buildspecs() {
        let text = commands(&spec).join("\n");
        if name != "toolkit.yml" {
            assert!(
                text.contains("CODEBUILD_SRC_DIR_Toolkit/bin"),
                "{name}: does not put the Toolkit artifact on PATH"
            );
        }
        if text.contains("STATE_ARTIFACT") {
            assert_ne!(name, "diff.yml", "the diff stage starts the run; it has no state before it");
        }
    }
}

#[test]
fn the_pipeline_template_is_clean_for_validate_and_cfn_lint() {
    for template in ["cfn/pipeline.yaml", "cfn/pipeline-monitoring.yaml", "cfn/app-account.yaml"] {
        template_is_clean(template);
    }
}

fn template_is_clean(name: &str) {
    let path = root().join(name);
    let bytes = std::fs::read(&path).unwrap();
    let findings = validate::check_template(name, &path, &bytes);
    let serious: Vec<_> = findings.iter().filter(|f| f.severity >= validate::Severity::Warning).collect();
    assert!(serious.is_empty(), "validate finds: {serious:#?}");

    let cfn_lint = test_support::python().parent().unwrap().join("cfn-lint");
    let out = Command::new(&cfn_lint).arg(&path).output().unwrap_or_else(|e| panic!("{}: {e}", cfn_lint.display()));
    assert!(
        out.status.success(),
        "cfn-lint finds:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first half of the CodeBuild pipeline rehearsed stage by stage (Diff → Validate → Test →
/// Status), artifacts passed between stages as folders, the emulator standing in for the
/// artifact bucket the diff stage reads the last production state from. The Build stage needs
/// the sample's Python dependencies from PyPI, so it is not part of this rehearsal (the
/// packager's own tests cover it with a local wheelhouse).
///
/// A frontend-only change passes the gate; a failing frontend test keeps the Test stage green
/// (its component is not deployed) and turns the Status stage red.
#[test]
fn the_codebuild_stages_rehearsed_pass_a_good_change_and_stop_a_failing_test() {
    let moto = test_support::Moto::shared();
    let aws = test_support::python().parent().unwrap().join("aws");
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ARTIFACT_BUCKET", "xtask-codebuild-rehearsal"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let made =
        Command::new(&aws).args(["s3", "mb", "s3://xtask-codebuild-rehearsal"]).envs(env.clone()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let repo = test_support::sample_monorepo();
    repo.git(&["branch", "-M", "main"]);
    let app = std::fs::read_to_string(repo.path().join("frontend/src/app.js")).unwrap();
    repo.commit_files("frontend change", &[("frontend/src/app.js", &format!("{app}\n// v2\n"))]);
    let rehearsal = Rehearsal::new(repo.path(), env.clone());

    let (ok, diff_out, text) = rehearsal.stage("diff.yml", None);
    assert!(ok, "{text}");
    let exported = std::fs::read_to_string(diff_out.join("exported.env")).unwrap();
    assert!(exported.contains("frontend_tests_required=true"), "{exported}");
    assert!(exported.contains("api_handler_tests_required=false"), "{exported}");
    assert!(exported.contains("any_changed=true"), "{exported}");
    let (ok, _, text) = rehearsal.stage("validate.yml", Some("Diff"));
    assert!(ok, "{text}");
    let (ok, _, text) = rehearsal.stage("test.yml", Some("Validate"));
    assert!(ok, "{text}");
    let (ok, status_out, text) = rehearsal.stage("status.yml", Some("Test"));
    assert!(ok, "the gate refused a good change: {text}");
    let report = std::fs::read_to_string(status_out.join("artifacts/report.md")).unwrap();
    assert!(report.contains("frontend"), "{report}");

    // The same stages on a commit whose frontend test fails.
    repo.commit_files("broken test", &[("frontend/test/broken.test.mjs", "import test from 'node:test';\nimport assert from 'node:assert';\ntest('broken', () => assert.equal(1, 2));\n")]);
    let rehearsal = Rehearsal::new(repo.path(), env);
    assert!(rehearsal.stage("diff.yml", None).0);
    assert!(rehearsal.stage("validate.yml", Some("Diff")).0);
    let (ok, _, text) = rehearsal.stage("test.yml", Some("Validate"));
    assert!(ok, "a failed test is recorded, not a failed Test stage: {text}");
    let (ok, _, text) = rehearsal.stage("status.yml", Some("Test"));
    assert!(!ok, "the gate let a failing test through: {text}");
    assert!(text.contains("frontend test failed"), "{text}");
}

fn record<'a>(
    records: &'a [run_state::StepRecord],
    component: &str,
    step: run_state::Step,
) -> &'a run_state::StepRecord {
    records
        .iter()
        .find(|r| r.component == component && r.step == step)
        .unwrap_or_else(|| panic!("no {component} {step} record in {records:#?}"))
}

/// The deploy path rehearsed stage by stage (Diff → Validate → Build → Test → DeployDev →
/// Status, then DeployProd), artifacts passed as folders, against the emulator with the moto
/// harness (the sample's master stack deploys whole). The change touches the frontend and
/// breaks an `api-handler` test: DeployDev deploys the stacks and publishes the frontend, but
/// `api-handler`'s code is not updated (recorded skipped, with why); Status turns red; and a
/// DeployProd asked for anyway (approval recorded with `status-report approve`) is refused,
/// recorded, and creates nothing.
///
/// The sample's requirements are emptied first: pip must not reach an index here.
#[test]
fn the_deploy_path_rehearsed_deploys_what_passed_and_keeps_production_out() {
    use run_state::{PIPELINE, Status, Step};
    let moto = test_support::Moto::shared();
    let aws = test_support::python().parent().unwrap().join("aws");
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ARTIFACT_BUCKET", "xtask-codebuild-deploy-path"),
        ("APPROVED_BY", "alice"),
        ("CFN_ROLE_ARN", "arn:aws:iam::123456789012:role/xtask-cfn-dev"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for bucket in ["xtask-codebuild-deploy-path", "pipeline-dashboard-artifacts-dev"] {
        let made = Command::new(&aws).args(["s3", "mb", &format!("s3://{bucket}")]).envs(env.clone()).output().unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }

    let repo = test_support::sample_monorepo();
    repo.git(&["branch", "-M", "main"]);
    repo.commit_files("no third-party requirements", &[("lambda/requirements.txt", "# none\n")]);
    let app = std::fs::read_to_string(repo.path().join("frontend/src/app.js")).unwrap();
    let tests = std::fs::read_to_string(repo.path().join("tests/test_api_handler.py")).unwrap();
    repo.commit_files(
        "frontend change, broken api-handler test",
        &[
            ("frontend/src/app.js", &format!("{app}\n// v2\n")),
            ("tests/test_api_handler.py", &format!("{tests}\n\ndef test_broken():\n    assert 1 == 2\n")),
        ],
    );
    let rehearsal = Rehearsal::new(repo.path(), env);
    for (buildspec, previous) in [
        ("diff.yml", None),
        ("validate.yml", Some("Diff")),
        ("build.yml", Some("Validate")),
        ("test.yml", Some("Build")),
    ] {
        let (ok, _, text) = rehearsal.stage(buildspec, previous);
        assert!(ok, "{buildspec}: {text}");
    }
    let (ok, deploy_out, text) = rehearsal.stage("deploy.yml", Some("Test"));
    assert!(ok, "DeployDev deploys what passed: {text}");
    let dev = records(&deploy_out);
    assert_eq!(record(&dev, "api-handler", Step::Test).status, Status::Failed);
    let api = record(&dev, "api-handler", Step::Deploy);
    assert_eq!(api.status, Status::Skipped, "{api:?}");
    assert!(api.details.note.as_deref().unwrap_or_default().contains("its test failed"), "{api:?}");
    assert_eq!(record(&dev, "infra", Step::Deploy).status, Status::Passed);
    assert_eq!(record(&dev, "frontend", Step::Deploy).status, Status::Passed);
    assert!(text.contains("index.html"), "the frontend was published: {text}");
    assert!(!text.contains("api-handler: code updated"), "{text}");
    // CloudFormation acted as the execution role the buildspec passed, not as the stage's.
    let stacks = Command::new(&aws)
        .args([
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            "pipeline-dashboard-dev",
            "--query",
            "Stacks[0].RoleARN",
        ])
        .envs(rehearsal.env.clone())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stacks.stdout).trim(), "\"arn:aws:iam::123456789012:role/xtask-cfn-dev\"");

    let (ok, _, text) = rehearsal.stage("status.yml", Some("Deploy"));
    assert!(!ok, "Status lets a failed test through: {text}");
    assert!(text.contains("api-handler test failed"), "{text}");

    // Production asked for anyway, after an approval: refused, recorded, nothing created.
    let (ok, prod_out, text) = rehearsal.stage("deploy-prod.yml", Some("Deploy"));
    assert!(!ok, "production deployed after a failed test: {text}");
    assert!(text.contains("deploying `prod` is refused: before promotion: api-handler test failed"), "{text}");
    let prod = records(&prod_out);
    let approval = record(&prod, PIPELINE, Step::Approval);
    assert_eq!((approval.status, approval.details.by.as_deref().map(String::as_str)), (Status::Passed, Some("alice")));
    assert_eq!(record(&prod, "infra", Step::ProdDeploy).status, Status::Failed);
    let stacks = Command::new(&aws)
        .args(["cloudformation", "describe-stacks", "--stack-name", "pipeline-dashboard-prod"])
        .envs(rehearsal.env.clone())
        .output()
        .unwrap();
    assert!(!stacks.status.success(), "a prod stack exists: {}", String::from_utf8_lossy(&stacks.stdout));
}

/// The pipeline template's resources by logical id.
fn template_resources() -> Vec<(String, Node)> {
    resources_of("cfn/pipeline.yaml")
}

/// A template's resources by logical id.
fn resources_of(path: &str) -> Vec<(String, Node)> {
    let template = read_yaml(&root().join(path));
    template.get("Resources").unwrap().entries().iter().map(|(k, v)| (k.name.clone(), v.clone())).collect()
}

fn resource(resources: &[(String, Node)], name: &str) -> Node {
    resources.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no resource {name}")).1.clone()
}

/// Every policy statement of a role (inline policies) or a managed policy, with its policy's owner.
fn statements(node: &Node) -> Vec<Node> {
    let mut out = Vec::new();
    for n in node.walk() {
        if let Some(list) = n.get("Statement") {
            out.extend(list.items().iter().cloned());
        }
    }
    out
}

fn words(node: Option<&Node>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(node) = node {
        all_strings(node, &mut out);
    }
    out
}

fn is_allow(statement: &Node) -> bool {
    statement.get("Effect").and_then(Node::as_str) == Some("Allow")
}

/// An environment's CloudFormation role (cfn/app-account.yaml): every role it creates carries the
/// boundary (the condition on each action that creates a role or gives it rights), it cannot
/// remove or change the boundary, and it passes roles only to the services the application's
/// templates hand them to; production's deploy role is assumable only by the pipeline's
/// DeployProd role with the external id.
#[test]
fn the_cloudformation_role_creates_only_bounded_roles_and_passes_them_only_to_their_services() {
    let resources = resources_of("cfn/app-account.yaml");
    let role = resource(&resources, "CloudFormationRole");
    let all = statements(&role);
    let mut bounded = BTreeSet::new();
    for statement in all.iter().filter(|s| is_allow(s)) {
        let actions = words(statement.get("Action"));
        let condition = statement.get("Condition");
        for action in &actions {
            if ["iam:CreateRole", "iam:PutRolePolicy", "iam:AttachRolePolicy"].contains(&action.as_str()) {
                let boundary =
                    condition.and_then(|c| c.get("StringEquals")).and_then(|c| c.get("iam:PermissionsBoundary"));
                assert_eq!(words(boundary), ["AppRoleBoundary"], "{action} without the boundary condition");
                bounded.insert(action.clone());
            }
            if action == "iam:PassRole" {
                let to =
                    words(condition.and_then(|c| c.get("StringEquals")).and_then(|c| c.get("iam:PassedToService")));
                assert_eq!(to, ["lambda.amazonaws.com", "states.amazonaws.com"], "PassRole to any service");
            }
            assert!(!action.starts_with("iam:") || !action.contains('*'), "{action}");
        }
    }
    assert_eq!(bounded.len(), 3, "the role may create roles with the boundary");
    let denied: Vec<String> = all.iter().filter(|s| !is_allow(s)).flat_map(|s| words(s.get("Action"))).collect();
    for action in ["iam:DeleteRolePermissionsBoundary", "iam:PutRolePermissionsBoundary", "iam:CreatePolicyVersion"] {
        assert!(denied.iter().any(|a| a == action), "{action} is not denied: {denied:?}");
    }
    // The boundary itself grants no IAM, STS or KMS right.
    let boundary = resource(&resources, "AppRoleBoundary");
    for action in statements(&boundary).iter().flat_map(|s| words(s.get("Action"))) {
        assert!(!["iam:", "sts:", "kms:", "organizations:"].iter().any(|p| action.starts_with(p)), "{action}");
    }
    // The deploy roles pass only this role, only to CloudFormation.
    let pipeline = template_resources();
    for (deploy, role) in [
        (resource(&pipeline, "DeployDevRole"), "DevCloudFormationRoleArn"),
        (resource(&resources, "DeployRole"), "CloudFormationRole.Arn"),
    ] {
        let pass: Vec<Node> = statements(&deploy)
            .into_iter()
            .filter(|s| words(s.get("Action")).iter().any(|a| a == "iam:PassRole"))
            .collect();
        assert_eq!(pass.len(), 1);
        assert_eq!(words(pass[0].get("Resource")).join("."), role);
        let to = words(
            pass[0].get("Condition").and_then(|c| c.get("StringEquals")).and_then(|c| c.get("iam:PassedToService")),
        );
        assert_eq!(to, ["cloudformation.amazonaws.com"]);
    }
    let deploy = resource(&resources, "DeployRole");
    let trust = deploy.get("Properties").unwrap().get("AssumeRolePolicyDocument").unwrap();
    let statement = &statements(trust)[0];
    // The pipeline's DeployProdRole, and its RollbackRole only when that parameter is given.
    assert_eq!(
        words(statement.get("Principal").and_then(|p| p.get("AWS"))),
        ["HasRollbackPrincipal", "DeployPrincipalArn", "RollbackPrincipalArn", "DeployPrincipalArn"]
    );
    let external_id =
        statement.get("Condition").and_then(|c| c.get("StringEquals")).and_then(|c| c.get("sts:ExternalId"));
    assert_eq!(words(external_id), ["ExternalId"]);
}

/// What stack-deployer and the site check call is what their roles allow: DescribeStackResource
/// (the path to a function), the artifact bucket's HEAD (GetObject, and ListBucket so a missing
/// key is a 404), PUT and GET; the site check's HEAD, list and public access block.
#[test]
fn the_deploy_and_site_check_roles_allow_what_the_code_calls() {
    let resources = template_resources();
    let allowed = |role: &str| -> Vec<(String, Vec<String>)> {
        statements(&resource(&resources, role))
            .into_iter()
            .filter(is_allow)
            .flat_map(|s| {
                let on = words(s.get("Resource"));
                words(s.get("Action")).into_iter().map(move |a| (a, on.clone()))
            })
            .collect()
    };
    let grants = |role: &str, action: &str, on: &str| {
        allowed(role).iter().any(|(a, r)| a == action && r.iter().any(|r| r.contains(on)))
    };
    for (action, on) in [
        ("cloudformation:DescribeStackResource", "stack/${AppStackPrefix}-dev*"),
        ("cloudformation:ListChangeSets", "stack/${AppStackPrefix}-dev*"),
        ("cloudformation:ListStackResources", "stack/${AppStackPrefix}-dev*"),
        ("cloudformation:CreateChangeSet", "stack/${AppStackPrefix}-dev*"),
        ("s3:ListBucket", "s3:::${DevArtifactBucketName}"),
        ("s3:GetObject", "s3:::${DevArtifactBucketName}/*"),
        ("s3:PutObject", "s3:::${DevArtifactBucketName}/*"),
        ("lambda:UpdateFunctionCode", "function:${AppStackPrefix}-dev*"),
        ("lambda:GetFunctionConfiguration", "function:${AppStackPrefix}-dev*"),
    ] {
        assert!(grants("DeployDevRole", action, on), "DeployDevRole lacks {action} on {on}");
    }
    for (action, on) in [
        ("s3:GetObject", "site-dev-${AWS::AccountId}/*"),
        ("s3:ListBucket", "site-dev-${AWS::AccountId}"),
        ("s3:GetBucketPublicAccessBlock", "site-dev-${AWS::AccountId}"),
    ] {
        assert!(grants("E2ERole", action, on), "E2ERole lacks {action} on {on}");
    }
    assert!(!allowed("E2ERole").iter().any(|(a, _)| a.starts_with("cloudformation:")), "the check reads no stack");
    // The execution role reads the nested templates and zips where stack-deployer put them.
    let account = resources_of("cfn/app-account.yaml");
    let role = resource(&account, "CloudFormationRole");
    assert!(statements(&role).iter().filter(|s| is_allow(s)).any(|s| {
        words(s.get("Action")).iter().any(|a| a == "s3:GetObject")
            && words(s.get("Resource")).iter().any(|r| r.ends_with("s3:::${ArtifactBucketName}/*"))
    }));
}

/// Each CodeBuild project writes only its own output artifact (no stage can replace the toolkit
/// or another stage's run folder), the status table's writes are bound to their partitions
/// (only DeployProd marks a success), the bucket is TLS-only for every action, the topic's key
/// is the pipeline's own with EventBridge and CodeStar Notifications allowed, and the external
/// id is read from Parameter Store, never a plaintext variable.
#[test]
fn the_pipeline_template_keeps_each_stage_to_its_own_artifacts_records_and_secrets() {
    let resources = template_resources();
    // project -> role, and project -> the output artifact of its action.
    let mut outputs = std::collections::BTreeMap::new();
    let pipeline = resource(&resources, "Pipeline");
    for stage in pipeline.get("Properties").unwrap().get("Stages").unwrap().items() {
        for action in stage.get("Actions").unwrap().items() {
            let Some(project) = action.get("Configuration").and_then(|c| c.get("ProjectName")) else { continue };
            let output =
                action.get("OutputArtifacts").unwrap().items()[0].get("Name").unwrap().as_str().unwrap().to_owned();
            outputs.insert(words(Some(project)).concat(), output);
        }
    }
    let common = resource(&resources, "StageCommonPolicy");
    let writes = |node: &Node| -> Vec<String> {
        statements(node)
            .into_iter()
            .filter(|s| is_allow(s) && words(s.get("Action")).iter().any(|a| a == "s3:PutObject"))
            .flat_map(|s| words(s.get("Resource")))
            .collect()
    };
    assert!(writes(&common).is_empty(), "every stage may write any artifact: {:?}", writes(&common));
    assert_eq!(outputs.len(), 9, "{outputs:?}");
    for (key, project) in
        resources.iter().filter(|(_, r)| r.get("Type").and_then(Node::as_str) == Some("AWS::CodeBuild::Project"))
    {
        let role_name = words(project.get("Properties").unwrap().get("ServiceRole"))
            .concat()
            .trim_end_matches("Arn")
            .trim_end_matches('.')
            .to_owned();
        let role = resource(&resources, &role_name);
        let written: Vec<String> =
            writes(&role).into_iter().filter(|r| r.starts_with("${ArtifactBucket.Arn}")).collect();
        let own = match outputs.get(key) {
            // The one project outside the pipeline, started by hand: it writes no stage's
            // artifact, only the file store's copy its rollback moves back.
            None => {
                assert_eq!(key, "RollbackProject", "a project no pipeline action runs");
                vec!["${ArtifactBucket.Arn}/pipeline-state/*".to_owned()]
            }
            Some(output) => {
                let mut own = vec![format!("${{ArtifactBucket.Arn}}/*/{output}/*")];
                // The toolkit's binaries, kept per version: only their builder writes them
                // (DeployProd runs what that prefix holds).
                if output == "Toolkit" {
                    own.push("${ArtifactBucket.Arn}/toolkit-cache/*".to_owned());
                }
                own
            }
        };
        assert_eq!(written, own, "{role_name} ({key})");
        // Reading the status table is every stage's; writing is bound to partitions.
        for statement in statements(&role).iter().chain(statements(&common).iter()).filter(|s| is_allow(s)) {
            let actions = words(statement.get("Action"));
            if !actions
                .iter()
                .any(|a| ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"].contains(&a.as_str()))
            {
                continue;
            }
            let keys = words(
                statement
                    .get("Condition")
                    .and_then(|c| c.get("ForAllValues:StringLike"))
                    .and_then(|c| c.get("dynamodb:LeadingKeys")),
            );
            assert!(!keys.is_empty(), "{role_name}: a write to the status table without a partition condition");
            // A rollback moves an environment's success mark back with it (the next diff base).
            if keys.iter().any(|k| k == "success#*") {
                assert!(
                    ["DeployProdRole", "RollbackRole"].contains(&role_name.as_str()),
                    "only production's deploy and a rollback mark a success: {role_name}"
                );
            }
        }
    }

    // TLS only, for every action on the bucket and its objects.
    let policy = resource(&resources, "ArtifactBucketPolicy");
    let tls = statements(&policy)
        .into_iter()
        .find(|s| {
            !is_allow(s)
                && words(s.get("Condition").and_then(|c| c.get("Bool")).and_then(|b| b.get("aws:SecureTransport")))
                    == ["false"]
        })
        .expect("a TLS-only statement");
    assert_eq!(words(tls.get("Action")), ["s3:*"]);
    assert_eq!(words(tls.get("Resource")), ["ArtifactBucket", "Arn", "${ArtifactBucket.Arn}/*"]);

    // The topic's key: customer-managed, EventBridge and CodeStar Notifications may use it.
    let topic = resource(&resources, "NotificationTopic");
    let key_name = words(topic.get("Properties").unwrap().get("KmsMasterKeyId")).concat();
    let key = resource(&resources, &key_name);
    assert_eq!(key.get("Type").and_then(Node::as_str), Some("AWS::KMS::Key"));
    let services: Vec<String> = statements(&key)
        .iter()
        .filter(|s| words(s.get("Action")).iter().any(|a| a.starts_with("kms:GenerateDataKey")))
        .flat_map(|s| words(s.get("Principal").and_then(|p| p.get("Service"))))
        .collect();
    assert!(services.iter().any(|s| s == "events.amazonaws.com"), "{services:?}");
    assert!(services.iter().any(|s| s == "codestar-notifications.amazonaws.com"), "{services:?}");

    // No NoEcho parameter becomes a plaintext variable; the external id comes from Parameter Store.
    let template = read_yaml(&root().join("cfn/pipeline.yaml"));
    let secret: Vec<String> = template
        .get("Parameters")
        .unwrap()
        .entries()
        .iter()
        .filter(|(_, p)| p.get("NoEcho").is_some())
        .map(|(k, _)| k.name.clone())
        .collect();
    let mut external_id = Vec::new();
    for (key, project) in
        resources.iter().filter(|(_, r)| r.get("Type").and_then(Node::as_str) == Some("AWS::CodeBuild::Project"))
    {
        let env = project.get("Properties").unwrap().get("Environment").unwrap().get("EnvironmentVariables").unwrap();
        for var in env.items() {
            let value = words(var.get("Value")).concat();
            let kind = var.get("Type").and_then(Node::as_str).unwrap_or("PLAINTEXT");
            assert!(
                !(kind == "PLAINTEXT" && secret.contains(&value)),
                "{key}: the NoEcho {value} as a plaintext variable"
            );
            if var.get("Name").and_then(Node::as_str) == Some("PROD_EXTERNAL_ID") {
                external_id.push((key.clone(), kind.to_owned(), value));
            }
        }
    }
    // Production's deploy and the rollback (which reaches production through the same role).
    let from_parameter_store =
        |project: &str| (project.to_owned(), "PARAMETER_STORE".to_owned(), "ProdExternalIdParameter".to_owned());
    assert_eq!(external_id, [from_parameter_store("DeployProdProject"), from_parameter_store("RollbackProject")]);
}

/// The buildspecs pass what the template gives them: the execution role to every stack deploy,
/// the external id read from Parameter Store to both production deployers, and the toolkit's
/// hash from the Toolkit action (an output variable no stage can write) to DeployProd.
#[test]
fn the_buildspecs_pass_the_execution_role_the_external_id_and_the_toolkit_hash() {
    let specs: std::collections::BTreeMap<String, Node> = buildspecs().into_iter().collect();
    for name in ["deploy.yml", "deploy-prod.yml"] {
        let calls: Vec<Vec<String>> = commands(&specs[name]).iter().flat_map(|c| toolkit_calls(c)).collect();
        let deployer = calls.iter().find(|c| c[0] == "stack-deployer").unwrap();
        assert!(deployer.windows(2).any(|w| w == ["--cfn-role-arn", "$CFN_ROLE_ARN"]), "{name}: {deployer:?}");
    }
    let prod = commands(&specs["deploy-prod.yml"]).join("\n");
    for tool in ["stack-deployer --env", "frontend-publisher publish"] {
        let line = prod.lines().find(|l| l.trim_start().starts_with(tool)).unwrap();
        assert!(line.contains("--external-id \"$PROD_EXTERNAL_ID\""), "{line}");
    }
    assert!(help("stack-deployer", None).contains("--external-id"));
    assert!(help("frontend-publisher", Some("publish")).contains("--external-id"));
    let exported = strings(specs["toolkit.yml"].get("env").and_then(|e| e.get("exported-variables")));
    assert_eq!(exported, ["toolkit_sha256"]);
    let template = std::fs::read_to_string(root().join("cfn/pipeline.yaml")).unwrap();
    assert!(
        template
            .contains(r##"{"name":"TOOLKIT_SHA256","value":"#{ToolkitVariables.toolkit_sha256}","type":"PLAINTEXT"}"##)
    );
    let resources = template_resources();
    for project in ["DeployDevProject", "DeployProdProject"] {
        let env = resource(&resources, project);
        let names = words(env.get("Properties").unwrap().get("Environment").unwrap().get("EnvironmentVariables"));
        assert!(names.iter().any(|n| n == "CFN_ROLE_ARN"), "{project}: {names:?}");
    }
}

/// A Toolkit artifact whose binaries do not match the hash the Toolkit stage recorded refuses
/// DeployProd before any binary runs; the matching one goes on.
#[test]
fn a_toolkit_artifact_that_does_not_match_its_hash_refuses_deploy_prod() {
    let repo = test_support::sample_monorepo();
    let sums = |dir: &Path| {
        let out = Command::new("sh")
            .current_dir(dir.join("bin"))
            .arg("-c")
            .arg(format!("sha256sum {} > SHA256SUMS && sha256sum SHA256SUMS", TOOLKIT.join(" ")))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
    };
    let env = |hash: &str| {
        vec![("TOOLKIT_SHA256".to_owned(), hash.to_owned()), ("APPROVED_BY".to_owned(), "alice".to_owned())]
    };

    // A binary replaced after the Toolkit stage: the sums no longer match.
    let rehearsal = Rehearsal::new(repo.path(), Vec::new());
    let hash = sums(&rehearsal.toolkit);
    let bin = rehearsal.toolkit.join("bin/stack-deployer");
    std::fs::remove_file(&bin).unwrap();
    std::fs::write(&bin, "#!/bin/sh\necho replaced\n").unwrap();
    let tampered = Rehearsal { env: env(&hash), ..rehearsal };
    let (ok, _, text) = tampered.stage("deploy-prod.yml", None);
    assert!(!ok, "{text}");
    assert!(text.contains("the Toolkit artifact does not match the hash its stage recorded"), "{text}");
    assert!(!text.contains("status-report") && !text.contains("replaced"), "a binary ran: {text}");

    // The sums file rewritten to match: its own hash (held by the pipeline) does not.
    let rehearsal = Rehearsal::new(repo.path(), Vec::new());
    let hash = sums(&rehearsal.toolkit);
    let _ = sums(&Rehearsal::new(repo.path(), Vec::new()).toolkit);
    std::fs::write(rehearsal.toolkit.join("bin/SHA256SUMS"), "0000  stack-deployer\n").unwrap();
    let tampered = Rehearsal { env: env(&hash), ..rehearsal };
    let (ok, _, text) = tampered.stage("deploy-prod.yml", None);
    assert!(!ok && text.contains("does not match"), "{text}");

    // The artifact as built: verified, and the stage goes on to the toolkit.
    let rehearsal = Rehearsal::new(repo.path(), Vec::new());
    let hash = sums(&rehearsal.toolkit);
    let good = Rehearsal { env: env(&hash), ..rehearsal };
    let (_, _, text) = good.stage("deploy-prod.yml", None);
    assert!(!text.contains("does not match"), "{text}");
}

/// DeployProd records the approval CodePipeline holds for its own execution, not a name from
/// an environment variable: the buildspec asks `status-report approve --codepipeline` with the
/// pipeline's name and the execution id the template passes (CodePipeline's, which no stage can
/// write), a real build without them refuses, the role may read that pipeline's action
/// executions only, and production's site is checked before the commit is marked.
#[test]
fn deploy_prod_takes_the_approval_from_codepipeline_and_checks_the_site_before_the_mark() {
    let specs: std::collections::BTreeMap<String, Node> = buildspecs().into_iter().collect();
    let prod = commands(&specs["deploy-prod.yml"]).join("\n");
    assert!(
        prod.contains(r#"status-report approve --codepipeline "$PIPELINE_NAME" --execution "$PIPELINE_EXECUTION_ID""#),
        "{prod}"
    );
    assert!(prod.contains("refusing to deploy to production"), "{prod}");
    let help = help("status-report", Some("approve"));
    assert!(help.contains("--codepipeline") && help.contains("--execution"), "{help}");
    let check = prod.find("frontend-publisher check --env").expect("the site check runs in DeployProd");
    let mark = prod.find("status-report mark-success").unwrap();
    let publish = prod.find("frontend-publisher publish").unwrap();
    assert!(publish < check && check < mark, "publish, check, then the mark: {prod}");

    let template = std::fs::read_to_string(root().join("cfn/pipeline.yaml")).unwrap();
    assert!(
        template.contains(
            r##"{"name":"PIPELINE_EXECUTION_ID","value":"#{codepipeline.PipelineExecutionId}","type":"PLAINTEXT"}"##
        ),
        "the DeployProd action passes its execution id"
    );
    let resources = template_resources();
    let project = resource(&resources, "DeployProdProject");
    let names = words(project.get("Properties").unwrap().get("Environment").unwrap().get("EnvironmentVariables"));
    assert!(names.iter().any(|n| n == "PIPELINE_NAME"), "{names:?}");
    let role = std::fs::read_to_string(root().join("cfn/pipeline.yaml")).unwrap();
    let start = role.find("  DeployProdRole:").unwrap();
    let end = start + role[start..].find("\n  # ").unwrap_or(role.len() - start);
    let block = &role[start..end];
    assert!(block.contains("codepipeline:ListActionExecutions"), "{block}");
    assert!(block.contains(":${ProjectName}-pipeline\""), "only this pipeline: {block}");
}

/// The stage contract through production: the same commits run by the stage binaries in the
/// README's CodeBuild order (Diff → Validate → Build → Test → DeployDev → Status → E2E →
/// DeployProd, artifacts passed as folders, the approval by `status-report approve`) and by
/// `cargo xtask pipeline --approve`, each against its own emulator, record the same steps
/// with the same statuses and skip reasons, mark the same commit as production's, and leave
/// production holding the same outputs, the same site files and the same Lambda code (the
/// zips are deterministic, so the code hashes must match byte for byte). Two commits: the
/// first deploys everything; the second changes one function only, so the stacks, the site
/// and its check are skipped by both paths with the same reasons.
#[test]
fn the_binaries_and_the_pipeline_record_the_same_run_through_production() {
    // One commit and no earlier production: every component changed (`--all-on-missing-base`),
    // so both paths create every stack, publish the site and update every function.
    let repo = support::rehearsal_sample();
    assert_eq!(repo.git(&["rev-list", "--count", "HEAD"]).trim(), "1");

    let binaries_moto = test_support::Moto::start();
    let aws = test_support::python().parent().unwrap().join("aws");
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", binaries_moto.endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("ARTIFACT_BUCKET", "xtask-contract-artifacts"),
        ("APPROVED_BY", "alice"),
        // What CloudFormation acts as (the template's execution roles); not compared, as the
        // sample's pipeline.toml names none for the pipeline's path.
        ("CFN_ROLE_ARN", "arn:aws:iam::123456789012:role/xtask-contract-cfn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for bucket in ["xtask-contract-artifacts", "pipeline-dashboard-artifacts-dev", "pipeline-dashboard-artifacts-prod"]
    {
        let made = Command::new(&aws).args(["s3", "mb", &format!("s3://{bucket}")]).envs(env.clone()).output().unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
    let pipeline_moto = test_support::Moto::start();
    let clone = tempfile::tempdir().unwrap();
    let cloned = Command::new("git").args(["clone", "-q"]).arg(repo.path()).arg(clone.path()).status().unwrap();
    assert!(cloned.success());

    let handler = std::fs::read_to_string(repo.path().join("lambda/api-handler/index.py")).unwrap();
    for round in ["every component", "one function"] {
        if round == "one function" {
            repo.commit_files("api-handler only", &[("lambda/api-handler/index.py", &format!("{handler}\n# v2\n"))]);
            let pulled =
                Command::new("git").args(["pull", "-q", "--ff-only"]).current_dir(clone.path()).status().unwrap();
            assert!(pulled.success());
        }
        let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
        let last = codebuild_run(repo.path(), &env);
        let binaries = records(&last);

        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["pipeline", "--repo"])
            .arg(clone.path())
            .args([
                "--endpoint-url",
                &pipeline_moto.endpoint,
                "--all-on-missing-base",
                "--approve",
                "--approver",
                "alice",
            ])
            .env("PIP_NO_INDEX", "1")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{round}: xtask pipeline: {text}");
        let store = run_state::FileStore::open(&clone.path().join(".pipeline")).unwrap();
        let pipeline = {
            use run_state::Store;
            let run = store.run_ids().unwrap().pop().expect("the pipeline's run");
            store.run(&run).unwrap()
        };

        assert!(binaries.iter().chain(&pipeline).all(|r| r.commit == head), "{round}: a record of another commit");
        let differences = compare_runs(&binaries, &pipeline);
        assert!(differences.is_empty(), "{round}: the two paths recorded different runs:\n{}", differences.join("\n"));
        let prod: Vec<_> = binaries.iter().filter(|r| r.step == run_state::Step::ProdDeploy).collect();
        assert!(
            prod.iter().any(|r| r.status == run_state::Status::Passed),
            "{round}: nothing reached production: {prod:#?}"
        );
        if round == "one function" {
            let site = prod.iter().find(|r| r.component == "frontend").expect("the site's prod-deploy");
            assert_eq!(site.status, run_state::Status::Skipped, "{round}: {site:?}");
        }
        // Both mark the commit as production's (the next run's base).
        let binaries_store = run_state::FileStore::open(&last.join("artifacts/.pipeline")).unwrap();
        for (name, store) in [("binaries", &binaries_store), ("pipeline", &store)] {
            use run_state::Store;
            let success = store.last_success("prod").unwrap().unwrap_or_else(|| panic!("{name}: prod not marked"));
            assert_eq!(success.commit, head, "{round}: {name}");
        }
        // And production holds the same thing.
        let (binaries_outputs, binaries_code, binaries_site) = production_state(&binaries_moto.endpoint, &SAMPLE_PROD);
        let (pipeline_outputs, pipeline_code, pipeline_site) = production_state(&pipeline_moto.endpoint, &SAMPLE_PROD);
        assert!(!binaries_code.is_empty(), "{round}: no Lambda function in production");
        assert_eq!(binaries_code, pipeline_code, "{round}: different Lambda code in production");
        assert_eq!(binaries_outputs, pipeline_outputs, "{round}: different stack outputs in production");
        assert!(binaries_site.iter().any(|k| k == "index.html"), "{round}: no site in production: {binaries_site:?}");
        assert_eq!(binaries_site, pipeline_site, "{round}: different sites in production");
        let _ = std::fs::remove_dir_all(&last);
    }
}

/// `cargo xtask codebuild-stages`: which stages after Diff an execution enters, from the
/// BeforeEntry conditions cfn/pipeline.yaml declares, evaluated on what a rehearsed Diff stage
/// exported. Every line is `STAGE: enter` or `STAGE: skip: WHY`.
fn stages_after_diff(diff_out: &Path) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["codebuild-stages", "--after", "Diff", "--template"])
        .arg(root().join("cfn/pipeline.yaml"))
        .arg("--variables")
        .arg(format!("Diff={}", diff_out.join("exported.env").display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text.lines().map(|l| l.split_once(": ").map(|(a, b)| (a.to_owned(), b.to_owned())).unwrap()).collect()
}

/// A no-change commit runs Diff and nothing else: every later stage is skipped by its entry
/// condition as the template declares it (read from cfn/pipeline.yaml, not a copy), evaluated on
/// the variables the rehearsed Diff stage exported; a change enters every one of them.
#[test]
fn a_no_change_commit_runs_diff_and_nothing_else() {
    let moto = test_support::Moto::shared();
    let env: Vec<(String, String)> = support::pipeline_env(&moto.endpoint)
        .into_iter()
        .chain([("ARTIFACT_BUCKET".to_owned(), "xtask-codebuild-no-change".to_owned())])
        .collect();
    support::aws_json(&["s3api", "create-bucket", "--bucket", "xtask-codebuild-no-change"], &env);
    let repo = test_support::sample_monorepo();
    repo.git(&["branch", "-M", "main"]);
    repo.git(&["commit", "-q", "--allow-empty", "-m", "nothing changed"]);

    let rehearsal = Rehearsal::new(repo.path(), env.clone());
    let (ok, diff_out, text) = rehearsal.stage("diff.yml", None);
    assert!(ok, "{text}");
    let exported = std::fs::read_to_string(diff_out.join("exported.env")).unwrap();
    assert!(exported.contains("any_changed=false"), "{exported}");
    let stages = stages_after_diff(&diff_out);
    let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["Validate", "Build", "Test", "DeployDev", "Status", "Approval", "E2E", "DeployProd"]);
    for (name, entry) in &stages {
        assert_eq!(entry, "skip: AnyChanged: #{Diff.any_changed} is `false`, not EQ `true`", "{name}");
    }

    let app = std::fs::read_to_string(repo.path().join("frontend/src/app.js")).unwrap();
    repo.commit_files("frontend change", &[("frontend/src/app.js", &format!("{app}\n// v2\n"))]);
    let rehearsal = Rehearsal::new(repo.path(), env);
    let (ok, diff_out, text) = rehearsal.stage("diff.yml", None);
    assert!(ok, "{text}");
    let stages = stages_after_diff(&diff_out);
    assert_eq!(stages.len(), names.len());
    assert!(stages.iter().all(|(_, entry)| entry == "enter"), "{stages:?}");
}

/// The Toolkit stage builds a toolkit version once: the first execution builds (a stand-in
/// `cargo` that counts its calls writes the binaries) and keeps the binaries in the artifact
/// bucket; the next execution of the same sources fetches them without calling cargo and
/// exports the same hash; a changed source is a new version, built again.
#[test]
fn the_toolkit_stage_builds_each_version_once_and_fetches_it_after() {
    let moto = test_support::Moto::shared();
    let bucket = "xtask-codebuild-toolkit-cache";
    let env: Vec<(String, String)> = support::pipeline_env(&moto.endpoint)
        .into_iter()
        .chain([("ARTIFACT_BUCKET".to_owned(), bucket.to_owned())])
        .collect();
    support::aws_json(&["s3api", "create-bucket", "--bucket", bucket], &env);
    let work = tempfile::tempdir().unwrap();
    // The stand-in cargo: one line per call in calls.log, and each binary a script naming it.
    let fake = work.path().join("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    let log = work.path().join("calls.log");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{}'\nmkdir -p target/release\nfor b in {}; do printf '#!/bin/sh\\necho %s 1.0\\n' \"$b\" > target/release/$b; chmod +x target/release/$b; done\n",
        log.display(),
        TOOLKIT.join(" ")
    );
    std::fs::write(fake.join("cargo"), script).unwrap();
    let mode: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(fake.join("cargo"), mode).unwrap();
    // The toolkit's sources, as the Toolkit stage's primary source holds them (the parts the
    // version is made of).
    let src = work.path().join("src");
    for file in ["Cargo.lock", "Cargo.toml", "crates/source-diff/src/lib.rs", "xtask/src/main.rs"] {
        std::fs::create_dir_all(src.join(file).parent().unwrap()).unwrap();
        std::fs::copy(root().join(file), src.join(file)).unwrap();
    }
    let venv = test_support::python().parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        [fake.clone(), venv].into_iter().chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let run = |n: usize| {
        // Each execution starts from the sources alone, as CodeBuild's checkout does.
        for left in ["bin", "target", "toolkit-cache.tar.gz"] {
            let _ = std::fs::remove_dir_all(src.join(left));
            let _ = std::fs::remove_file(src.join(left));
        }
        let out = work.path().join(format!("out-{n}"));
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("codebuild")
            .arg(root().join("buildspecs/toolkit.yml"))
            .arg("--src")
            .arg(&src)
            .arg("--out")
            .arg(&out)
            .env("PATH", &path)
            // No toolchain of this machine's in reach: the buildspec puts $HOME/.cargo/bin first.
            .env("HOME", work.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{text}");
        let exported = std::fs::read_to_string(out.join("exported.env")).unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default().lines().count();
        for name in TOOLKIT {
            assert!(out.join("artifacts/bin").join(name).is_file(), "the toolkit lacks {name}: {text}");
        }
        (exported, calls, text)
    };
    let (first, calls, text) = run(1);
    assert_eq!(calls, 1, "{text}");
    assert!(text.contains("not built yet; building"), "{text}");
    let (second, calls, text) = run(2);
    assert_eq!(calls, 1, "the same version was built again: {text}");
    assert!(text.contains("already built; fetched"), "{text}");
    assert_eq!(first, second);
    assert!(first.starts_with("toolkit_sha256="), "{first}");

    let lib = src.join("crates/source-diff/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{text}\n// a change\n")).unwrap();
    let (_, calls, text) = run(3);
    assert_eq!(calls, 2, "a new version was not built: {text}");
    assert!(text.contains("not built yet; building"), "{text}");
}
