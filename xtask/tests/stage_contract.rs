//! The stage contract, as users run it: the stage binaries in the README's CodeBuild order and
//! `cargo xtask pipeline` reach the same verdict on the same commits, and neither gives a
//! false green (a secret that validate found, a required test that never ran, a test run on
//! another tree than the commit recorded, a deploy after a refused gate).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use run_state::{FileStore, RunDir, Status, Step, Store};
use test_support::GitRepo;

/// A stage binary built beside xtask (`cargo test --workspace --all-features` builds them all).
fn binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_xtask")).parent().expect("the binaries' folder");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built; run the tests with `cargo xtask test` (all features)", path.display());
    path
}

fn run_in(dir: &Path, name: &str, args: &[&str]) -> Output {
    Command::new(binary(name)).current_dir(dir).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const CONFIG: &str = r#"
[gate]
required_steps = ["validate", "test"]

[components.api]
paths = ["api/**"]
test = { run = "sh api/test.sh" }
deploy = { run = "touch deployed-api" }

[components.web]
paths = ["web/**"]
test = { run = "sh web/test.sh" }

[components.infra]
paths = ["cfn/**"]

[validate]
templates = ["cfn/**/*.yaml"]
"#;

const TEMPLATE: &str = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n";
const LEAK: &str = "AWS_ACCESS_KEY_ID = \"AKIAIOSFODNN7EXAMPLE\"\nAWS_SECRET_ACCESS_KEY = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n";

fn base_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_files(
        "base",
        &[
            ("pipeline.toml", CONFIG),
            (".gitignore", ".pipeline/\ndeployed-*\n"),
            ("cfn/app.yaml", TEMPLATE),
            ("api/test.sh", "echo api ok\n"),
            ("web/test.sh", "echo web ok\n"),
        ],
    );
    repo
}

/// The README's CodeBuild sequence, each binary its own process, run from `dir` (the root or a
/// subfolder); returns the gate's exit code and what it printed.
fn codebuild(dir: &Path, base: &str) -> (Option<i32>, String) {
    // `source-diff … > diff.env` and `validate --output validate.sarif` write at the root, as the
    // README's buildspec does: files a CI step writes there do not make the tree "uncommitted".
    let root = dir.ancestors().find(|d| d.join(".git").exists()).expect("a git work tree");
    let env = root.join("diff.env").display().to_string();
    let sarif = root.join("validate.sarif").display().to_string();
    let diff = run_in(dir, "source-diff", &["--new-run", "--base", base, "--format", "env", "--output", &env]);
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));
    let validate = run_in(dir, "validate", &["--format", "sarif", "--output", &sarif]);
    assert!(matches!(validate.status.code(), Some(0 | 1)), "{}", text(&validate));
    let tests = run_in(dir, "step-runner", &["--step", "test"]);
    assert!(matches!(tests.status.code(), Some(0 | 1)), "{}", text(&tests));
    let gate = run_in(dir, "status-report", &["gate"]);
    // The next build starts from a fresh checkout: the outputs are not part of the next commit.
    for output in [&env, &sarif] {
        std::fs::remove_file(output).unwrap();
    }
    (gate.status.code(), text(&gate))
}

fn pipeline(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(["pipeline", "--repo"]).arg(repo).args(args).output().unwrap()
}

#[test]
fn the_binaries_and_the_pipeline_agree_on_every_commit() {
    let repo = base_repo();
    let base = repo.head();
    // (what the commit does, files, expected gate exit code, a reason the refusal must give)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, i32, &'a str);
    let cases: [Case; 3] = [
        ("api changes, its test passes", vec![("api/handler.py", "print('v2')\n")], 0, ""),
        ("an AWS key pair in the api", vec![("api/creds.py", LEAK)], 1, "pipeline validate failed"),
        ("web's test fails", vec![("web/test.sh", "echo broken; exit 3\n")], 1, "web test failed: exit code 3"),
    ];
    for (what, files, expected, reason) in cases {
        repo.git(&["checkout", "-q", &base]);
        repo.git(&["checkout", "-q", "-B", &format!("case-{expected}-{}", what.len())]);
        repo.commit_files(what, &files);
        let (code, out) = codebuild(repo.path(), &base);
        assert_eq!(code, Some(expected), "binaries, {what}: {out}");
        assert!(out.contains(reason), "binaries, {what}: {out}");
        if expected == 1 {
            assert!(!out.contains("AKIAIOSFODNN7EXAMPLE") && !out.contains("wJalrXUtnFEMI"), "{out}");
        }
        let out = pipeline(repo.path(), &["--base", &base]);
        assert_eq!(out.status.code(), Some(expected), "pipeline, {what}: {}", text(&out));
        assert!(text(&out).contains(reason), "pipeline, {what}: {}", text(&out));
    }
}

#[test]
fn a_required_test_that_never_ran_refuses_the_gate() {
    let repo = base_repo();
    let base = repo.head();
    repo.commit_files("api change", &[("api/handler.py", "print('v2')\n")]);
    // Diff and validate, but no step-runner: the diff required api's test.
    assert_eq!(run_in(repo.path(), "source-diff", &["--new-run", "--base", &base]).status.code(), Some(0));
    assert_eq!(run_in(repo.path(), "validate", &[]).status.code(), Some(0));
    let gate = run_in(repo.path(), "status-report", &["gate"]);
    assert_eq!(gate.status.code(), Some(1), "{}", text(&gate));
    assert!(text(&gate).contains("api test never ran, but the change requires it"), "{}", text(&gate));
}

#[test]
fn stages_run_from_a_subfolder_find_the_same_root() {
    let repo = base_repo();
    let base = repo.head();
    repo.commit_files("api change", &[("api/handler.py", "print('v2')\n")]);
    let (code, out) = codebuild(&repo.path().join("api"), &base);
    assert_eq!(code, Some(0), "{out}");
    assert!(repo.path().join(".pipeline/state.jsonl").is_file(), "the store is at the root, not in api/");
    assert!(!repo.path().join("api/.pipeline").exists());
}

#[test]
fn a_deploy_does_not_start_while_the_gate_refuses() {
    let repo = base_repo();
    let base = repo.head();
    repo.commit_files("api breaks", &[("api/test.sh", "exit 1\n")]);
    codebuild(repo.path(), &base);
    let deploy = run_in(repo.path(), "step-runner", &["--step", "deploy"]);
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy));
    assert!(
        text(&deploy).contains("the gate refuses this run, so nothing is deployed: api test failed"),
        "{}",
        text(&deploy)
    );
    assert!(!repo.path().join("deployed-api").exists(), "the deploy command ran");

    // Once the test passes in a new run, the deploy runs.
    repo.commit_files("api fixed", &[("api/test.sh", "exit 0\n")]);
    let (code, out) = codebuild(repo.path(), &base);
    assert_eq!(code, Some(0), "{out}");
    let deploy = run_in(repo.path(), "step-runner", &["--step", "deploy"]);
    assert_eq!(deploy.status.code(), Some(0), "{}", text(&deploy));
    assert!(repo.path().join("deployed-api").exists());
}

#[test]
fn the_tree_under_test_is_the_commit_recorded() {
    let repo = base_repo();
    let base = repo.head();
    let broken = repo.commit_files("api breaks", &[("api/test.sh", "echo assert False; exit 1\n")]);
    // Check out the base again: the broken commit is not what is on disk.
    repo.git(&["checkout", "-q", &base]);

    // The pipeline tests the commit it records, in a clean worktree of it.
    let out = pipeline(repo.path(), &["--base", &base, "--head", &broken]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the stages run in a clean worktree"), "{}", text(&out));
    let state = repo.path().join(".pipeline");
    let run = RunDir::latest(&state).unwrap();
    let records = FileStore::open(&state).unwrap().run(&run.run_id).unwrap();
    let api = records.iter().find(|r| r.component == "api" && r.step == Step::Test).unwrap();
    assert_eq!((api.commit.as_str(), api.status), (broken.as_str(), Status::Failed));
    assert!(!state.join("worktrees").join(&run.run_id).exists(), "the worktree is removed afterwards");

    // The stage binary refuses to test another tree than the run's commit.
    assert_eq!(
        run_in(repo.path(), "source-diff", &["--new-run", "--base", &base, "--head", &broken]).status.code(),
        Some(0)
    );
    let tests = run_in(repo.path(), "step-runner", &["--step", "test"]);
    assert_eq!(tests.status.code(), Some(2), "{}", text(&tests));
    assert!(text(&tests).contains("is for commit"), "{}", text(&tests));

    // Uncommitted edits are not credited to the commit either.
    repo.git(&["checkout", "-q", &broken]);
    repo.write("api/test.sh", "exit 0\n");
    assert_eq!(run_in(repo.path(), "source-diff", &["--new-run", "--base", &base]).status.code(), Some(0));
    let tests = run_in(repo.path(), "step-runner", &["--step", "test"]);
    assert_eq!(tests.status.code(), Some(2), "{}", text(&tests));
    assert!(text(&tests).contains("uncommitted change(s) (first: api/test.sh)"), "{}", text(&tests));
    let gate = run_in(repo.path(), "status-report", &["gate"]);
    assert_eq!(gate.status.code(), Some(1), "a refused stage is recorded as failed: {}", text(&gate));
    // With --include-worktree the edits are what the run is about, and they pass.
    assert_eq!(
        run_in(repo.path(), "source-diff", &["--new-run", "--base", &base, "--include-worktree"]).status.code(),
        Some(0)
    );
    assert_eq!(run_in(repo.path(), "step-runner", &["--step", "test"]).status.code(), Some(0));
}

/// `expected` with `{marker}` replaced by the 1-based line of `config` that holds `marker`.
fn line_of_marker(config: &str, expected: &str) -> String {
    let Some((before, rest)) = expected.split_once('{') else { return expected.to_string() };
    let (marker, after) = rest.split_once('}').unwrap();
    let line = config.lines().position(|l| l.contains(marker)).expect("the marker is in the config") + 1;
    format!("{before}{line}{after}")
}

#[test]
fn every_section_is_checked_before_anything_runs() {
    for (what, extra, expected) in [
        (
            "a bad template glob",
            "\n[validate]\ntemplates = [\"cfn/[x\"]\n",
            "pipeline.toml:{cfn/[x}: validate.templates: `cfn/[x` is not a valid glob",
        ),
        (
            "a runtime Lambda does not offer",
            "\n[lambda]\nruntime = \"python3.99\"\n[lambda.functions.api]\nsources = [\"api\"]\n",
            "lambda.functions.api.runtime: `python3.99` is not a Python runtime Lambda offers",
        ),
        (
            "a timeout that overflows",
            "\n[components.slow]\npaths = [\"slow/**\"]\ntest = { run = \"true\", timeout = \"500000000000y\" }\n",
            "components.slow.test.timeout: `500000000000y` is longer than 24h",
        ),
        (
            "a section name typo",
            "\n[valdate]\nfail_on = \"error\"\n",
            "pipeline.toml:{[valdate]}: valdate: unknown section",
        ),
    ] {
        let repo = GitRepo::new();
        let config = CONFIG.replace("[validate]\ntemplates = [\"cfn/**/*.yaml\"]\n", "") + extra;
        repo.commit_files("base", &[("pipeline.toml", &config), (".gitignore", ".pipeline/\n")]);
        let out = pipeline(repo.path(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        let expected = line_of_marker(&config, expected);
        let last = stderr.lines().last().unwrap_or("");
        assert!(last.starts_with("xtask: ") && last.contains(&expected), "{what}: {stderr}");
        assert!(!repo.path().join(".pipeline/runs").exists(), "{what}: a run was started");
    }
    // The stage binary names the same line.
    let repo = GitRepo::new();
    let config = CONFIG.replace("cfn/**/*.yaml", "cfn/[x");
    repo.commit_files("base", &[("pipeline.toml", &config), ("cfn/app.yaml", TEMPLATE)]);
    let out = run_in(repo.path(), "validate", &["--all"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("pipeline.toml:18: validate.templates: `cfn/[x` is not a valid glob"),
        "{}",
        text(&out)
    );
}

#[test]
fn step_commands_get_the_configured_environment() {
    let repo = GitRepo::new();
    let config = r#"
[runner]
env = { MODE = "ci", REGION = "us-east-1" }

[components.api]
paths = ["api/**"]
test = { run = 'test "$MODE" = ci && test "$REGION" = eu-west-1', env = { REGION = "eu-west-1" } }
"#;
    repo.commit_files("base", &[("pipeline.toml", config), (".gitignore", ".pipeline/\n")]);
    let base = repo.head();
    repo.commit_files("api", &[("api/a", "1")]);
    assert_eq!(run_in(repo.path(), "source-diff", &["--new-run", "--base", &base]).status.code(), Some(0));
    let tests = run_in(repo.path(), "step-runner", &["--step", "test"]);
    assert_eq!(tests.status.code(), Some(0), "{}", text(&tests));
}

#[test]
fn validate_writing_a_report_file_still_lists_the_findings() {
    let repo = base_repo();
    let base = repo.head();
    repo.commit_files(
        "bad template",
        &[("cfn/app.yaml", "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    DependsOn: Missing\n")],
    );
    assert_eq!(run_in(repo.path(), "source-diff", &["--new-run", "--base", &base]).status.code(), Some(0));
    let out = run_in(repo.path(), "validate", &["--format", "sarif", "--output", "validate.sarif"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cfn/app.yaml:4:5: E3005 error:"), "{stderr}");
    let sarif = std::fs::read_to_string(repo.path().join("validate.sarif")).unwrap();
    assert!(sarif.contains("\"ruleId\": \"E3005\""), "{sarif}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(repo.path().join("validate.sarif")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "reports are readable by the artifact upload");
}

/// `step-runner --step e2e --env dev`, as the E2E buildspec runs it after a deploy: each changed
/// component's e2e command gets the environment's stack outputs, and is recorded; without
/// `--env`, or for an environment the run never deployed, it refuses (exit 2) and records why.
#[test]
fn e2e_commands_get_the_deployed_environment_s_outputs() {
    let repo = GitRepo::new();
    let config = "[gate]\nrequired_steps = [\"test\"]\n\n[components.web]\npaths = [\"web/**\"]\n\
        test = { run = \"true\" }\n\
        e2e = { run = \"test \\\"$ApiUrl\\\" = https://api.example && test \\\"$APP_ApiUrl\\\" = https://api.example && test \\\"$PIPELINE_ENV\\\" = dev\" }\n";
    repo.commit_files("base", &[("pipeline.toml", config), (".gitignore", ".pipeline/\n")]);
    let base = repo.head();
    repo.commit_files("web", &[("web/index.html", "<p>v2</p>\n")]);
    let dir = repo.path();
    assert_eq!(run_in(dir, "source-diff", &["--new-run", "--base", &base]).status.code(), Some(0));
    assert_eq!(run_in(dir, "step-runner", &["--step", "test"]).status.code(), Some(0));

    let missing_env = run_in(dir, "step-runner", &["--step", "e2e"]);
    assert_eq!(missing_env.status.code(), Some(2), "{}", text(&missing_env));
    assert!(text(&missing_env).contains("pass --env"), "{}", text(&missing_env));

    let state = dir.join(".pipeline");
    let run = RunDir::latest(&state).unwrap();
    let not_deployed = run_in(dir, "step-runner", &["--step", "e2e", "--env", "dev"]);
    assert_eq!(not_deployed.status.code(), Some(2), "{}", text(&not_deployed));
    assert!(text(&not_deployed).contains("run `stack-deployer`"), "{}", text(&not_deployed));

    let stack = run_state::DeployedStack {
        stack_name: "app-dev".into(),
        region: "us-east-1".into(),
        stack_id: None,
        outputs: [("ApiUrl".to_owned(), "https://api.example".to_owned())].into(),
    };
    let outputs = run_state::StackOutputs { environments: [("dev".into(), [("app".into(), stack)].into())].into() };
    outputs.merge_into(&run).unwrap();
    let prod = run_in(dir, "step-runner", &["--step", "e2e", "--env", "prod"]);
    assert_eq!(prod.status.code(), Some(2), "{}", text(&prod));
    assert!(text(&prod).contains("stack-deployer --env prod"), "{}", text(&prod));

    let e2e = run_in(dir, "step-runner", &["--step", "e2e", "--env", "dev"]);
    assert_eq!(e2e.status.code(), Some(0), "{}", text(&e2e));
    let store = FileStore::open(&state).unwrap();
    let records = store.run(&run.run_id).unwrap();
    let web_e2e = records.iter().find(|r| r.component == "web" && r.step == Step::E2e).expect("web's e2e recorded");
    assert_eq!(web_e2e.status, Status::Passed);
}
