//! `cargo xtask init` on a repository written for its own buildspecs (`fixtures/adopt` without
//! its pipeline.toml): the config it writes loads in every crate's section and plans a deploy
//! of the S3-URL master with its functions mapped; `--check` explains what it owns.

use std::collections::BTreeSet;
use std::process::Command;

fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    test_support::copy_tree(&test_support::workspace_root().join("fixtures/adopt"), dir.path());
    std::fs::remove_file(dir.path().join("pipeline.toml")).unwrap();
    dir
}

fn init(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).arg("init").arg("--repo").arg(dir).args(args).output().unwrap()
}

#[test]
fn init_writes_a_config_that_maps_the_templates_and_functions_of_the_repository() {
    let dir = repository();
    let out = init(dir.path(), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = dir.path().join("pipeline.toml");
    let config = pipeline_config::ConfigFile::load(&path).unwrap();

    let (_, functions) = lambda_packager::LambdaSettings::from_config(&config).unwrap();
    type Declared = (String, Vec<String>, Option<(String, String)>);
    let found: Vec<Declared> = functions
        .iter()
        .map(|f| (f.name.clone(), f.sources.iter().map(|s| s.from.clone()).collect(), f.template.clone()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "api-handler".to_string(),
                vec!["lambda/index.py".to_string(), "lambda/rbac_middleware.py".to_string()],
                Some(("cfn/lambda-stack.yaml".to_string(), "ApiHandlerFunction".to_string()))
            ),
            (
                "frontend-builder".to_string(),
                vec!["lambda/build_and_deploy.py".to_string()],
                Some(("cfn/lambda-stack.yaml".to_string(), "FrontendBuilderFunction".to_string()))
            ),
        ]
    );
    let components = source_diff::Components::from_config(&config).unwrap();
    let names: BTreeSet<&str> = components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["api-handler", "frontend", "frontend-builder", "infra"]));
    assert!(components.owns("api-handler", "lambda/rbac_middleware.py"));
    assert!(components.owns("infra", "cfn/database-stack.yaml"));
    assert!(components.get("frontend").unwrap().build.as_ref().unwrap().run.contains("npm run build"));

    // Only the master is a stack: the nested templates it names by S3 URL are part of it, and
    // their IAM role asks for CAPABILITY_IAM; the bucket the URLs are built from is the
    // artifact bucket.
    let settings = stack_deployer::DeploySettings::from_config(&config).unwrap();
    let env = settings.environment(&config, "dev").unwrap();
    assert_eq!(env.stacks.iter().map(|s| s.template.as_str()).collect::<Vec<_>>(), ["cfn/master.yaml"]);
    let master = &env.stacks[0];
    assert!(master.capabilities.contains("CAPABILITY_IAM"), "{master:?}");
    assert_eq!(
        master.parameters.get("SourceBucket"),
        Some(&stack_deployer::ParameterValue::Literal(env.artifact_bucket.clone()))
    );
    let changed = BTreeSet::from(["infra".to_string()]);
    let inputs = stack_deployer::PlanInputs {
        repo: dir.path(),
        manifest: None,
        functions: &functions,
        changed: Some(&changed),
        only: &[],
    };
    let plan = stack_deployer::plan(&env, inputs, &|_| None).unwrap();
    let sources: BTreeSet<&str> = plan.artifacts.iter().map(|a| a.source.as_str()).collect();
    assert_eq!(sources, BTreeSet::from(["cfn/database-stack.yaml", "cfn/lambda-stack.yaml"]));

    // Written once: a second run refuses to replace it.
    let again = init(dir.path(), &[]);
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("pass --force to replace it"));
}

#[test]
fn init_check_says_what_each_component_owns_and_what_nothing_owns() {
    let dir = repository();
    let out = init(dir.path(), &["--check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("api-handler: 2 file(s)\n  lambda/index.py\n  lambda/rbac_middleware.py\n"), "{text}");
    assert!(text.contains("owned by no component: ") && text.contains("\n  README.md\n"), "{text}");
    assert!(
        text.contains("buildspecs/diff.yml, env.exported-variables:\n    - any_changed\n    - api_handler_tests_required\n    - api_handler_deploy_required\n"),
        "{text}"
    );
    assert!(text.ends_with("template references not mapped: 0\n"), "{text}");
    assert!(!dir.path().join("pipeline.toml").exists(), "--check writes nothing");

    // A nested template the repository does not have is named.
    let master = std::fs::read_to_string(dir.path().join("cfn/master.yaml")).unwrap();
    std::fs::write(dir.path().join("cfn/master.yaml"), master.replace("cfn/database-stack.yaml", "cfn/gone.yaml"))
        .unwrap();
    let out = init(dir.path(), &["--check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  cfn/master.yaml: DatabaseStack TemplateURL `https://s3.amazonaws.com/${SourceBucket}/cfn/gone.yaml`: no such file"),
        "{text}"
    );
}
