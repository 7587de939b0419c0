//! `status-report stats` run as a user runs it, over a file store the test writes: the figures,
//! the regression check and its thresholds, and bad input.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use run_state::{Coverage, FileStore, PIPELINE, Ratio, Status, Step, StepRecord, Store};

fn status_report(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_status-report"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("PIPELINE_STORE")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The records of one run that started `start`: validate 10s, api's test `test_secs` with
/// `covered`% of lines, api's deploy 20s.
fn run(id: &str, start: SystemTime, test_secs: u64, covered: u64) -> Vec<StepRecord> {
    let step = |component: &str, step, from: u64, secs: u64| {
        let mut record = StepRecord::new(id, "c0ffee1234567890", component, step, Status::Passed);
        record.started_at = Some(start + Duration::from_secs(from));
        record.ended_at = Some(start + Duration::from_secs(from + secs));
        record
    };
    let mut validate = step(PIPELINE, Step::Validate, 0, 10);
    validate.details.note =
        Some("1 template(s), 4 file(s) scanned, 0 tool(s): 2 finding(s), 0 at or above error".into());
    let mut test = step("api", Step::Test, 10, test_secs);
    test.details.coverage = Some(Box::new(Coverage { lines: Ratio { covered, total: 100 }, ..Coverage::default() }));
    vec![validate, test, step("api", Step::Deploy, 10 + test_secs, 20)]
}

/// Eleven steady runs, one an hour over the last days, then `last` (test seconds, coverage).
fn history(store: &dyn Store, last: (u64, u64)) -> SystemTime {
    let first = SystemTime::now() - Duration::from_secs(3 * 86_400);
    for i in 0..11u64 {
        for record in run(&format!("r{i:02}"), first + Duration::from_secs(i * 3600), 60, 80) {
            store.record(&record).unwrap();
        }
    }
    for record in run("r11", first + Duration::from_secs(11 * 3600), last.0, last.1) {
        store.record(&record).unwrap();
    }
    first
}

#[test]
fn stats_shows_the_figures_of_the_store_and_check_names_the_regressed_stage() {
    let repo = tempfile::tempdir().unwrap();
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    history(&store, (300, 70));

    // The figures, as JSON: what a dashboard would read.
    let output = status_report(repo.path(), &["stats", "--since", "30d", "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["runs"]["total"], 12);
    assert_eq!(json["runs"]["success_rate"], 100.0);
    let test = json["stages"].as_array().unwrap().iter().find(|s| s["step"] == "test").unwrap();
    // Eleven tests of 60s and one of 300s: average 80s, P95 (nearest rank 12 of 12) 300s.
    assert_eq!(
        (test["duration"]["average_secs"].as_f64(), test["duration"]["p95_secs"].as_f64()),
        (Some(80.0), Some(300.0))
    );
    // Lead time without promotion: run start to deploy's end (10 + 60 + 20 s for the steady runs).
    assert_eq!(json["lead_step"], "deploy");
    assert_eq!(json["lead_time"]["count"], 12);
    let coverage = &json["coverage"][0];
    assert_eq!(coverage["component"], "api");
    assert_eq!(coverage["points"].as_array().unwrap().last().unwrap()["lines"], 70.0);
    assert_eq!(json["findings"][0]["findings"], 2);

    // The table names the stages with their figures.
    let table = text(&status_report(repo.path(), &["stats"]).stdout);
    assert!(table.starts_with("12 run(s): 12 passed, 0 failed, 0 unfinished; success rate 100%\n"), "{table}");
    assert!(table.contains("\n  test      12      0       0        100%     1m20s  5m00s\n"), "{table}");
    let markdown = text(&status_report(repo.path(), &["stats", "--format", "markdown"]).stdout);
    assert!(markdown.contains("| test | 12 | 0 | 0 | 100% | 1m20s | 5m00s |"), "{markdown}");

    // The check: the last run's test took 300s against a P95 of 60s (the run 330s against 90s),
    // and its coverage fell from 80% to 70%.
    let output = status_report(repo.path(), &["stats", "--check"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "regression: run: run took 5m30s in run r11, over 1.5 × its P95 of 1m30s over the 11 runs before\n\
         regression: test: test took 5m00s in run r11, over 1.5 × its P95 of 1m00s over the 11 runs before\n\
         regression: coverage of api: api's line coverage fell from 80% (run r10) to 70% in run r11\n"
    );

    // Thresholds from [stats]: a factor of 10 and a 10-point allowance pass the same run.
    std::fs::write(repo.path().join("pipeline.toml"), "[stats]\nduration_factor = 10\nmax_coverage_drop = 10\n")
        .unwrap();
    let output = status_report(repo.path(), &["stats", "--check"]);
    assert_eq!((output.status.code(), text(&output.stdout)), (Some(0), "no regression in run r11\n".to_string()));

    // A mistake in the section: one line naming the file, the line and the key; exit 2.
    std::fs::write(repo.path().join("pipeline.toml"), "[stats]\nwindow = 20\nfactor = 2\n").unwrap();
    let output = status_report(repo.path(), &["stats", "--check"]);
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.contains("pipeline.toml:3: stats.factor: unknown field"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn bad_input_is_one_line_or_an_honest_empty_report() {
    // No store at all: an empty report, and nothing to judge.
    let repo = tempfile::tempdir().unwrap();
    let output = status_report(repo.path(), &["stats"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("0 run(s): 0 passed, 0 failed, 0 unfinished; success rate n/a\n"));
    let output = status_report(repo.path(), &["stats", "--check"]);
    assert_eq!((output.status.code(), text(&output.stdout)), (Some(0), "no regression in run none\n".to_string()));
    assert!(!repo.path().join(".pipeline/state.jsonl").exists(), "stats created a store");

    // A --since that is not a duration.
    let output = status_report(repo.path(), &["stats", "--since", "lately"]);
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.starts_with("status-report: --since `lately` is not a duration; write e.g. 30d"), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");

    // A torn last line (a crash mid-write) is skipped; a run with missing steps still counts.
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let mut lone = StepRecord::new("r1", "abc", "api", Step::Test, Status::Failed);
    lone.ended_at = Some(SystemTime::now());
    store.record(&lone).unwrap();
    let state = repo.path().join(".pipeline/state.jsonl");
    let mut bytes = std::fs::read(&state).unwrap();
    bytes.extend_from_slice(br#"{"kind":"step","run_id":"r2","com"#);
    std::fs::write(&state, bytes).unwrap();
    let output = status_report(repo.path(), &["stats", "--since", "1d"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let table = text(&output.stdout);
    assert!(table.starts_with("1 run(s): 0 passed, 1 failed, 0 unfinished; success rate 0%; since "), "{table}");

    // A foreign line in the middle of the store: the store's one-line error, exit 2.
    let mut bytes = std::fs::read(&state).unwrap();
    bytes.extend_from_slice(b"\nnot json\n");
    std::fs::write(&state, bytes).unwrap();
    let output = status_report(repo.path(), &["stats"]);
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.starts_with("status-report: cannot read the runs from the store: "), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
}

#[test]
fn env_selects_the_runs_that_deployed_there_and_ends_the_lead_time_there() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), "[gate.environments.prod]\nafter = \"dev\"\napproval = true\n")
        .unwrap();
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let start = SystemTime::now() - Duration::from_secs(86_400);
    for record in run("r1", start, 60, 80) {
        store.record(&record).unwrap();
    }
    // r2 reached production 2 hours after it started.
    for record in run("r2", start + Duration::from_secs(3600), 60, 80) {
        store.record(&record).unwrap();
    }
    let mut prod = StepRecord::new("r2", "c0ffee1234567890", "api", Step::ProdDeploy, Status::Passed);
    prod.started_at = Some(start + Duration::from_secs(3600 + 7000));
    prod.ended_at = Some(start + Duration::from_secs(3600 + 7200));
    store.record(&prod).unwrap();

    let output = status_report(repo.path(), &["stats", "--env", "prod", "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((json["runs"]["total"].as_u64(), json["env"].as_str()), (Some(1), Some("prod")));
    assert_eq!(
        (json["lead_step"].as_str(), json["lead_time"]["average_secs"].as_f64()),
        (Some("prod-deploy"), Some(7200.0))
    );
    // Without --env, both runs, and the lead time still to production (prod is promoted).
    let json: serde_json::Value =
        serde_json::from_slice(&status_report(repo.path(), &["stats", "--format", "json"]).stdout).unwrap();
    assert_eq!((json["runs"]["total"].as_u64(), json["lead_time"]["count"].as_u64()), (Some(2), Some(1)));
}

/// The same figures and check from the DynamoDB store (moto), named by `--store`.
#[test]
fn stats_reads_a_dynamodb_store_in_one_pass() {
    let moto = test_support::Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = runtime.block_on(moto.sdk_config());
    runtime
        .block_on(run_state::DynamoStore::create_table(&aws_sdk_dynamodb::Client::new(&config), "stats-history"))
        .unwrap();
    let store = run_state::DynamoStore::new(&config, "stats-history").unwrap();
    history(&store, (300, 80));
    drop(store);

    let repo = tempfile::tempdir().unwrap();
    let aws = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_status-report"))
            .arg("--repo")
            .arg(repo.path())
            .args(["--endpoint-url", &moto.endpoint, "--region", "us-east-1", "--store", "dynamodb://stats-history"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("PIPELINE_STORE")
            .output()
            .unwrap()
    };
    let output = aws(&["stats", "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["runs"]["total"], 12);
    let days: u64 = json["per_day"].as_array().unwrap().iter().map(|d| d["total"].as_u64().unwrap()).sum();
    assert_eq!(days, 12);
    let test = json["stages"].as_array().unwrap().iter().find(|s| s["step"] == "test").unwrap();
    assert_eq!(test["duration"]["p95_secs"].as_f64(), Some(300.0));
    // Coverage held at 80%: only the slow stage and the slow run are named.
    let output = aws(&["stats", "--check"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let said = text(&output.stdout);
    let stages: Vec<&str> = said.lines().map(|l| l.split(": ").nth(1).unwrap_or_default()).collect();
    assert_eq!(stages, ["run", "test"]);
    assert!(!repo.path().join(".pipeline/state.jsonl").exists());
}

/// `html --out DIR`: one page a person opens, the failed step marked with its error shown as
/// text, a chart point per day; an --out that is a file is one line.
#[test]
fn html_writes_one_page_with_the_failed_step_and_the_trends() {
    let repo = tempfile::tempdir().unwrap();
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let first = history(&store, (60, 80));
    let mut broken = StepRecord::new("r12", "c0ffee1234567890", "web", Step::Test, Status::Failed);
    broken.started_at = Some(first + Duration::from_secs(12 * 3600));
    broken.ended_at = Some(first + Duration::from_secs(12 * 3600 + 5));
    broken.details.error = Some("<script>document.title='owned'</script> 1 failed".into());
    store.record(&broken).unwrap();

    std::fs::write(repo.path().join("pipeline.toml"), "[gate.environments.prod]\nafter = \"dev\"\napproval = true\n")
        .unwrap();
    let out = repo.path().join("site");
    let output = status_report(repo.path(), &["html", "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), format!("{}\n", out.join("pipeline.html").display()));
    let html = std::fs::read_to_string(out.join("pipeline.html")).unwrap();
    assert!(html.contains("<h1>Pipeline run r12"), "the newest run");
    assert!(html.contains("&lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt; 1 failed"));
    assert!(!html.contains("<script"));
    assert!(html.contains("<td class=\"failed\">failed</td>"));
    // Production is refused for this run (nothing approved), and the page says so with why.
    assert!(html.contains("<span class=\"refused\" id=\"promotion-prod\">refused</span>"), "{html}");
    assert!(html.contains("diff.json is missing; run `source-diff --new-run` for this run first"), "{html}");
    let days = {
        let json: serde_json::Value =
            serde_json::from_slice(&status_report(repo.path(), &["stats", "--format", "json"]).stdout).unwrap();
        json["per_day"].as_array().unwrap().len()
    };
    let runs_chart = &html[html.find("id=\"chart-runs\"").unwrap()..];
    let runs_chart = &runs_chart[..runs_chart.find("</svg>").unwrap()];
    assert_eq!(runs_chart.matches("<rect").count(), days);

    let file = repo.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let output = status_report(repo.path(), &["html", "--out", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(error.ends_with("a-file: not a folder; name the folder to write pipeline.html into\n"), "{error}");
}

/// `dashboard` prints a body CloudWatch takes: the namespace of [notify], the region given.
#[test]
fn dashboard_prints_the_body_for_the_configured_namespace() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), "[notify]\nmetrics_namespace = \"Pipeline/Mine\"\n").unwrap();
    let output = status_report(repo.path(), &["--region", "eu-west-1", "dashboard"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let durations = &json["widgets"][2]["properties"];
    assert_eq!(
        (durations["title"].as_str(), durations["region"].as_str()),
        (Some("Stage duration P95 (s)"), Some("eu-west-1"))
    );
    assert_eq!(durations["metrics"][0][0], "Pipeline/Mine");
    let output = Command::new(env!("CARGO_BIN_EXE_status-report"))
        .args(["--repo", repo.path().to_str().unwrap(), "dashboard", "--namespace", "X"])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    assert_eq!(
        (output.status.code(), text(&output.stderr)),
        (Some(2), "status-report: no region: pass --region or set AWS_REGION\n".to_string())
    );
}
