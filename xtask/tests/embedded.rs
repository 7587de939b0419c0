//! The embedded default itself: `cargo xtask pipeline` with no `--endpoint-url`, as a newcomer
//! runs it. The monorepo's own emulator is started by the first run and kept, so a resumed
//! approval reaches production against what dev deployed, and a one-component change updates
//! the stacks in place (not a second first run); `cargo xtask emulator --stop` stops it and the
//! next run says what was lost and deploys everything again; a state file that lies (another
//! checkout's, corrupt, a dead pid, a port something else holds) is said in one line and never
//! taken for a live emulator.

use std::path::Path;
use std::process::{Command, Output};

use run_state::{FileStore, PIPELINE, RunDir, Status, Step, StepRecord, Store};
use test_support::GitRepo;

fn xtask(args: &[&str], repo: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).arg("--repo").arg(repo).output().unwrap()
}

fn pipeline(repo: &GitRepo, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--repo"])
        .arg(repo.path())
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn records(repo: &GitRepo, run_id: &str) -> Vec<StepRecord> {
    FileStore::open(&repo.path().join(".pipeline")).unwrap().run(run_id).unwrap()
}

fn status(records: &[StepRecord], component: &str, step: Step) -> Option<Status> {
    records.iter().find(|r| r.component == component && r.step == step).map(|r| r.status)
}

fn latest(repo: &GitRepo) -> RunDir {
    RunDir::latest(&repo.path().join(".pipeline")).unwrap()
}

/// The endpoint in the monorepo's emulator state file.
fn endpoint(repo: &GitRepo) -> String {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.path().join(".pipeline/emulator.json")).unwrap()).unwrap();
    state["endpoint"].as_str().unwrap().to_string()
}

/// What AWS holds in dev: the master stack's id and creation time, each function's code hash,
/// and the site's objects with their last-modified times.
#[derive(Debug, PartialEq)]
struct Dev {
    stack_id: String,
    created: i64,
    updated: Option<i64>,
    code: Vec<(String, String)>,
    site: Vec<(String, i64)>,
}

fn dev(endpoint: &str, site_bucket: &str) -> Dev {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .test_credentials()
            .endpoint_url(endpoint)
            .load()
            .await;
        let cfn = aws_target::cloudformation(&config, None);
        let stacks = cfn.describe_stacks().stack_name("pipeline-dashboard-dev").send().await.unwrap();
        let stack = &stacks.stacks()[0];
        let lambda = aws_target::lambda(&config, None);
        let mut code = Vec::new();
        for name in ["api-handler", "orchestration", "execution-finder", "execution-poller", "frontend-builder"] {
            let function =
                lambda.get_function().function_name(format!("pipeline-dashboard-dev-{name}")).send().await.unwrap();
            code.push((name.to_string(), function.configuration().unwrap().code_sha256().unwrap().to_string()));
        }
        let s3 = aws_target::s3(&config, None);
        let listed = s3.list_objects_v2().bucket(site_bucket).send().await.unwrap();
        let site = listed
            .contents()
            .iter()
            .map(|o| (o.key().unwrap().to_string(), o.last_modified().unwrap().as_nanos() as i64))
            .collect();
        Dev {
            stack_id: stack.stack_id().unwrap().to_string(),
            created: stack.creation_time().unwrap().secs(),
            updated: stack.last_updated_time().map(|t| t.secs()),
            code,
            site,
        }
    })
}

fn site_bucket(run: &RunDir) -> String {
    let outputs = run_state::StackOutputs::read(run).unwrap();
    outputs.environments["dev"]["master"].outputs["SiteBucketName"].clone()
}

#[test]
fn the_embedded_default_keeps_what_it_deployed_until_stopped() {
    let repo = test_support::sample_monorepo();
    // Whatever happens below, the emulator this test started goes with it.
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ =
                Command::new(env!("CARGO_BIN_EXE_xtask")).args(["emulator", "--stop", "--repo"]).arg(self.0).output();
        }
    }
    let _stop = Stop(repo.path());

    // 1. A first run with no terminal: dev deployed into a new emulator, waiting for approval.
    let out = pipeline(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("emulator started at"), "{}", text(&out));
    let first = latest(&repo);
    assert_eq!(status(&records(&repo, &first.run_id), PIPELINE, Step::Approval), Some(Status::Pending));
    let endpoint = endpoint(&repo);

    // 2. The README's next step: the same emulator is found, and production is reached.
    let out = pipeline(&repo, &["--resume", &first.run_id, "--approve", "--approver", "newcomer"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("emulator at {endpoint} (kept from earlier runs")), "{}", text(&out));
    let done = records(&repo, &first.run_id);
    assert_eq!(status(&done, "frontend", Step::Dast), Some(Status::Passed), "{}", text(&out));
    assert_eq!(status(&done, "infra", Step::ProdDeploy), Some(Status::Passed), "{}", text(&out));
    let bucket = site_bucket(&first);
    let before = dev(&endpoint, &bucket);
    assert!(!before.site.is_empty(), "the site was published to dev");

    // 3. One Lambda changed: deployed into the same emulator as an update of what is there.
    let handler = repo.path().join("lambda/api-handler/index.py");
    let source = std::fs::read_to_string(&handler).unwrap();
    repo.write("lambda/api-handler/index.py", &format!("{source}\n# a one-component change\n"));
    repo.commit_all("api-handler: a comment");
    let out = pipeline(&repo, &["--approve"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("emulator at {endpoint} (kept from earlier runs")), "{}", text(&out));
    assert_eq!(crate::endpoint(&repo), endpoint, "the same emulator");
    let change = latest(&repo);
    let changed = records(&repo, &change.run_id);
    let after = dev(&endpoint, &bucket);
    assert_eq!(status(&changed, "infra", Step::Deploy), Some(Status::Passed), "{}", text(&out));
    assert_eq!(status(&changed, "frontend", Step::Deploy), Some(Status::Skipped), "{}", text(&out));
    assert_eq!(status(&changed, "infra", Step::ProdDeploy), Some(Status::Passed), "{}", text(&out));
    assert_eq!(after.stack_id, before.stack_id, "the stack was not made again");
    assert_eq!(after.created, before.created, "the stack was not made again");
    for ((name, was), (_, is)) in before.code.iter().zip(&after.code) {
        if name == "api-handler" {
            assert_ne!(was, is, "the changed function's code is updated");
        } else {
            assert_eq!(was, is, "{name}'s code is left as it was");
        }
    }
    assert_eq!(after.site, before.site, "the site is not uploaded again");

    // 4. Stopped: the state file goes and nothing answers there any more.
    let out = xtask(&["emulator", "--stop"], repo.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("stopped the emulator at {endpoint}")), "{}", text(&out));
    assert!(!repo.path().join(".pipeline/emulator.json").exists());
    assert_eq!(test_support::health(&endpoint), None, "nothing answers at {endpoint}");

    // 5. A run waiting for approval whose emulator is then gone is refused on resume, with why.
    repo.write("lambda/api-handler/index.py", &format!("{source}\n# another change\n"));
    repo.commit_all("api-handler: another comment");
    let out = pipeline(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The emulator was stopped, so the base of the last success no longer holds: everything again.
    assert!(text(&out).contains("every component is deployed again"), "{}", text(&out));
    assert!(text(&out).contains("emulator started at"), "{}", text(&out));
    let waiting = latest(&repo);
    let waiting_records = records(&repo, &waiting.run_id);
    assert_eq!(status(&waiting_records, "frontend", Step::Deploy), Some(Status::Passed), "the site again");
    let _ = xtask(&["emulator", "--stop"], repo.path());
    let out = pipeline(&repo, &["--resume", &waiting.run_id, "--approve"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("run {} cannot be resumed", waiting.run_id)), "{said}");
    assert!(said.contains("no longer running"), "{said}");
    let resumed = records(&repo, &waiting.run_id);
    assert!(resumed.iter().all(|r| r.step != Step::ProdDeploy), "nothing reached prod: {resumed:#?}");
}

/// State files that lie are said in one line each, and a new emulator is started in their
/// place; the lie is never taken for a live emulator.
#[test]
fn a_state_file_that_lies_is_said_and_replaced() {
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", "[components.a]\npaths = [\"a/**\"]\n"), ("a/x", "1\n")]);
    let state = repo.path().join(".pipeline");
    std::fs::create_dir_all(&state).unwrap();
    let here = std::fs::canonicalize(&state).unwrap();
    // Something that is not an emulator holds a port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in squatter.incoming() {
            use std::io::Write;
            let mut stream = stream.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        }
    });
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cases: Vec<(&str, String, &str)> = vec![
        ("corrupt", "{not json".into(), "is corrupt"),
        (
            "another checkout",
            serde_json::json!({"endpoint": format!("http://127.0.0.1:{free}"), "pid": 1, "moto_pid": 1, "id": "x", "checkout": "/elsewhere/.pipeline"}).to_string(),
            "was written for another checkout",
        ),
        (
            "a dead pid",
            serde_json::json!({"endpoint": format!("http://127.0.0.1:{free}"), "pid": 1, "moto_pid": 999_999, "id": "x", "checkout": here}).to_string(),
            "is no longer running",
        ),
        (
            "a port taken by something else",
            serde_json::json!({"endpoint": format!("http://127.0.0.1:{taken}"), "pid": 1, "moto_pid": 999_999, "id": "x", "checkout": here}).to_string(),
            "something else answers",
        ),
    ];
    for (what, file, said) in cases {
        std::fs::write(state.join("emulator.json"), &file).unwrap();
        // The embedded store in the emulator makes the run start it (and so inspect the file).
        let out = pipeline(&repo, &["--store", "dynamodb://pipeline-status"]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(0), "{what}: {all}");
        let line = all.lines().find(|l| l.contains("emulator started at")).unwrap_or_else(|| panic!("{what}: {all}"));
        assert!(line.contains(said), "{what}: {line}");
        assert!(line.contains("what earlier runs deployed there is gone"), "{what}: {line}");
        let endpoint = endpoint(&repo);
        assert!(test_support::health(&endpoint).is_some(), "{what}: a live emulator replaced it");
        assert!(!endpoint.ends_with(&format!(":{taken}")), "{what}: never the squatter's port");
        let out = xtask(&["emulator", "--stop"], repo.path());
        assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out));
    }
}
