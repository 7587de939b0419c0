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

/// Chromium's headless flags: nothing of its own reaches the network, and no name resolves.
const CHROMIUM_FLAGS: [&str; 11] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--host-resolver-rules=MAP * ~NOTFOUND",
];

/// What Chromium made of a page: the DOM after parsing (and any script), and the console
/// messages it logged (a page with no script should log none: a blocked script, a refused
/// resource or a failed load each log one).
struct Loaded {
    dom: String,
    console: Vec<String>,
}

/// Runs Debian's `chromium` headless on `page` with `extra` arguments, bounded by a minute. A
/// missing browser fails the test: CI installs it (.ci/run), so its absence is a broken setup.
fn chromium(page: &Path, extra: &[String]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let child = Command::new("chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run chromium ({e}): install Debian's chromium package (.ci/run does)"));
    let pid = child.id();
    let (done, waiting) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if waiting.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let output = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    assert!(output.status.success(), "chromium failed: {}", text(&output.stderr));
    output
}

fn load(page: &Path) -> Loaded {
    let output = chromium(page, &["--dump-dom".to_string()]);
    let console = text(&output.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect();
    Loaded { dom: text(&output.stdout), console }
}

/// The `<svg>` of a chart in the DOM.
fn chart_in<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no chart {id}"));
    let end = start + dom[start..].find("</svg>").unwrap();
    &dom[start..end]
}

/// The page in a real browser (Chromium, headless), for a scripted history of six runs on
/// distinct days whose newest failed web's test with a `<script>` in its error: what a person
/// looks for is there, nothing runs, nothing is fetched, and a screenshot is kept.
#[test]
fn the_page_in_a_headless_browser_marks_the_failure_runs_nothing_and_fetches_nothing() {
    let repo = tempfile::tempdir().unwrap();
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let now = SystemTime::now();
    let starts: Vec<SystemTime> = (0..6u64).map(|k| now - Duration::from_secs((5 - k) * 86_400 + 3600)).collect();
    for (k, start) in starts.iter().enumerate() {
        for record in run(&format!("r{k}"), *start, 60, 75 + k as u64) {
            store.record(&record).unwrap();
        }
    }
    let mut broken = StepRecord::new("r5", "c0ffee1234567890", "web", Step::Test, Status::Failed);
    broken.started_at = Some(starts[5] + Duration::from_secs(10));
    broken.ended_at = Some(starts[5] + Duration::from_secs(15));
    broken.details.error = Some("<script>document.title='owned'</script> 1 failed: test_login".into());
    store.record(&broken).unwrap();
    // The days a person would count: one bar, one rate and one coverage point each.
    let mut days: Vec<String> =
        starts.iter().map(|s| humantime::format_rfc3339_seconds(*s).to_string()[..10].to_string()).collect();
    days.dedup();

    let out = repo.path().join("site");
    let output = status_report(repo.path(), &["html", "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let page = out.join("pipeline.html");
    let loaded = load(&page);
    let dom = &loaded.dom;

    // The failed step is marked, its error is there as text, one click away (a <details>).
    assert!(
        dom.contains("<tr class=\"failed-step\"><td>web</td><td>test</td><td class=\"failed\">failed</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("<details class=\"error\"><summary>error</summary><pre>&lt;script&gt;document.title='owned'&lt;/script&gt; 1 failed: test_login</pre></details>"),
        "{dom}"
    );
    assert!(dom.contains("<span class=\"refused\" id=\"gate\">refused</span>"), "{dom}");
    // The script in the error was shown, not run: no script element, the title untouched.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(dom.contains("<title>Pipeline run r5</title>"), "{dom}");
    // The charts: a bar per day, a success rate per day, a coverage point per day.
    assert_eq!(chart_in(dom, "chart-runs").matches("<rect class=\"bar\"").count(), days.len(), "{days:?}");
    assert_eq!(chart_in(dom, "chart-success").matches("<circle").count(), days.len());
    assert_eq!(chart_in(dom, "chart-coverage-api").matches("<circle").count(), days.len());
    assert!(dom.contains(&format!("<title>{}: 80%</title>", days[days.len() - 1])), "r5's coverage: {dom}");
    // Nothing to fetch: no URL, no source, no link, no import in what the browser built.
    for external in ["http://", "https://", "src=", "href=", "<link", "@import", "url("] {
        assert!(!dom.contains(external), "{external} in the page: {dom}");
    }
    assert_eq!(loaded.console, Vec::<String>::new(), "console messages");

    // The console check sees what it is there for: a script the page's policy blocks is logged.
    let control = repo.path().join("control.html");
    let html =
        std::fs::read_to_string(&page).unwrap().replace("</body>", "<script>document.title='ran'</script></body>");
    std::fs::write(&control, html).unwrap();
    let blocked = load(&control);
    assert!(blocked.console.iter().any(|l| l.contains("Content Security Policy")), "{:?}", blocked.console);
    assert!(blocked.dom.contains("<title>Pipeline run r5</title>"), "the policy let the script run");

    // A screenshot a person can look at, under the target folder.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-report-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&page, &[format!("--screenshot={}", shot.display()), "--window-size=1280,1600".to_string()]);
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 1600));
}
