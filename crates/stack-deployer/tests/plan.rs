//! Planning, pure: the sample's master stack and its nested stacks, and every bad input that
//! must be caught before anything is changed.

use std::collections::BTreeSet;
use std::path::Path;

use lambda_packager::{Architecture, LambdaSettings, Manifest, Package};
use pipeline_config::ConfigFile;
use stack_deployer::plan::ArtifactContent;
use stack_deployer::{DeploySettings, Error, Plan, PlanInputs};

fn package(dir: &Path, name: &str, content: &[u8], changed: bool) -> Package {
    let path = dir.join(format!("{name}.zip"));
    std::fs::write(&path, content).unwrap();
    let sha = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(content));
    Package {
        name: name.into(),
        path,
        code_sha256: String::new(),
        sha256: hex::encode(sha),
        size: content.len() as u64,
        unzipped_size: 0,
        files: 1,
        runtime: "python3.12".into(),
        architecture: Architecture::X86_64,
        input_hash: String::new(),
        reused: false,
        changed,
    }
}

fn plan_in(
    repo: &Path,
    env: &str,
    manifest: Option<&Manifest>,
    changed: Option<&BTreeSet<String>>,
) -> Result<Plan, Error> {
    let config = ConfigFile::load(&repo.join("pipeline.toml")).unwrap();
    let settings = DeploySettings::from_config(&config)?;
    let env = settings.environment(&config, env)?;
    let functions = match LambdaSettings::from_config(&config) {
        Ok((_, functions)) => functions,
        Err(_) => Vec::new(),
    };
    let inputs = PlanInputs { repo, manifest, functions: &functions, changed, only: &[] };
    stack_deployer::plan(&env, inputs, &|var| (var == "SET_VAR").then(|| "value".to_string()))
}

#[test]
fn the_sample_master_stack_is_packaged_children_first_with_content_addressed_urls() {
    let repo = test_support::sample_monorepo();
    let zips = tempfile::tempdir().unwrap();
    let manifest = Manifest {
        packages: vec![
            package(zips.path(), "api-handler", b"api v1", true),
            package(zips.path(), "orchestration", b"orch v1", false),
        ],
    };
    let plan = plan_in(repo.path(), "dev", Some(&manifest), None).unwrap();
    assert_eq!(plan.bucket, "pipeline-dashboard-artifacts-dev");
    assert_eq!(plan.stacks.len(), 1);
    let master = &plan.stacks[0];
    assert_eq!(master.stack_name, "pipeline-dashboard-dev");
    assert_eq!(master.template_key, None, "a small master goes inline");

    // The three nested templates, each under a key holding its hash, are in the master's body.
    let templates: Vec<_> = plan.artifacts.iter().filter(|a| a.key.contains("/templates/")).collect();
    assert_eq!(templates.len(), 3, "{:#?}", plan.artifacts);
    let body: serde_json::Value = serde_json::from_slice(&master.body).unwrap();
    for artifact in &templates {
        let ArtifactContent::Template(bytes) = &artifact.content else { panic!("a template") };
        let sha = hex::encode(sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(bytes)));
        assert_eq!(artifact.sha256, sha);
        assert!(
            artifact.key.starts_with("pipeline-dashboard/templates/") && artifact.key.contains(&sha[..16]),
            "{}",
            artifact.key
        );
        let url = format!("https://pipeline-dashboard-artifacts-dev.s3.amazonaws.com/{}", artifact.key);
        assert!(String::from_utf8_lossy(&master.body).contains(&url), "{url} not in the master");
    }
    assert_eq!(
        body["Resources"]["StorageStack"]["Properties"]["TemplateURL"].as_str().unwrap(),
        format!(
            "https://pipeline-dashboard-artifacts-dev.s3.amazonaws.com/{}",
            templates.iter().find(|a| a.source == "cfn/storage.yaml").unwrap().key
        )
    );
    // Short forms became long forms, so the JSON body is a valid template.
    assert_eq!(
        body["Resources"]["StorageStack"]["Properties"]["Parameters"]["Environment"],
        serde_json::json!({"Ref": "Environment"})
    );

    // The functions the lambdas template names by fixed keys are updated after the stack, by path.
    let updates: Vec<(String, String)> =
        master.code_updates.iter().map(|u| (u.function.clone(), u.path.join("/"))).collect();
    assert_eq!(
        updates,
        [
            ("api-handler".to_string(), "LambdasStack/ApiHandlerFunction".to_string()),
            ("orchestration".into(), "LambdasStack/OrchestrationFunction".into())
        ]
    );
    assert!(plan.artifacts.iter().any(|a| a.key.starts_with("pipeline-dashboard/lambda/api-handler-")));
    // orchestration did not change in the run: its zip is not uploaded.
    assert!(!plan.artifacts.iter().any(|a| a.key.contains("/lambda/orchestration-")));

    // The same inputs plan the same bytes; the dry run names what will happen.
    let again = plan_in(repo.path(), "dev", Some(&manifest), None).unwrap();
    assert_eq!(again, plan);
    let text = plan.describe();
    assert!(text.contains("master -> pipeline-dashboard-dev (template cfn/master.yaml"), "{text}");
    assert!(text.contains("capabilities: CAPABILITY_IAM"), "{text}");
    assert!(text.contains("lambda code: api-handler (LambdasStack/ApiHandlerFunction)"), "{text}");

    // A change in a nested template changes its key and the master's body.
    let lambdas = repo.path().join("cfn/lambdas.yaml");
    let text = std::fs::read_to_string(&lambdas).unwrap();
    std::fs::write(
        &lambdas,
        text.replace("RetentionInDays: !If [IsProd, 90, 14]", "RetentionInDays: !If [IsProd, 90, 30]"),
    )
    .unwrap();
    let changed = plan_in(repo.path(), "dev", Some(&manifest), None).unwrap();
    assert_ne!(changed.stacks[0].template_sha256, plan.stacks[0].template_sha256);
    let keys = |p: &Plan| p.artifacts.iter().map(|a| a.key.clone()).collect::<BTreeSet<_>>();
    assert_eq!(keys(&changed).difference(&keys(&plan)).count(), 1, "only the lambdas template has a new key");
}

#[test]
fn stacks_whose_components_did_not_change_are_skipped_with_the_reason() {
    let repo = test_support::sample_monorepo();
    let nothing = BTreeSet::from(["frontend".to_string()]);
    let plan = plan_in(repo.path(), "dev", None, Some(&nothing)).unwrap();
    assert!(plan.stacks.is_empty());
    assert_eq!(plan.skipped[0].reason, "none of its components changed (infra)");
    let infra = BTreeSet::from(["infra".to_string()]);
    assert_eq!(plan_in(repo.path(), "dev", None, Some(&infra)).unwrap().stacks.len(), 1);
    // --only deploys the stacks it names whatever the diff says, and refuses an unknown one.
    let config = ConfigFile::load(&repo.path().join("pipeline.toml")).unwrap();
    let env = DeploySettings::from_config(&config).unwrap().environment(&config, "dev").unwrap();
    let only = ["master".to_string()];
    let functions = LambdaSettings::from_config(&config).unwrap().1;
    let inputs =
        PlanInputs { repo: repo.path(), manifest: None, functions: &functions, changed: Some(&nothing), only: &only };
    assert_eq!(stack_deployer::plan(&env, inputs, &|_| None).unwrap().stacks.len(), 1);
    let typo = ["mastr".to_string()];
    let inputs = PlanInputs { only: &typo, ..inputs };
    assert_eq!(
        stack_deployer::plan(&env, inputs, &|_| None).unwrap_err().to_string(),
        "no stack `mastr` in [deploy.stacks] (there are: master); fix --only"
    );
}

/// A small monorepo with one stack, `[deploy]` written from `stack`.
fn repo_with(template: &str, stack: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cfn")).unwrap();
    std::fs::write(dir.path().join("cfn/app.yaml"), template).unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        format!("[deploy]\nartifact_bucket = \"artifacts\"\n\n[deploy.stacks.app]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"app-{{env}}\"\n{stack}\n"),
    )
    .unwrap();
    dir
}

const QUEUE: &str = "Parameters:\n  Stage:\n    Type: String\n  Size:\n    Type: Number\n    Default: 5\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n";

#[test]
fn bad_inputs_are_errors_naming_the_fix() {
    let err = |template: &str, stack: &str| {
        plan_in(repo_with(template, stack).path(), "dev", None, None).unwrap_err().to_string()
    };

    assert_eq!(
        err(QUEUE, "parameters = { Stage = \"x\", Colour = \"red\" }"),
        "deploy.stacks.app.parameters.Colour: cfn/app.yaml declares no parameter `Colour` (it declares: Size, Stage); remove it or fix the name"
    );
    assert_eq!(
        err(QUEUE, "parameters = { Size = \"3\" }"),
        "deploy.stacks.app.parameters: cfn/app.yaml requires `Stage` (it has no Default); add it"
    );
    assert_eq!(
        err(QUEUE, "parameters = { Stage = { env = \"UNSET_VAR\" } }"),
        "deploy.stacks.app.parameters.Stage: the environment variable `UNSET_VAR` is not set; export it"
    );
    let role = "Resources:\n  Role:\n    Type: AWS::IAM::Role\n    Properties:\n      AssumeRolePolicyDocument: {}\n";
    assert_eq!(
        err(role, ""),
        "deploy.stacks.app.capabilities: add \"CAPABILITY_IAM\" (cfn/app.yaml: Role is AWS::IAM::Role)"
    );
    let named = role
        .replace("      AssumeRolePolicyDocument: {}\n", "      RoleName: fixed\n      AssumeRolePolicyDocument: {}\n");
    assert!(err(&named, "capabilities = [\"CAPABILITY_IAM\"]").contains("add \"CAPABILITY_NAMED_IAM\""));
    let serverless = "Transform: AWS::Serverless-2016-10-31\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n";
    assert!(err(serverless, "").contains("add \"CAPABILITY_AUTO_EXPAND\" (cfn/app.yaml has a Transform)"));

    let broken = "Resources:\n  Queue:\n    Type: [unclosed\n";
    let message = err(broken, "");
    assert!(message.starts_with("cfn/app.yaml: not a readable template; fix it at the position shown"), "{message}");
    let source = plan_in(repo_with(broken, "").path(), "dev", None, None).unwrap_err();
    let Error::Template { source, .. } = source else { panic!("a template error") };
    assert_eq!(source.pos.line, 4, "{source}");

    let outside = "Resources:\n  Child:\n    Type: AWS::CloudFormation::Stack\n    Properties:\n      TemplateURL: ../../etc/passwd\n";
    assert!(err(outside, "").contains("Child names `../../etc/passwd`, which leads outside the monorepo"));
    let code = "Resources:\n  Fn:\n    Type: AWS::Lambda::Function\n    Properties:\n      Code: src/fn\n";
    assert!(err(code, "").contains("Fn names `src/fn`, which does not exist"), "{}", err(code, ""));
}

#[test]
fn a_local_zip_is_rewritten_and_a_big_template_goes_by_url() {
    let mut template = String::from(QUEUE);
    template.push_str("  Fn:\n    Type: AWS::Lambda::Function\n    Properties:\n      Code: ../build/fn.zip\n      Role: arn:aws:iam::1:role/x\n");
    // Over 51,200 bytes once packaged.
    template.push_str("Outputs:\n");
    for i in 0..900 {
        template.push_str(&format!("  Out{i}:\n    Value: a-long-enough-value-for-the-template-body-{i}\n"));
    }
    let repo = repo_with(&template, "parameters = { Stage = { env = \"SET_VAR\" } }");
    std::fs::create_dir_all(repo.path().join("build")).unwrap();
    std::fs::write(repo.path().join("build/fn.zip"), b"zip bytes").unwrap();
    let plan = plan_in(repo.path(), "dev", None, None).unwrap();
    let stack = &plan.stacks[0];
    assert!(stack.body.len() > 51_200);
    let key = stack.template_key.as_deref().expect("a big template goes by URL");
    assert!(plan.artifacts.iter().any(|a| a.key == key));
    let body: serde_json::Value = serde_json::from_slice(&stack.body).unwrap();
    let code = &body["Resources"]["Fn"]["Properties"]["Code"];
    assert_eq!(code["S3Bucket"], "artifacts");
    assert!(code["S3Key"].as_str().unwrap().starts_with("lambda/fn-"), "{code}");
    // The dry run never shows an environment variable's value.
    let text = plan.describe();
    assert!(text.contains("Stage=$SET_VAR") && !text.contains("value"), "{text}");
}

/// The seed's rule: a failing Lambda test stops that Lambda's code update and nothing else.
/// The master stack (component `infra`, whose own checks passed) is kept; `api-handler`'s
/// update and its zip are dropped from the plan, `frontend-builder`'s stay.
#[test]
fn a_refused_function_loses_its_code_update_and_its_upload_but_not_the_stack() {
    use run_state::{PIPELINE, Status, Step, StepRecord};
    let repo = test_support::sample_monorepo();
    let zips = tempfile::tempdir().unwrap();
    let manifest = Manifest {
        packages: vec![
            package(zips.path(), "api-handler", b"api v2", true),
            package(zips.path(), "frontend-builder", b"builder v2", true),
        ],
    };
    let changed: BTreeSet<String> =
        ["infra", "api-handler", "frontend-builder"].into_iter().map(String::from).collect();
    let mut plan = plan_in(repo.path(), "dev", Some(&manifest), Some(&changed)).unwrap();
    assert!(plan.artifacts.iter().any(|a| a.source == "api-handler"));

    let rec = |component: &str, step: Step, status: Status| StepRecord::new("r1", "abc", component, step, status);
    let records = vec![
        rec(PIPELINE, Step::Validate, Status::Passed),
        rec("api-handler", Step::Test, Status::Failed),
        rec("frontend-builder", Step::Test, Status::Passed),
    ];
    let required = gate::Requirements::from_pairs([
        ("api-handler", Step::Test),
        ("frontend-builder", Step::Test),
        ("infra", Step::Build),
    ]);
    let decision = gate::decide_deploy(&records, Some(&required), &gate::GatePolicy::default(), "dev");
    let refused = stack_deployer::stage::apply_decision(&mut plan, &decision);

    assert_eq!(refused.keys().collect::<Vec<_>>(), ["api-handler"]);
    assert_eq!(plan.stacks.len(), 1, "the master stack still deploys");
    let updates: Vec<&str> = plan.stacks[0].code_updates.iter().map(|u| u.function.as_str()).collect();
    assert_eq!(updates, ["frontend-builder"]);
    assert!(!plan.artifacts.iter().any(|a| a.source == "api-handler"), "the refused zip is not uploaded");
    assert!(plan.artifacts.iter().any(|a| a.source == "frontend-builder"));
    assert!(plan.artifacts.iter().any(|a| a.source == "cfn/lambdas.yaml"), "nested templates stay");
    let described = plan.describe();
    assert!(
        described.contains("lambda code not updated: api-handler (component api-handler): its test failed"),
        "{described}"
    );
}

/// A refused environment (validate failed) skips every stack and uploads nothing.
#[test]
fn a_refused_environment_keeps_nothing() {
    use run_state::{PIPELINE, Status, Step, StepRecord};
    let repo = test_support::sample_monorepo();
    let changed: BTreeSet<String> = ["infra"].into_iter().map(String::from).collect();
    let mut plan = plan_in(repo.path(), "dev", None, Some(&changed)).unwrap();
    let records = vec![StepRecord::new("r1", "abc", PIPELINE, Step::Validate, Status::Failed)];
    let required = gate::Requirements::from_pairs([("infra", Step::Build)]);
    let decision = gate::decide_deploy(&records, Some(&required), &gate::GatePolicy::default(), "dev");
    stack_deployer::stage::apply_decision(&mut plan, &decision);
    assert!(plan.stacks.is_empty() && plan.artifacts.is_empty(), "{}", plan.describe());
    assert!(plan.skipped[0].reason.starts_with("refused: infra: `dev` refused: validate failed"), "{:?}", plan.skipped);
}

/// A nested template nothing is rewritten in is uploaded as the repository holds it (comments
/// and number forms kept, under its own extension): what the repository's own `aws s3 sync`
/// would hold, not a JSON re-serialisation of it.
#[test]
fn a_nested_template_with_nothing_rewritten_is_uploaded_byte_for_byte() {
    let repo = test_support::sample_monorepo();
    let zips = tempfile::tempdir().unwrap();
    let manifest = Manifest {
        packages: vec![
            package(zips.path(), "api-handler", b"api v1", true),
            package(zips.path(), "orchestration", b"orch v1", false),
        ],
    };
    let storage = repo.path().join("cfn/storage.yaml");
    let text = std::fs::read_to_string(&storage).unwrap();
    std::fs::write(&storage, format!("# kept as written\n{text}\nMetadata:\n  Version: 1.10\n")).unwrap();
    let plan = plan_in(repo.path(), "dev", Some(&manifest), None).unwrap();
    for source in ["cfn/storage.yaml", "cfn/lambdas.yaml", "cfn/frontend-hosting.yaml"] {
        let artifact = plan.artifacts.iter().find(|a| a.source == source).unwrap();
        let ArtifactContent::Template(bytes) = &artifact.content else { panic!("{source}: a template") };
        assert_eq!(bytes, &std::fs::read(repo.path().join(source)).unwrap(), "{source}");
        assert!(artifact.key.ends_with(".yaml"), "{}", artifact.key);
    }
    // The master, whose TemplateURLs are rewritten, is sent as JSON.
    let body: serde_json::Value = serde_json::from_slice(&plan.stacks[0].body).unwrap();
    assert!(body["Resources"]["StorageStack"]["Properties"]["TemplateURL"].as_str().unwrap().ends_with(".yaml"));
}

#[test]
fn the_serialised_plan_shows_parameters_as_the_dry_run_does_and_no_template_body() {
    let template = "Parameters:\n  Secret:\n    Type: String\n    NoEcho: true\n  Stage:\n    Type: String\n  Token:\n    Type: String\nResources:\n  Queue:\n    Type: AWS::SQS::Queue\n";
    let stack = "parameters = { Secret = \"Vq8rT3mZp6LwX2nK\", Stage = \"dev\", Token = { env = \"SET_VAR\" } }";
    let plan = plan_in(repo_with(template, stack).path(), "dev", None, None).unwrap();
    let json: serde_json::Value = serde_json::to_value(&plan).unwrap();
    let parameters = &json["stacks"][0]["parameters"];
    assert_eq!(parameters, &serde_json::json!({ "Secret": "****", "Stage": "dev", "Token": "$SET_VAR" }));
    let text = json.to_string();
    assert!(!text.contains("Vq8rT3mZp6LwX2nK") && !text.contains("value"), "{text}");
    assert_eq!(json["stacks"][0]["bytes"], plan.stacks[0].body.len());
    assert!(json["stacks"][0].get("body").is_none(), "{text}");
    assert_eq!(run_state::StagePlan::describe(&plan), plan.describe());
}
