//! `cfn/pipeline.yaml` deployed by `stack-deployer` into the emulator, as a user deploys it
//! (README, Bootstrap): the part moto can create, with what it lacks listed here and why.
//!
//! moto has no CodeBuild or CodePipeline resources: it skips them silently, so `!GetAtt
//! ToolkitProject.Arn` never resolves and the whole stack would stay `CREATE_IN_PROGRESS`
//! (`../shared/emulator.md`). The test removes those resources, and every resource or output
//! that names one of them (found from the template, not listed by hand), deploys the rest
//! (storage, the status table, the key and topic, every stage's role and the shared policy) and
//! checks what moto created: each role with its inline policy, the table with its key schema.
//! The dry run of the whole template (its plan) is `crates/stack-deployer/tests/bootstrap.rs`.

use std::collections::BTreeSet;
use std::process::Command;

use validate::{Node, Value};

mod support;
use support::{aws_json, binary, pipeline_env, root};

/// Resource types moto lacks, and why each is left out.
const LACKING: &[(&str, &str)] = &[
    ("AWS::CodeBuild::Project", "moto has no CodeBuild resources (skipped, so their GetAtt never resolves)"),
    ("AWS::CodePipeline::Pipeline", "moto has no CodePipeline resources"),
];

fn json(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => n.parse::<i64>().map_or_else(|_| serde_json::Value::String(n.clone()), Into::into),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Seq(items) => items.iter().map(json).collect(),
        Value::Map(entries) => entries.iter().map(|(k, v)| (k.name.clone(), json(v))).collect(),
    }
}

/// Whether a JSON value names a logical id (`Ref`, `Fn::GetAtt`, `${Id}` or `${Id.Att}` in a `Fn::Sub`).
fn names(value: &serde_json::Value, id: &str) -> bool {
    match value {
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| {
            (k == "Ref" && v == id)
                || (k == "Fn::GetAtt" && v.get(0).is_some_and(|f| f == id))
                || (k == "Fn::Sub"
                    && [v.as_str(), v.get(0).and_then(|f| f.as_str())]
                        .into_iter()
                        .flatten()
                        .any(|t| t.contains(&format!("${{{id}}}")) || t.contains(&format!("${{{id}."))))
                || names(v, id)
        }),
        serde_json::Value::Array(items) => items.iter().any(|v| names(v, id)),
        _ => false,
    }
}

/// The template without what moto lacks and what names it; the removed ids with why.
fn emulator_part(template: &serde_json::Value) -> (serde_json::Value, Vec<(String, String)>) {
    let mut template = template.clone();
    let resources = template["Resources"].as_object_mut().unwrap();
    let mut removed: Vec<(String, String)> = resources
        .iter()
        .filter_map(|(id, r)| {
            let kind = r["Type"].as_str()?;
            LACKING.iter().find(|(t, _)| *t == kind).map(|(_, why)| (id.clone(), why.to_string()))
        })
        .collect();
    loop {
        let gone: BTreeSet<String> = removed.iter().map(|(id, _)| id.clone()).collect();
        resources.retain(|id, _| !gone.contains(id));
        let dependents: Vec<(String, String)> = resources
            .iter()
            .filter_map(|(id, r)| gone.iter().find(|g| names(r, g)).map(|g| (id.clone(), format!("names {g}"))))
            .collect();
        if dependents.is_empty() {
            break;
        }
        removed.extend(dependents);
    }
    let gone: BTreeSet<String> = removed.iter().map(|(id, _)| id.clone()).collect();
    if let Some(outputs) = template["Outputs"].as_object_mut() {
        outputs.retain(|_, o| !gone.iter().any(|g| names(o, g)));
    }
    (template, removed)
}

#[test]
fn the_pipeline_template_deploys_into_the_emulator_but_for_what_moto_lacks() {
    let text = std::fs::read_to_string(root().join("cfn/pipeline.yaml")).unwrap();
    let full = json(&validate::parse(&text).unwrap());
    let (part, removed) = emulator_part(&full);
    let ids: Vec<&str> = removed.iter().map(|(id, _)| id.as_str()).collect();
    // What moto cannot hold, and nothing more: every stage's role, the storage and the
    // notifications stay.
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        [
            "ToolkitProject",
            "DiffProject",
            "ValidateProject",
            "BuildProject",
            "TestProject",
            "DeployDevProject",
            "StatusProject",
            "E2EProject",
            "DeployProdProject",
            "RollbackProject",
            "Pipeline",
            "PipelineRole",
            "PipelineStateRule",
        ]
        .into_iter()
        .collect(),
        "{removed:#?}"
    );
    for kept in ["DiffRole", "DeployDevRole", "DeployProdRole", "StageCommonPolicy", "StatusTable", "NotificationTopic"]
    {
        assert!(part["Resources"].get(kept).is_some(), "{kept} left out");
    }

    let moto = test_support::Moto::start();
    let env = pipeline_env(&moto.endpoint);
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(repo.path().join("cfn/pipeline.json"), serde_json::to_string_pretty(&part).unwrap()).unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        r#"[deploy]
artifact_bucket = "bootstrap-artifacts"

[deploy.stacks.pipeline]
template = "cfn/pipeline.json"
stack_name = "monorepo-pipeline"
parameters = { ProjectName = "monorepo", ConnectionArn = "arn:aws:codeconnections:us-east-1:123456789012:connection/x", MonorepoId = "o/monorepo", ToolkitRepoId = "o/toolkit", ProdDeployRoleArn = "arn:aws:iam::111111111111:role/pipeline-dashboard-deploy-prod", ProdCloudFormationRoleArn = "arn:aws:iam::111111111111:role/pipeline-dashboard-cfn-prod", DevCloudFormationRoleArn = "arn:aws:iam::123456789012:role/pipeline-dashboard-cfn-dev" }
capabilities = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
components = ["pipeline"]

[components.pipeline]
paths = ["cfn/**"]
"#,
    )
    .unwrap();
    let git =
        |args: &[&str]| assert!(Command::new("git").args(args).current_dir(repo.path()).status().unwrap().success());
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "empty"]);
    git(&["add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "pipeline"]);
    let aws = test_support::python().parent().unwrap().join("aws");
    assert!(
        Command::new(&aws).args(["s3", "mb", "s3://bootstrap-artifacts"]).envs(env.clone()).status().unwrap().success()
    );

    let run = |program: &str, args: &[&str]| {
        let out = Command::new(binary(program))
            .args(args)
            .current_dir(repo.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{program} {args:?}: {text}");
        text
    };
    run("source-diff", &["--new-run", "--all-on-missing-base"]);
    run("validate", &[]);
    let plan = run("stack-deployer", &["--env", "dev", "--dry-run"]);
    assert!(plan.contains("pipeline -> monorepo-pipeline (template cfn/pipeline.json"), "{plan}");
    let deployed = run("stack-deployer", &["--env", "dev"]);
    assert!(deployed.contains("monorepo-pipeline"), "{deployed}");

    let stacks = aws_json(&["cloudformation", "describe-stacks", "--stack-name", "monorepo-pipeline"], &env);
    assert_eq!(stacks["Stacks"][0]["StackStatus"], "CREATE_COMPLETE", "{stacks}");
    let table = aws_json(&["dynamodb", "describe-table", "--table-name", "monorepo-pipeline-status"], &env);
    assert_eq!(table["Table"]["KeySchema"][0]["AttributeName"], "pk", "{table}");
    let roles = aws_json(&["iam", "list-roles"], &env);
    let names: Vec<&str> = roles["Roles"].as_array().unwrap().iter().filter_map(|r| r["RoleName"].as_str()).collect();
    for role in [
        "DiffRole",
        "TestRole",
        "DeployDevRole",
        "StatusRole",
        "E2ERole",
        "DeployProdRole",
        "ToolkitRole",
        "RollbackRole",
    ] {
        let name = names.iter().find(|n| n.contains(role)).unwrap_or_else(|| panic!("no {role} among {names:?}"));
        let policies = aws_json(&["iam", "list-role-policies", "--role-name", name], &env);
        assert_eq!(policies["PolicyNames"].as_array().unwrap().len(), 1, "{role}: {policies}");
    }
}
