//! The `validate` binary on scripted repositories: formats, exit codes, tools, cache.

use std::path::Path;
use std::process::{Command, Output};

use run_state::Store;
use test_support::GitRepo;
use test_support::process::{assert_ends, running, wait_for_file};

const CONFIG: &str = r#"
[components.infra]
paths = ["cfn/**"]

[components.app]
paths = ["app/**"]

[validate]
templates = ["cfn/**/*.yaml"]

[validate.tools.fake-lint]
components = ["infra"]
run = "sh tools/fake-lint.sh"
format = "cfn-lint"
"#;

/// A stand-in for cfn-lint that prints one finding in cfn-lint's JSON shape.
const FAKE_LINT: &str = r#"cat <<'JSON'
[{"Rule": {"Id": "W3005"}, "Level": "Warning", "Message": "Obsolete DependsOn", "Filename": "cfn/app.yaml",
  "Location": {"Start": {"LineNumber": 3, "ColumnNumber": 5}, "End": {"LineNumber": 3, "ColumnNumber": 9}}}]
JSON
echo "a warning on stderr" >&2
exit 4
"#;

const GOOD: &str = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n";
const BAD: &str = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    DependsOn: Missing\n";

fn repo(template: &str) -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_files(
        "init",
        &[
            ("pipeline.toml", CONFIG),
            ("cfn/app.yaml", template),
            ("tools/fake-lint.sh", FAKE_LINT),
            ("app/main.py", "print('hi')\n"),
            (".gitignore", ".pipeline/\n"),
        ],
    );
    repo
}

fn validate(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_validate")).arg("--repo").arg(repo).args(args).output().unwrap()
}

#[test]
fn a_clean_repo_exits_0_and_tool_warnings_are_reported_in_every_format() {
    let repo = repo(GOOD);
    let out = validate(repo.path(), &["--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout, "cfn/app.yaml:3:5: W3005 warning: Obsolete DependsOn\n");

    let sarif: serde_json::Value =
        serde_json::from_slice(&validate(repo.path(), &["--all", "--format", "sarif"]).stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let result = &sarif["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "W3005");
    assert_eq!(result["level"], "warning");
    assert_eq!(result["locations"][0]["physicalLocation"]["region"]["startLine"], 3);

    let junit = String::from_utf8(validate(repo.path(), &["--all", "--format", "junit"]).stdout).unwrap();
    assert!(junit.contains(r#"<testcase name="cfn/app.yaml""#), "{junit}");
    // A warning below `fail_on = "error"` is listed, not a failed test case in CodeBuild.
    assert!(!junit.contains("<failure"), "{junit}");
    assert!(junit.contains("cfn/app.yaml:3:5: W3005 warning: Obsolete DependsOn"), "{junit}");

    let json: serde_json::Value =
        serde_json::from_slice(&validate(repo.path(), &["--all", "--format", "json"]).stdout).unwrap();
    assert_eq!(json["counts"]["warning"], 1);
}

#[test]
fn native_errors_exit_1_with_file_line_and_column() {
    let repo = repo(BAD);
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cfn/app.yaml:4:5: E3005 error: DependsOn `Missing` is not a resource of this template\n"
    );
}

#[test]
fn only_changed_components_are_checked_and_their_tools_run() {
    let repo = repo(BAD);
    repo.commit_files("app only", &[("app/main.py", "print('bye')\n")]);
    let state = repo.path().join(".pipeline");
    // A run whose diff marks only `app` changed.
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let store = run_state::FileStore::open(&state).unwrap();
    let (run_dir, diff) =
        source_diff::begin_run(&handle, &components, &Default::default(), "HEAD", false, &store, &state).unwrap();
    assert_eq!(diff.changed().collect::<Vec<_>>(), ["app"]);

    let out = validate(repo.path(), &["--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    // app's file, and pipeline.toml, which is always scanned for secrets.
    assert!(plan.starts_with("0 template(s), 2 file(s) to scan for secrets"), "{plan}");
    assert!(plan.contains("skip fake-lint: none of infra changed"), "{plan}");
    // The broken template is not part of the change: nothing to report.
    let out = validate(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(run_dir.path.join("validate.json").is_file());
}

/// pipeline.toml is scanned for secrets on every run, whichever component changed, and the
/// finding does not quote the value.
#[test]
fn a_secret_in_pipeline_toml_is_found_on_any_change() {
    let repo = repo(GOOD);
    let key = ["AKIA", "IOSFODNN7EXAMPLE"].concat();
    let secret = ["wJalrXUtnFEMI/K7MDENG/", "bPxRfiCYEXAMPLEKEY"].concat();
    let config = format!("{CONFIG}# deploy key {key}\n# aws_secret_access_key = \"{secret}\"\n");
    repo.commit_files("config", &[("pipeline.toml", &config)]);
    repo.commit_files("app only", &[("app/main.py", "print('x')\n")]);
    let state = repo.path().join(".pipeline");
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let store = run_state::FileStore::open(&state).unwrap();
    let request = source_diff::BaseRequest { explicit: Some("HEAD~1".into()), ..Default::default() };
    let (_, diff) = source_diff::begin_run(&handle, &components, &request, "HEAD", false, &store, &state).unwrap();
    assert_eq!(diff.changed().collect::<Vec<_>>(), ["app"]);
    let out = validate(repo.path(), &["--no-tools"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("pipeline.toml:"), "{said}");
    assert!(!said.contains(&secret[4..]), "the secret is not quoted: {said}");
}

/// A linter of a component's own files (`own_changes_only = true`) is not run when the
/// component changed only through a dependency; without the setting it still is (a type
/// checker reads its dependencies).
#[test]
fn a_tool_for_own_changes_only_skips_a_change_through_dependencies() {
    let repo = repo(GOOD);
    let config = CONFIG.replace(
        "[components.infra]\npaths = [\"cfn/**\"]",
        "[components.infra]\npaths = [\"cfn/**\"]\ndepends_on = [\"app\"]",
    );
    let state = repo.path().join(".pipeline");
    for (own_only, expected) in [
        (true, "skip fake-lint: infra changed only through their dependencies, and own_changes_only = true"),
        (false, "fake-lint (changed: infra)"),
    ] {
        let config = if own_only { format!("{config}own_changes_only = true\n") } else { config.clone() };
        repo.commit_files("config", &[("pipeline.toml", &config)]);
        repo.commit_files("app only", &[("app/main.py", &format!("print({own_only})\n"))]);
        let handle = source_diff::Repo::open(repo.path()).unwrap();
        let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
        let store = run_state::FileStore::open(&state).unwrap();
        let request = source_diff::BaseRequest { explicit: Some("HEAD~1".into()), ..Default::default() };
        let (_, diff) = source_diff::begin_run(&handle, &components, &request, "HEAD", false, &store, &state).unwrap();
        assert_eq!(diff.changed().collect::<Vec<_>>(), ["app", "infra"]);
        let out = validate(repo.path(), &["--dry-run"]);
        let plan = String::from_utf8_lossy(&out.stdout);
        assert!(plan.contains(expected), "own_changes_only = {own_only}: {plan}");
    }
}

#[test]
fn a_missing_tool_is_a_clear_error_not_a_pass() {
    let repo = repo(GOOD);
    let config = CONFIG.replace("sh tools/fake-lint.sh", "cfn-lint-not-installed -f json cfn/app.yaml")
        + "install = \"pip install cfn-lint==1.58.0\"\n";
    repo.commit_files("tool", &[("pipeline.toml", &config)]);
    let out = validate(repo.path(), &["--all"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "validate: validate.tools.fake-lint: `cfn-lint-not-installed` is not installed; pip install cfn-lint==1.58.0"
    );
}

#[test]
fn an_unreadable_template_is_a_finding_and_results_are_cached_by_content() {
    let repo = repo("Resources: [unclosed\n");
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("cfn/app.yaml:") && stdout.contains(" E0000 error: the template cannot be read:"),
        "{stdout}"
    );
    let cache = repo.path().join(".pipeline/cache/validate");
    let cached = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(cached, 1);
    // The same content again: answered from the cache (no new entry), same answer.
    let again = validate(repo.path(), &["--all", "--no-tools"]);
    assert_eq!(again.stdout, out.stdout);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

#[test]
fn sigterm_cancels_a_slow_tool_records_the_step_cancelled_and_leaves_nothing_running() {
    let outside = tempfile::tempdir().unwrap();
    let tool_pid = outside.path().join("tool.pid");
    let child_pid = outside.path().join("child.pid");
    let slow_lint = format!(
        "echo $$ > {tool}\nsleep 1237 &\necho $! > {child}\nwait\n",
        tool = tool_pid.display(),
        child = child_pid.display()
    );
    let repo = GitRepo::new();
    repo.commit_files(
        "init",
        &[("pipeline.toml", CONFIG), ("app/main.py", "print('hi')\n"), (".gitignore", ".pipeline/\n")],
    );
    let config = CONFIG.replace("sh tools/fake-lint.sh", "sh tools/slow-lint.sh");
    repo.commit_files(
        "infra",
        &[("pipeline.toml", &config), ("cfn/app.yaml", GOOD), ("tools/slow-lint.sh", &slow_lint)],
    );
    // A run whose diff marks infra changed, so its tool runs.
    let state = repo.path().join(".pipeline");
    let store = run_state::FileStore::open(&state).unwrap();
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let request = source_diff::BaseRequest { explicit: Some("HEAD~1".into()), ..Default::default() };
    let (run_dir, diff) =
        source_diff::begin_run(&handle, &components, &request, "HEAD", false, &store, &state).unwrap();
    assert_eq!(diff.changed().collect::<Vec<_>>(), ["infra"]);

    let child = Command::new(env!("CARGO_BIN_EXE_validate"))
        .arg("--repo")
        .arg(repo.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pids = [wait_for_file(&tool_pid), wait_for_file(&child_pid)];
    for pid in &pids {
        assert!(running(pid), "the slow tool's process {pid} is not running before the SIGTERM");
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "ended by itself, saying why: {stderr}");
    assert!(stderr.contains("cancel"), "{stderr}");
    for pid in &pids {
        assert_ends(pid, "a process of the cancelled tool");
    }
    let records = store.run(&run_dir.run_id).unwrap();
    let step = records.iter().find(|r| r.step == run_state::Step::Validate).expect("the validate step is recorded");
    assert_eq!(step.status, run_state::Status::Cancelled, "{step:?}");
}

/// The repository's `.cfnlintrc.yaml` applies to the native checks as cfn-lint applies it:
/// `ignore_checks` silences a rule, `mandatory_checks` keeps one an ignored prefix covers,
/// `templates` adds files outside `[validate] templates`, `ignore_templates` leaves one out.
#[test]
fn the_repositorys_cfnlintrc_applies_to_the_native_checks() {
    let repo = GitRepo::new();
    let implied = "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n  Topic:\n    Type: AWS::SNS::Topic\n    DependsOn: Queue\n    Properties:\n      DisplayName: !GetAtt Queue.QueueName\n    BadKey: 1\n";
    repo.commit_files(
        "init",
        &[
            ("pipeline.toml", "[components.infra]\npaths = [\"cfn/**\", \"stacks/**\"]\n\n[validate]\ntemplates = [\"cfn/**/*.yaml\"]\nsecrets = false\n"),
            ("cfn/app.yaml", implied),
            ("cfn/legacy/old.yaml", BAD),
            ("stacks/extra.yaml", BAD),
            (".gitignore", ".pipeline/\n"),
        ],
    );
    let before = validate(repo.path(), &["--all", "--no-tools"]);
    let before = String::from_utf8_lossy(&before.stdout).into_owned();
    assert_eq!(
        before.lines().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(),
        ["cfn/app.yaml:6:5:", "cfn/app.yaml:9:5:", "cfn/legacy/old.yaml:4:5:"],
        "{before}"
    );
    assert!(before.contains("W3005") && before.contains("E3001"), "{before}");

    repo.commit_files(
        "cfn-lint settings",
        &[(
            ".cfnlintrc.yaml",
            "templates:\n  - stacks/*.yaml\nignore_templates:\n  - cfn/legacy/**\nignore_checks:\n  - W3005\n  - E30\nmandatory_checks: [E3001]\nregions: [eu-west-1]\nconfigure_rules:\n  E3012:\n    strict: false\n",
        )],
    );
    let plan = String::from_utf8_lossy(&validate(repo.path(), &["--all", "--dry-run"]).stdout).into_owned();
    assert!(plan.starts_with("2 template(s)"), "{plan}");
    assert!(plan.contains("cfn-lint settings from .cfnlintrc.yaml: ignore_checks [W3005, E30], mandatory_checks [E3001], templates [stacks/*.yaml], ignore_templates [cfn/legacy/**], regions [eu-west-1]"), "{plan}");
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let after = String::from_utf8_lossy(&out.stdout).into_owned();
    // W3005 ignored; E3001 mandatory although E30 is ignored; E3005 (under E30) ignored; the
    // legacy template left out; stacks/extra.yaml checked (its E3005 ignored too).
    assert_eq!(
        after.lines().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(),
        ["cfn/app.yaml:9:5:"],
        "{after}"
    );
    assert_eq!(out.status.code(), Some(1));

    repo.commit_files("ignore it all", &[(".cfnlintrc.yaml", "ignore_checks: [E, W]\n")]);
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A settings file cfn-lint would refuse is refused here too, as one line naming the key.
#[test]
fn a_cfnlintrc_cfn_lint_refuses_is_a_usage_error_naming_the_key() {
    let repo = repo(GOOD);
    for (text, expected) in [
        ("ignore_checks: W3005\n", ".cfnlintrc:1: ignore_checks: must be a list"),
        ("regions: [us-east-1, mars-north-1]\n", ".cfnlintrc:1: regions: mars-north-1 not a region"),
        ("ignore_check: [W]\n", ".cfnlintrc:1: ignore_check: is not a cfn-lint setting"),
    ] {
        repo.commit_files("settings", &[(".cfnlintrc", text)]);
        let out = validate(repo.path(), &["--all", "--no-tools"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// `regions` in `.cfnlintrc.yaml` is where E3006 looks: a type us-east-1 has (cfn-lint's
/// default region) but eu-west-1 lacks is reported for eu-west-1 once it is configured, as
/// `cfn-lint --regions us-east-1 eu-west-1` reports it (at the `Type` key).
#[test]
fn regions_in_the_cfnlintrc_decide_where_resource_types_must_exist() {
    let repo = repo("Resources:\n  Session:\n    Type: AWS::Bedrock::Session\n");
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    repo.commit_files("regions", &[(".cfnlintrc.yaml", "regions: [us-east-1, eu-west-1]\n")]);
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with(
            "cfn/app.yaml:3:5: E3006 error: resource type `AWS::Bedrock::Session` does not exist in 'eu-west-1'"
        ),
        "{stdout}"
    );
}

/// `[validate] regions` in pipeline.toml adds to `.cfnlintrc`'s regions: E3006 is reported for
/// each region of either that lacks the type, and the dry run names them all.
#[test]
fn validate_regions_in_pipeline_toml_combine_with_the_cfnlintrc() {
    let repo = repo("Resources:\n  Session:\n    Type: AWS::Bedrock::Session\n");
    let with_regions = |regions: &str| {
        CONFIG.replace(
            "templates = [\"cfn/**/*.yaml\"]\n",
            &format!("templates = [\"cfn/**/*.yaml\"]\nregions = {regions}\n"),
        )
    };
    repo.commit_files("regions", &[("pipeline.toml", &with_regions("[\"eu-west-1\"]"))]);
    let plan = String::from_utf8_lossy(&validate(repo.path(), &["--all", "--dry-run"]).stdout).into_owned();
    assert!(plan.contains("resource types checked for: eu-west-1\n"), "{plan}");
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("E3006")).collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].contains("does not exist in 'eu-west-1'"), "{stdout}");

    repo.commit_files("and the rc", &[(".cfnlintrc.yaml", "regions: [eu-west-3, eu-west-1]\n")]);
    let plan = String::from_utf8_lossy(&validate(repo.path(), &["--all", "--dry-run"]).stdout).into_owned();
    assert!(plan.contains("resource types checked for: eu-west-1, eu-west-3\n"), "{plan}");
    let stdout = String::from_utf8_lossy(&validate(repo.path(), &["--all", "--no-tools"]).stdout).into_owned();
    let regions: Vec<&str> =
        stdout.lines().filter(|l| l.contains("E3006")).filter_map(|l| l.split('\'').nth(1)).collect();
    assert_eq!(regions, ["eu-west-1", "eu-west-3"], "{stdout}");
}

/// A region nobody knows in `[validate] regions` is a usage error naming the key and its line.
#[test]
fn an_unknown_region_in_pipeline_toml_names_the_key_and_line() {
    let repo = repo(GOOD);
    let config = CONFIG.replace(
        "templates = [\"cfn/**/*.yaml\"]\n",
        "templates = [\"cfn/**/*.yaml\"]\nregions = [\"us-east-1\",\n  \"mars-north-1\"]\n",
    );
    let line = config.lines().position(|l| l.contains("mars-north-1")).unwrap() + 1;
    repo.commit_files("regions", &[("pipeline.toml", &config)]);
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pipeline.toml:{line}: validate.regions: `mars-north-1` is not a region cfn-lint knows"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The schema rules through the binary: a nested unknown property, a value outside the allowed
/// ones and an IAM action that does not exist, each one line at cfn-lint's position.
#[test]
fn schema_rules_reach_the_report_through_the_binary() {
    let template = "Resources:\n  Bucket:\n    Type: AWS::S3::Bucket\n    Properties:\n      VersioningConfiguration:\n        Status: enabled\n        Mfa: true\n  Policy:\n    Type: AWS::IAM::ManagedPolicy\n    Properties:\n      PolicyDocument:\n        Version: \"2012-10-17\"\n        Statement:\n          - Effect: Allow\n            Action: s3:GetObjekt\n            Resource: \"*\"\n";
    let repo = repo(template);
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let places: Vec<&str> =
        stdout.lines().filter_map(|l| l.split(" error:").next()).filter_map(|l| l.split(" warning:").next()).collect();
    assert_eq!(places, ["cfn/app.yaml:6:9: E3030", "cfn/app.yaml:7:9: E3002", "cfn/app.yaml:15:13: W3037"], "{stdout}");
}
