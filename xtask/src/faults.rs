//! `cargo xtask faults`: the bad-input and fault corpus, run against the stage binaries with
//! time and memory bounds, printed as a table (case, exit, time, peak memory, verdict).
//!
//! Each case builds its scene in a temporary folder (a git repository, a FIFO, a link to
//! `/dev/zero`, a shallow clone …; static inputs come from `fixtures/faults/`), runs one binary
//! as a user would, and checks the result: the expected exit code, a one-line error naming the
//! fix or the expected finding, no secret in any output, no process left behind, nothing
//! written outside the run folder, the cache or `--out`. The command runs under a measuring
//! xtask (`faults --measure`) that kills it at the hang bound and reports its peak memory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use test_support::GitRepo;

/// The goal for every case.
const TIME_GOAL: Duration = Duration::from_secs(10);
/// A case still running after this is a hang: it is killed and fails.
const HANG: Duration = Duration::from_secs(60);
/// The goal for every case's peak memory.
const MEMORY_GOAL_KB: u64 = 256 * 1024;

/// What a case ran and what came out.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    peak_kb: u64,
}

impl Ran {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A case's checks beyond the bounds; `Err` says what is wrong.
type Check = Box<dyn Fn(&Ran) -> Result<(), String>>;

struct Case {
    name: &'static str,
    /// Keeps the scene alive while the command runs.
    _scene: Scene,
    dir: PathBuf,
    program: String,
    args: Vec<String>,
    check: Check,
}

enum Scene {
    Repo(GitRepo),
    Dir(tempfile::TempDir),
}

fn expect_exit(code: i32, needle: &'static str) -> impl Fn(&Ran) -> Result<(), String> {
    move |ran: &Ran| {
        if ran.code != Some(code) {
            return Err(format!("exit {:?}, expected {code}: {}", ran.code, one_line(&ran.all())));
        }
        if !ran.all().contains(needle) {
            return Err(format!("no `{needle}` in: {}", one_line(&ran.all())));
        }
        if code == 2 && ran.stderr.trim_end().lines().count() != 1 {
            return Err(format!("not a one-line error: {}", one_line(&ran.stderr)));
        }
        Ok(())
    }
}

fn one_line(text: &str) -> String {
    let line = text.replace('\n', " ⏎ ");
    if line.chars().count() > 160 { format!("{}…", line.chars().take(160).collect::<String>()) } else { line }
}

fn fixture(name: &str) -> String {
    let path = crate::workspace_root().join("fixtures/faults").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const COMPONENTS: &str = "[components.infra]\npaths = [\"cfn/**\"]\n\n[validate]\ntemplates = [\"cfn/**/*.yaml\"]\n";

fn repo_with(files: &[(&str, &str)]) -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_files("scene", files);
    repo
}

/// A repository whose `api` component's test runs `test_run`, then a commit of `files` and a
/// run begun for it.
fn repo_with_test_run(test_run: &str, message: &str, files: &[(&str, &str)]) -> GitRepo {
    let config = format!("[components.api]\npaths = [\"api/**\"]\ntest = {{ run = \"{test_run}\" }}\n");
    let repo = repo_with(&[("pipeline.toml", &config), (".gitignore", ".pipeline/\n")]);
    let base = repo.head();
    repo.commit_files(message, files);
    start_run(&repo, &base);
    repo
}

/// `Err` naming the exit and the output unless the binary exited `code`.
fn exit_code(ran: &Ran, code: i32) -> Result<(), String> {
    if ran.code != Some(code) {
        return Err(format!("exit {:?}: {}", ran.code, one_line(&ran.all())));
    }
    Ok(())
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn case(
    name: &'static str,
    scene: Scene,
    program: &str,
    args: &[&str],
    check: impl Fn(&Ran) -> Result<(), String> + 'static,
) -> Case {
    let dir = match &scene {
        Scene::Repo(repo) => repo.path().to_path_buf(),
        Scene::Dir(dir) => dir.path().to_path_buf(),
    };
    Case {
        name,
        _scene: scene,
        dir,
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        check: Box::new(check),
    }
}

/// `status-report record` of a failed test step of `api` in run `r1`.
const RECORD_FAILED_TEST: [&str; 11] =
    ["record", "--run", "r1", "--commit", "abc", "--component", "api", "--step", "test", "--status", "failed"];

/// Every case of the corpus.
fn cases() -> Vec<Case> {
    let mut cases = unreadable_templates();
    cases.extend(hostile_sources());
    cases.extend(bad_inputs());
    cases.extend(huge_and_torn_inputs());
    cases.extend(step_leftovers());
    cases.extend(round_two());
    cases.push(shallow_clone());
    cases
}

/// Templates validate must not read whole: a named pipe, a link to /dev/zero, a tool quoting a
/// password.
fn unreadable_templates() -> Vec<Case> {
    let mut cases = Vec::new();

    // A tracked template that is a named pipe: read as nothing, never waited on.
    let repo = repo_with(&[("pipeline.toml", COMPONENTS), ("cfn/app.yaml", "Resources: {}\n")]);
    std::fs::remove_file(repo.path().join("cfn/app.yaml")).unwrap();
    mkfifo(&repo.path().join("cfn/app.yaml"));
    cases.push(case(
        "template is a FIFO",
        Scene::Repo(repo),
        "validate",
        &["--all", "--no-tools"],
        expect_exit(1, "named pipe"),
    ));

    // A tracked link to /dev/zero: never read to the end of memory.
    let repo = repo_with(&[("pipeline.toml", COMPONENTS)]);
    std::os::unix::fs::symlink("/dev/zero", repo.path().join("cfn-zero.yaml")).unwrap();
    std::fs::create_dir_all(repo.path().join("cfn")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", repo.path().join("cfn/zero.yaml")).unwrap();
    repo.git(&["add", "-A"]);
    repo.commit_all("link");
    cases.push(case(
        "template links to /dev/zero",
        Scene::Repo(repo),
        "validate",
        &["--all", "--no-tools"],
        |ran: &Ran| {
            if ran.code != Some(1) || !ran.all().contains("cfn/zero.yaml") {
                return Err(format!("exit {:?}: {}", ran.code, one_line(&ran.all())));
            }
            Ok(())
        },
    ));

    // A linter quoting a password from the template: the finding never carries it.
    let config = format!(
        "{COMPONENTS}\n[validate.tools.lint]\ncomponents = [\"infra\"]\nrun = \"sh lint.sh\"\nformat = \"cfn-lint\"\n"
    );
    let repo = repo_with(&[
        ("pipeline.toml", &config),
        ("cfn/app.yaml", "Resources: {}\n"),
        ("lint.sh", &fixture("lint-quoting-a-password.sh")),
    ]);
    cases.push(case("a tool's message quotes a password", Scene::Repo(repo), "validate", &["--all"], |ran: &Ran| {
        if ran.code != Some(1) || !ran.all().contains("E3012") {
            return Err(format!("exit {:?}: {}", ran.code, one_line(&ran.all())));
        }
        if ran.all().contains("Sup3rS3cretPassw0rd") {
            return Err("the password reached the output".into());
        }
        Ok(())
    }));
    cases
}

/// A function's sources that must not be packaged (a FIFO, dependencies linking out), and a
/// template expanding without bound.
fn hostile_sources() -> Vec<Case> {
    let mut cases = Vec::new();

    // lambda-packager: a FIFO among a function's sources, and a dependencies folder linking out.
    let lambda = "[lambda.functions.api]\nsources = [\"api\"]\n";
    let repo = repo_with(&[("pipeline.toml", lambda), ("api/handler.py", "def handler(e, c):\n    return 1\n")]);
    mkfifo(&repo.path().join("api/pipe.py"));
    cases.push(case(
        "a FIFO among a function's sources",
        Scene::Repo(repo),
        "lambda-packager",
        &["--out", "out"],
        expect_exit(2, "named pipe"),
    ));
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("stolen.py"), "SECRET = 1\n").unwrap();
    let config = format!("{lambda}dependencies_dir = \"vendor\"\n");
    let repo = repo_with(&[("pipeline.toml", &config), ("api/handler.py", "def handler(e, c):\n    return 1\n")]);
    std::os::unix::fs::symlink(outside.path(), repo.path().join("vendor")).unwrap();
    let out_dir = repo.path().join("out");
    cases.push(case(
        "dependencies_dir links out of the repo",
        Scene::Repo(repo),
        "lambda-packager",
        &["--out", "out"],
        move |ran: &Ran| {
            let _keep = &outside;
            expect_exit(2, "dependencies_dir")(ran)?;
            if out_dir.join("api.zip").exists() {
                return Err("a zip was written".into());
            }
            Ok(())
        },
    ));

    // A billion laughs: bounded expansion.
    let repo = repo_with(&[("pipeline.toml", COMPONENTS), ("cfn/laughs.yaml", &fixture("billion-laughs.yaml"))]);
    cases.push(case(
        "billion laughs template",
        Scene::Repo(repo),
        "validate",
        &["--all", "--no-tools"],
        expect_exit(1, "E0000"),
    ));
    cases
}

/// Inputs refused or read around: `record --log` on what is no log, config mistakes.
fn bad_inputs() -> Vec<Case> {
    let mut cases = Vec::new();

    // `status-report record --log` on a FIFO and on /dev/zero: the record is kept, the log is not read.
    for (name, log) in [("record --log FIFO", "pipe.log"), ("record --log /dev/zero", "/dev/zero")] {
        let dir = tempfile::tempdir().unwrap();
        let log = if log.starts_with('/') {
            log.to_string()
        } else {
            let path = dir.path().join(log);
            mkfifo(&path);
            path.display().to_string()
        };
        let args = [RECORD_FAILED_TEST.as_slice(), &["--log", &log]].concat();
        cases.push(case(
            name,
            Scene::Dir(dir),
            "status-report",
            &args,
            expect_exit(0, "recorded the step without its log tail"),
        ));
    }

    // Config mistakes: one line, exit 2, nothing started.
    for (name, file, needle) in [
        ("overflowing timeout", "huge-timeout.toml", "is longer than 24h"),
        ("component name leaves the run folder", "traversal-component.toml", "is not a valid name"),
        ("function name leaves --out", "traversal-function.toml", "is not a valid name"),
    ] {
        let repo = repo_with(&[("pipeline.toml", &fixture(file))]);
        let program = if file.contains("function") { "lambda-packager" } else { "source-diff" };
        let args: &[&str] = if program == "lambda-packager" { &["--out", "out"] } else { &[] };
        cases.push(case(name, Scene::Repo(repo), program, args, expect_exit(2, needle)));
    }
    let repo = repo_with(&[("README", "x")]);
    std::fs::write(repo.path().join("pipeline.toml"), b"[diff]\ndefault_branch = \"m\xe9in\"\n").unwrap();
    cases.push(case(
        "config not UTF-8",
        Scene::Repo(repo),
        "source-diff",
        &[],
        expect_exit(2, "pipeline.toml:2: not UTF-8"),
    ));
    cases
}

/// A 10,000-component chain and a store torn inside a character.
fn huge_and_torn_inputs() -> Vec<Case> {
    let mut cases = Vec::new();

    // A 10,000-component depends_on chain: linear, not gigabytes.
    let mut chain = String::new();
    for i in 0..10_000 {
        chain.push_str(&format!("[components.c{i}]\npaths = [\"c{i}/**\"]\n"));
        if i > 0 {
            chain.push_str(&format!("depends_on = [\"c{}\"]\n", i - 1));
        }
    }
    let repo = repo_with(&[("pipeline.toml", &chain)]);
    repo.commit_files("first component", &[("c0/a", "1")]);
    cases.push(case(
        "10,000-component chain",
        Scene::Repo(repo),
        "source-diff",
        &["--format", "env"],
        expect_exit(0, "c9999_deploy_required=true"),
    ));

    // A store whose last line was cut inside a multi-byte character.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".pipeline");
    std::fs::create_dir_all(&state).unwrap();
    let whole = r#"{"kind":"step","run_id":"r1","commit":"abc","component":"api","step":"test","status":"passed"}"#;
    let mut bytes = format!("{whole}\n{{\"kind\":\"step\",\"run_id\":\"r1\",\"commit\":\"é").into_bytes();
    bytes.pop();
    std::fs::write(state.join("state.jsonl"), bytes).unwrap();
    cases.push(case(
        "torn multi-byte store tail",
        Scene::Dir(dir),
        "status-report",
        &["runs"],
        expect_exit(0, "r1 refused"),
    ));
    cases
}

/// What a step leaves: secrets in its `set -x` output, a background process.
fn step_leftovers() -> Vec<Case> {
    let mut cases = Vec::new();

    // Secrets a test prints with `set -x`: never in the log, the record or the output.
    let repo = repo_with_test_run("sh api/test.sh", "leaky test", &[("api/test.sh", &fixture("set-x-secrets.sh"))]);
    let root = repo.path().to_path_buf();
    cases.push(case(
        "secrets in set -x output",
        Scene::Repo(repo),
        "step-runner",
        &["--step", "test"],
        move |ran: &Ran| {
            exit_code(ran, 1)?;
            no_secret_in(
                &root.join(".pipeline"),
                ran,
                &["hunter2secret", "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLE", "AKIAIOSFODNN7EXAMPLE", "s3cr3tT0ken"],
            )
        },
    ));

    // A background process a passing step leaves behind is stopped with the step.
    // A sleep of a length no other process has, so it can be found by its arguments.
    let marker = format!("{}4321", std::process::id());
    let repo = repo_with_test_run(&format!("sleep {marker} & echo ok"), "api", &[("api/a", "1")]);
    cases.push(case(
        "step leaves a background process",
        Scene::Repo(repo),
        "step-runner",
        &["--step", "test"],
        move |ran: &Ran| {
            exit_code(ran, 0)?;
            match processes_named(&marker) {
                Ok(0) => Ok(()),
                Ok(n) => Err(format!("{n} process(es) outlived the step")),
                Err(e) => Err(format!("cannot tell whether processes outlived the step: {e}")),
            }
        },
    ));
    cases
}

/// A shallow clone of a feature branch whose merge-base with main was not fetched.
fn shallow_clone() -> Case {
    let origin = GitRepo::new();
    origin.commit_files("base", &[("pipeline.toml", "[components.api]\npaths = [\"api/**\"]\n")]);
    for i in 0..3 {
        origin.commit_files("main work", &[("api/main", &i.to_string())]);
    }
    origin.git(&["checkout", "-q", "-b", "feature"]);
    for i in 0..3 {
        origin.commit_files("feature work", &[("api/feature", &i.to_string())]);
    }
    let clone = tempfile::tempdir().unwrap();
    let url = format!("file://{}", origin.path().display());
    let status = Command::new("git")
        .args(["clone", "-q", "--depth", "2", "--no-single-branch", "--branch", "feature", &url])
        .arg(clone.path().join("repo"))
        .status()
        .unwrap();
    assert!(status.success());
    let cloned = clone.path().join("repo");
    let mut shallow = case(
        "shallow clone, base not fetched",
        Scene::Dir(clone),
        "source-diff",
        &[],
        expect_exit(2, "git fetch --deepen"),
    );
    shallow.dir = cloned;
    drop(origin);
    shallow
}

/// The second round's cases: texts a record takes, password forms in a log, a config mistake
/// with no run, a step flooding its log, a year-old store and its pruning.
fn round_two() -> Vec<Case> {
    let mut cases = redacted_texts();
    cases.extend(no_run_and_flood());
    cases.extend(old_store());
    cases
}

/// Texts a record takes and password forms in a log: redacted as logs are redacted.
fn redacted_texts() -> Vec<Case> {
    let mut cases = Vec::new();

    // `status-report record --error/--note` redacts as logs are redacted.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".pipeline");
    let texts = ["--error", "login failed: password=hunter2record", "--note", "key AKIAIOSFODNN7EXAMPLE used"];
    let args = [RECORD_FAILED_TEST.as_slice(), &texts].concat();
    cases.push(case(
        "record --error/--note with secrets",
        Scene::Dir(dir),
        "status-report",
        &args,
        move |ran: &Ran| {
            exit_code(ran, 0)?;
            no_secret_in(&state, ran, &["hunter2record", "AKIAIOSFODNN7EXAMPLE"])
        },
    ));

    // A failing step whose log prints passwords as CLIs take them.
    let repo = repo_with_test_run("sh api/test.sh", "leaky test", &[("api/test.sh", &fixture("password-forms.sh"))]);
    let state = repo.path().join(".pipeline");
    cases.push(case("passwords in CLI forms in a log", Scene::Repo(repo), "step-runner", &["--step", "test"], {
        move |ran: &Ran| {
            exit_code(ran, 1)?;
            no_secret_in(&state, ran, &["hunter2mysql", "d0ckerS3cretPw", "wJalrXUtnFEMI/K7MDENG/bPxRfiCyEXAMPLEKEY"])
        }
    }));
    cases
}

/// A config mistake with no run, and a step flooding its log.
fn no_run_and_flood() -> Vec<Case> {
    let mut cases = Vec::new();

    // A wrong-typed `[runner]` key with no run: the config line, not "no pipeline run".
    let repo =
        repo_with(&[("pipeline.toml", "[components.api]\npaths = [\"api/**\"]\n[runner]\nparallelism = \"two\"\n")]);
    cases.push(case(
        "wrong-typed [runner] key, no run",
        Scene::Repo(repo),
        "step-runner",
        &["--step", "test"],
        expect_exit(2, "pipeline.toml:4: runner.parallelism"),
    ));

    // A step printing 200 MB: the log keeps its first and last part, with a marker.
    let repo = repo_with_test_run("yes 0123456789abcdef | head -c 209715200", "api", &[("api/a", "1")]);
    let state = repo.path().join(".pipeline");
    cases.push(case(
        "a step prints 200 MB",
        Scene::Repo(repo),
        "step-runner",
        &["--step", "test"],
        move |ran: &Ran| {
            exit_code(ran, 0)?;
            let logs: Vec<PathBuf> = walkdir(&state).into_iter().filter(|p| p.ends_with("logs/api-test.log")).collect();
            let [log] = logs.as_slice() else { return Err(format!("{} api-test logs", logs.len())) };
            let size = std::fs::metadata(log).map_err(|e| e.to_string())?.len();
            if size > 17 << 20 {
                return Err(format!("the log holds {} MiB", size >> 20));
            }
            let tail =
                String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).contains("bytes of output cut here");
            if !tail {
                return Err("the log does not say what was cut".into());
            }
            Ok(())
        },
    ));
    cases
}

/// A year-old store, and its pruning.
fn old_store() -> Vec<Case> {
    use run_state::Store as _;
    let mut cases = Vec::new();

    // A year-old store (100 MB): `runs` answers in bounds.
    let store = crate::bench_store::generate(&crate::workspace_root(), 100).expect("the 100 MB store");
    let mut year =
        case("runs on a 100 MB store", Scene::Dir(tempfile::tempdir().unwrap()), "status-report", &["runs"], {
            |ran: &Ran| {
                if ran.code != Some(0) || ran.stdout.lines().count() < 1000 {
                    return Err(format!("exit {:?}, {} lines", ran.code, ran.stdout.lines().count()));
                }
                Ok(())
            }
        });
    year.dir = store;
    cases.push(year);

    // Pruning keeps each environment's success mark.
    let dir = tempfile::tempdir().unwrap();
    let store = run_state::FileStore::open(&dir.path().join(".pipeline")).unwrap();
    for n in 1..=5 {
        let run = format!("r{n}");
        let commit = format!("{n:040}");
        for step in [run_state::Step::Test, run_state::Step::Deploy] {
            let mut record = run_state::StepRecord::new(&run, &commit, "api", step, run_state::Status::Passed);
            record.ended_at = Some(std::time::SystemTime::now());
            store.record(&record).unwrap();
        }
    }
    store.mark_success_for("r2", "dev", run_state::Step::Deploy).unwrap();
    let state = dir.path().join(".pipeline");
    cases.push(case(
        "prune keeps the success mark",
        Scene::Dir(dir),
        "status-report",
        &["prune", "--keep-runs", "1"],
        {
            move |ran: &Ran| {
                exit_code(ran, 0)?;
                let store = run_state::FileStore::open(&state).map_err(|e| e.to_string())?;
                let mark = store.last_success("dev").map_err(|e| e.to_string())?;
                if mark.as_ref().map(|m| m.run_id.as_str()) != Some("r2") {
                    return Err(format!("dev's success mark is now {mark:?}"));
                }
                let runs = store.run_ids().map_err(|e| e.to_string())?;
                if runs.contains(&"r3".to_string()) || !runs.contains(&"r5".to_string()) {
                    return Err(format!("runs kept: {runs:?}"));
                }
                Ok(())
            }
        },
    ));
    cases
}

/// `Ok` when none of `secrets` is in the output or any file under `state`.
fn no_secret_in(state: &Path, ran: &Ran, secrets: &[&str]) -> Result<(), String> {
    let mut everything = ran.all();
    for entry in walkdir(state) {
        everything.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap_or_default()));
    }
    match secrets.iter().find(|secret| everything.contains(*secret)) {
        Some(secret) => Err(format!("`{secret}` reached a log, a record or the output")),
        None => Ok(()),
    }
}

/// Starts a run of `repo`'s head against `base`, as `source-diff --new-run` does in CodeBuild.
fn start_run(repo: &GitRepo, base: &str) {
    let diff =
        Command::new(binary("source-diff")).current_dir(repo.path()).args(["--new-run", "--base", base]).output();
    let diff = diff.expect("source-diff runs");
    assert!(diff.status.success(), "{}", String::from_utf8_lossy(&diff.stderr));
}

/// A stage binary beside this xtask (whose path may read "xtask (deleted)" after a rebuild:
/// only its folder counts).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the xtask binary");
    exe.with_file_name(name)
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else if entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(path);
            }
        }
    }
    files
}

/// How many processes are `sleep ARG` with `ARG` = `arg`.
fn processes_named(arg: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut seen_any = false;
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        seen_any = true;
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == arg.as_bytes() {
            count += 1;
        }
    }
    if !seen_any {
        bail!("/proc lists no process");
    }
    Ok(count)
}

/// `cargo xtask faults`: runs the corpus and prints the table; an error when a case fails.
pub fn run(exe: &Path) -> anyhow::Result<()> {
    let cases = cases();
    println!("{:<36} {:>5} {:>9} {:>10}  verdict", "case", "exit", "time", "peak");
    let mut failed = 0;
    for case in &cases {
        let ran = measured(exe, case)?;
        let mut verdict = (case.check)(&ran).err();
        if verdict.is_none() && ran.peak_kb > MEMORY_GOAL_KB {
            verdict = Some(format!("peak memory {} MiB over the 256 MiB goal", ran.peak_kb / 1024));
        }
        if verdict.is_none() && ran.elapsed > TIME_GOAL {
            verdict = Some(format!("took {:.1}s, over the 10 s goal", ran.elapsed.as_secs_f64()));
        }
        let exit = ran.code.map_or("kill".to_string(), |c| c.to_string());
        println!(
            "{:<36} {:>5} {:>8.2}s {:>7} MiB  {}",
            case.name,
            exit,
            ran.elapsed.as_secs_f64(),
            ran.peak_kb / 1024,
            verdict.as_deref().map_or("ok".to_string(), |v| format!("FAIL: {v}"))
        );
        failed += usize::from(verdict.is_some());
    }
    if failed > 0 {
        bail!("{failed} of {} fault case(s) failed", cases.len());
    }
    println!("{} fault cases: all ok", cases.len());
    Ok(())
}

/// Runs a case's command under `xtask faults --measure`, which reports its peak memory.
fn measured(exe: &Path, case: &Case) -> anyhow::Result<Ran> {
    let start = Instant::now();
    let out = Command::new(exe)
        .args(["faults", "--measure", "--"])
        .arg(binary(&case.program))
        .args(&case.args)
        .current_dir(&case.dir)
        .stdin(Stdio::null())
        .output()
        .context("running the measuring xtask")?;
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The measurer's last stderr line: `faults-measure: EXIT PEAK_KB`.
    let (stderr, report) = stderr.trim_end().rsplit_once('\n').map_or(("", stderr.trim_end()), |(a, b)| (a, b));
    let Some(report) = report.strip_prefix("faults-measure: ") else {
        bail!("the measuring xtask did not report: {stderr}{report}");
    };
    let (code, peak) = report.split_once(' ').context("a measure report")?;
    Ok(Ran {
        code: code.parse().ok(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: if stderr.is_empty() { String::new() } else { format!("{stderr}\n") },
        elapsed,
        peak_kb: peak.parse().unwrap_or(0),
    })
}

/// `xtask faults --measure -- PROGRAM ARGS…`: runs the program (killed with its group at the
/// hang bound), then prints `faults-measure: EXIT PEAK_KB` as stderr's last line.
pub fn measure(command: &[String]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let (program, args) = command.split_first().context("faults --measure -- PROGRAM ARGS…")?;
    let mut child = Command::new(program).args(args).process_group(0).spawn()?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > HANG {
            let group = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let code = status.and_then(|s| s.code()).map_or("kill".to_string(), |c| c.to_string());
    eprintln!("faults-measure: {code} {}", usage.max_rss());
    Ok(())
}
