//! What the CodeBuild rehearsals share (`codebuild.rs`, `drs.rs`): the stage binaries run as
//! CodeBuild runs them (`Rehearsal`, `codebuild_run`), a run's records and verdicts, the two
//! paths' runs compared, and what production holds, read with the credentials its role gives.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TOOLKIT: &[&str] = &[
    "source-diff",
    "validate",
    "lambda-packager",
    "step-runner",
    "status-report",
    "stack-deployer",
    "frontend-publisher",
    "rollback",
];

pub fn root() -> PathBuf {
    test_support::workspace_root()
}

pub fn binary(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_xtask")).parent().expect("the binaries' folder");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built; run the tests with `cargo xtask test` (all features)", path.display());
    path
}

/// One stage as CodeBuild runs it: `cargo xtask codebuild` with a fresh clone of the commit as
/// the primary source, the toolkit binaries and the previous stage's artifacts as secondary
/// sources; returns whether it succeeded and its output folder.
pub struct Rehearsal {
    pub dir: tempfile::TempDir,
    pub toolkit: PathBuf,
    pub repo: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Rehearsal {
    pub fn new(repo: &Path, env: Vec<(String, String)>) -> Rehearsal {
        let dir = tempfile::tempdir().unwrap();
        let toolkit = dir.path().join("toolkit");
        std::fs::create_dir_all(toolkit.join("bin")).unwrap();
        for name in TOOLKIT {
            std::os::unix::fs::symlink(binary(name), toolkit.join("bin").join(name)).unwrap();
        }
        Rehearsal { dir, toolkit, repo: repo.to_path_buf(), env }
    }

    pub fn stage(&self, buildspec: &str, previous: Option<&str>) -> (bool, PathBuf, String) {
        self.stage_with(buildspec, previous, &[])
    }

    /// A stage with variables of its own on top of the rehearsal's (a relay's endpoint).
    pub fn stage_with(
        &self,
        buildspec: &str,
        previous: Option<&str>,
        extra: &[(&str, &str)],
    ) -> (bool, PathBuf, String) {
        self.run(buildspec, previous, extra, &[])
    }

    /// A build started by hand (the Rollback project): `overrides` as the start's environment
    /// variables, which win over the buildspec's own, as in CodeBuild.
    pub fn started_by_hand(&self, buildspec: &str, overrides: &[(&str, &str)]) -> (bool, PathBuf, String) {
        self.run(buildspec, None, &[], overrides)
    }

    fn run(
        &self,
        buildspec: &str,
        previous: Option<&str>,
        extra: &[(&str, &str)],
        overrides: &[(&str, &str)],
    ) -> (bool, PathBuf, String) {
        let name = buildspec.trim_end_matches(".yml");
        let clone = self.dir.path().join(format!("src-{name}"));
        let cloned = Command::new("git").args(["clone", "-q"]).arg(&self.repo).arg(&clone).status().unwrap();
        assert!(cloned.success());
        let out = self.dir.path().join(format!("out-{name}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command.arg("codebuild").arg(root().join("buildspecs").join(buildspec)).arg("--src").arg(&clone);
        command.arg("--out").arg(&out).arg("--secondary").arg(format!("Toolkit={}", self.toolkit.display()));
        if let Some(previous) = previous {
            let artifact = format!("State{previous}");
            let folder = self.dir.path().join(format!("out-{}", previous.to_lowercase())).join("artifacts");
            command.arg("--secondary").arg(format!("{artifact}={}", folder.display()));
            command.arg("--env").arg(format!("STATE_ARTIFACT={artifact}"));
        }
        // The tools' venv first, as the CodeBuild image has them installed; pip finds the pinned
        // versions already there and must not reach an index.
        let venv = test_support::python().parent().unwrap().to_path_buf();
        let path = std::env::join_paths(
            std::iter::once(venv).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        command.env("PATH", path).env("PIP_NO_INDEX", "1").envs(self.env.iter().map(|(k, v)| (k, v)));
        command.envs(extra.iter().copied());
        for (name, value) in overrides {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        let output = command.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(matches!(output.status.code(), Some(0 | 1)), "{buildspec}: {text}");
        (output.status.success(), out, text)
    }
}

pub fn records(out: &Path) -> Vec<run_state::StepRecord> {
    use run_state::Store;
    let store = run_state::FileStore::open(&out.join("artifacts/.pipeline")).unwrap();
    let run = store.run_ids().unwrap().pop().expect("a run in the stage's artifacts");
    store.run(&run).unwrap()
}

/// A run's records as the contract compares them: each (component, step)'s last status, and the
/// note of a skip (why it was skipped is part of the verdict). Times, ids, log paths and the
/// process that ran a step are not.
pub fn verdicts(records: &[run_state::StepRecord]) -> std::collections::BTreeMap<(String, String), String> {
    let mut out = std::collections::BTreeMap::new();
    for record in records {
        let mut verdict = record.status.to_string();
        if record.status == run_state::Status::Skipped {
            verdict = format!("{verdict}: {}", record.details.note.as_deref().unwrap_or_default());
        }
        out.insert((record.component.clone(), record.step.to_string()), verdict);
    }
    out
}

pub type Production = (Vec<(String, String)>, Vec<(String, String)>, Vec<String>);

/// Production as the deployers reach it: its account's role, assumed with the external id.
pub struct Prod<'a> {
    /// The role of `[deploy.environments.prod]`.
    pub role_arn: &'a str,
    /// Its external id.
    pub external_id: &'a str,
    /// The stack whose outputs are compared (and name the site's bucket).
    pub stack: &'a str,
}

/// The sample monorepo's production (`fixtures/monorepo/pipeline.toml`).
pub const SAMPLE_PROD: Prod<'static> = Prod {
    role_arn: "arn:aws:iam::111111111111:role/pipeline-deploy",
    external_id: "pipeline-dashboard",
    stack: "pipeline-dashboard-prod",
};

/// The aws CLI of the tools' venv, its `--output json` parsed; a failure fails the test.
pub fn aws_json(args: &[&str], env: &[(String, String)]) -> serde_json::Value {
    let aws = test_support::python().parent().unwrap().join("aws");
    let out = Command::new(&aws)
        .args(args)
        .args(["--output", "json"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The emulator's default account, with test credentials.
pub fn pipeline_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Production's account, reached through its role as the deployers reach it: the environment
/// of an aws CLI call signed with the keys STS issued for it.
pub fn prod_env(endpoint: &str, prod: &Prod<'_>) -> Vec<(String, String)> {
    let assumed = aws_json(
        &[
            "sts",
            "assume-role",
            "--role-arn",
            prod.role_arn,
            "--role-session-name",
            "contract-test",
            "--external-id",
            prod.external_id,
        ],
        &pipeline_env(endpoint),
    );
    let credentials = &assumed["Credentials"];
    let mut env = pipeline_env(endpoint);
    env.retain(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY");
    for (name, field) in [
        ("AWS_ACCESS_KEY_ID", "AccessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "SecretAccessKey"),
        ("AWS_SESSION_TOKEN", "SessionToken"),
    ] {
        env.push((name.to_owned(), credentials[field].as_str().unwrap().to_owned()));
    }
    env
}

/// What AWS holds after production: the prod stack's outputs, each function's code hash and the
/// site's files.
pub fn production_state(endpoint: &str, prod: &Prod<'_>) -> Production {
    let env = prod_env(endpoint, prod);
    let json = |args: &[&str]| aws_json(args, &env);
    let stacks = json(&["cloudformation", "describe-stacks", "--stack-name", prod.stack]);
    let mut outputs: Vec<(String, String)> = stacks["Stacks"][0]["Outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            (o["OutputKey"].as_str().unwrap().to_owned(), o["OutputValue"].as_str().unwrap_or_default().to_owned())
        })
        // Generated names and ARNs differ between two emulators; the keys, and the values
        // that do not embed a generated id, are what must agree.
        .map(|(k, v)| {
            let id = v.len() >= 13 && v.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
            (k, if v.contains("arn:") || v.contains("://") || id { "<generated>".into() } else { v })
        })
        .collect();
    outputs.sort();
    let code: Vec<(String, String)> = function_code(&env).into_iter().collect();
    // The published site: the same files (the runtime config's content holds generated
    // endpoints, so names are compared, not hashes).
    let site = outputs.iter().find(|(k, _)| k == "SiteBucketName").map(|(_, v)| v.clone()).expect("a site bucket");
    let listed = json(&["s3api", "list-objects-v2", "--bucket", &site]);
    // The publisher's kept releases (.publish/kept/: a file list named by the run, copies named by
    // content, and the runtime config's content differs) are its bookkeeping, not the site.
    let mut files: Vec<String> = listed["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["Key"].as_str().unwrap().to_owned())
        .filter(|key| !key.starts_with(".publish/kept/"))
        .collect();
    files.sort();
    (outputs, code, files)
}

/// Both paths' records of one commit compared; what differs, one line each.
pub fn compare_runs(binaries: &[run_state::StepRecord], pipeline: &[run_state::StepRecord]) -> Vec<String> {
    let (by_binaries, by_pipeline) = (verdicts(binaries), verdicts(pipeline));
    by_binaries
        .keys()
        .chain(by_pipeline.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|key| by_binaries.get(*key) != by_pipeline.get(*key))
        .map(|key| {
            format!(
                "{} {}: binaries {:?}, pipeline {:?}",
                key.0,
                key.1,
                by_binaries.get(key).map(String::as_str).unwrap_or("(none)"),
                by_pipeline.get(key).map(String::as_str).unwrap_or("(none)")
            )
        })
        .collect()
}

/// The buildspecs after the toolkit's in CodePipeline's order, each with the stage whose
/// artifact it takes (`State<previous>`).
pub const CODEBUILD_ORDER: &[(&str, Option<&str>)] = &[
    ("diff.yml", None),
    ("validate.yml", Some("Diff")),
    ("build.yml", Some("Validate")),
    ("test.yml", Some("Build")),
    ("deploy.yml", Some("Test")),
    ("status.yml", Some("Deploy")),
    ("e2e.yml", Some("Status")),
    ("deploy-prod.yml", Some("E2e")),
];

/// The stage binaries in the README's CodeBuild order, one `xtask codebuild` per stage,
/// artifacts passed as folders; the last stage's output folder. DeployProd talks to the
/// emulator through a relay, which shows who signed each of its calls: every Lambda,
/// CloudFormation, CloudFront and S3 call of production must be signed with keys STS issued
/// for prod's role, the pipeline's own keys used only for that AssumeRole (and the state file
/// the buildspec copies to the pipeline's artifact bucket).
pub fn codebuild_run(repo: &Path, env: &[(String, String)]) -> PathBuf {
    let rehearsal = Rehearsal::new(repo, env.to_vec());
    let endpoint = env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL").map(|(_, v)| v.clone()).unwrap();
    let relay = test_support::Relay::start(&endpoint);
    let mut last = PathBuf::new();
    for &(buildspec, previous) in CODEBUILD_ORDER {
        let extra: &[(&str, &str)] =
            if buildspec == "deploy-prod.yml" { &[("AWS_ENDPOINT_URL", relay.endpoint.as_str())] } else { &[] };
        let (ok, out, text) = rehearsal.stage_with(buildspec, previous, extra);
        let check = std::fs::read_to_string(out.join("artifacts/site-check.json")).unwrap_or_default();
        assert!(ok, "{buildspec}: {text}\n{check}");
        last = out;
    }
    let issued = relay.issued_keys();
    let signatures = relay.signatures();
    assert!(!issued.is_empty(), "DeployProd never assumed prod's role: {signatures:?}");
    let mine = |s: &&test_support::Signature| issued.contains(&s.key);
    for service in ["lambda", "cloudformation", "s3"] {
        assert!(
            signatures.iter().any(|s| s.service == service && mine(&s)),
            "no {service} call in prod: {signatures:?}"
        );
    }
    let pipelines: Vec<_> = signatures.iter().filter(|s| !mine(s)).collect();
    assert!(
        pipelines.iter().all(|s| s.service == "sts" || s.service == "s3")
            && pipelines.iter().filter(|s| s.service == "s3").count() <= 1,
        "production calls signed with the pipeline's own keys: {pipelines:?}"
    );
    // The rehearsal's folders go with it; the last stage's artifacts are what the next run reads.
    let kept = repo.parent().unwrap().join(format!("contract-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&kept);
    let copied = Command::new("cp").arg("-a").arg(&last).arg(&kept).status().unwrap();
    assert!(copied.success());
    kept
}

/// A finished command's output and error, as one text (for assertion messages).
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The `rollback` binary against the emulator, with the emulator's test credentials.
pub fn rollback_binary(repo: &Path, endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary("rollback"))
        .arg("--repo")
        .arg(repo)
        .args(["--endpoint-url", endpoint])
        .args(args)
        .envs(pipeline_env(endpoint))
        .output()
        .unwrap()
}

/// What dev runs, read from the emulator: the sample's root stack's template and parameters,
/// and each function's CodeSha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevState {
    pub template: String,
    pub parameters: Vec<(String, String)>,
    pub code: std::collections::BTreeMap<String, String>,
}

pub fn dev_state(endpoint: &str) -> DevState {
    let env = pipeline_env(endpoint);
    let json = |args: &[&str]| aws_json(args, &env);
    let stack = "pipeline-dashboard-dev";
    let template = match &json(&["cloudformation", "get-template", "--stack-name", stack])["TemplateBody"] {
        serde_json::Value::String(body) => body.clone(),
        other => other.to_string(),
    };
    let described = json(&["cloudformation", "describe-stacks", "--stack-name", stack]);
    let mut parameters: Vec<(String, String)> = described["Stacks"][0]["Parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (p["ParameterKey"].as_str().unwrap().to_owned(), p["ParameterValue"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    parameters.sort();
    DevState { template, parameters, code: function_code(&env) }
}

/// Each function's CodeSha256 in the account `env`'s credentials reach, by function name.
pub fn function_code(env: &[(String, String)]) -> std::collections::BTreeMap<String, String> {
    aws_json(&["lambda", "list-functions"], env)["Functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (f["FunctionName"].as_str().unwrap().to_owned(), f["CodeSha256"].as_str().unwrap().to_owned()))
        .collect()
}

/// The sample as the CodeBuild rehearsals take it: one commit on `main`, with no packages for
/// the shared dependency layer to fetch (loopback only).
pub fn rehearsal_sample() -> test_support::GitRepo {
    let repo = test_support::sample_monorepo();
    repo.git(&["branch", "-M", "main"]);
    std::fs::write(repo.path().join("lambda/requirements.txt"), "# none\n").unwrap();
    repo.git(&["commit", "-q", "-a", "--amend", "--no-edit"]);
    repo
}

/// The pipeline's environment for a CodeBuild rehearsal against `endpoint` (its artifact
/// bucket, the approver, dev's CloudFormation role), with that bucket and the sample's dev and
/// prod artifact buckets made.
pub fn rehearsal_env(endpoint: &str, artifact_bucket: &str) -> Vec<(String, String)> {
    let mut env = pipeline_env(endpoint);
    env.extend(
        [
            ("ARTIFACT_BUCKET", artifact_bucket),
            ("APPROVED_BY", "alice"),
            ("CFN_ROLE_ARN", "arn:aws:iam::123456789012:role/xtask-contract-cfn"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    for bucket in [artifact_bucket, "pipeline-dashboard-artifacts-dev", "pipeline-dashboard-artifacts-prod"] {
        aws_json(&["s3api", "create-bucket", "--bucket", bucket], &env);
    }
    env
}
