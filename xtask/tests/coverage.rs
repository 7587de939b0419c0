//! Coverage gates end to end: `cargo xtask pipeline` reads each component's coverage report
//! after its test step, and a figure under its minimum, or a report it cannot trust, refuses the gate.

use std::process::{Command, Output};

use run_state::{FileStore, RunDir, Status, Step, StepRecord, Store};
use test_support::GitRepo;

fn pipeline(repo: &GitRepo) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(["pipeline", "--repo"]).arg(repo.path()).output().unwrap()
}

fn test_records(repo: &GitRepo) -> Vec<StepRecord> {
    let state = repo.path().join(".pipeline");
    let run = RunDir::latest(&state).unwrap();
    FileStore::open(&state).unwrap().run(&run.run_id).unwrap().into_iter().filter(|r| r.step == Step::Test).collect()
}

const CONFIG: &str = r#"
[components.good]
paths = ["good/**"]
# Written in another checkout: mapped to good/a.js by its repository-relative suffix.
test = { run = 'mkdir -p cov && printf "SF:/elsewhere/checkout/good/a.js\nDA:1,1\nDA:2,1\nend_of_record\nSF:/elsewhere/checkout/low/a.js\nDA:1,0\nend_of_record\n" > cov/good.lcov', coverage = { report = "cov/good.lcov", format = "lcov", min_lines = 90 } }

[components.low]
paths = ["low/**"]
# Its own report says 1 of 4 lines, and low/b.js is in no report: 1 of 7.
test = { run = 'mkdir -p cov && printf "SF:low/a.js\nDA:1,1\nDA:2,0\nDA:3,0\nDA:4,0\nend_of_record\nSF:good/a.js\nDA:1,1\nend_of_record\n" > cov/low.lcov', coverage = { report = "cov/low.lcov", format = "lcov", min_lines = 80 } }

[components.missing]
paths = ["missing/**"]
test = { run = "true", coverage = { report = "cov/never.xml", format = "cobertura", min_lines = 80 } }

[components.malformed]
paths = ["malformed/**"]
test = { run = "mkdir -p cov && echo '<coverage><packages>' > cov/bad.xml", coverage = { report = "cov/bad.xml", format = "cobertura", min_lines = 80 } }

[components.huge]
paths = ["huge/**"]
test = { run = "mkdir -p cov && truncate -s 100M cov/huge.lcov", coverage = { report = "cov/huge.lcov", format = "lcov", min_lines = 80 } }
"#;

#[test]
fn reports_that_cannot_be_trusted_refuse_the_gate_each_in_one_line() {
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", CONFIG), (".gitignore", ".pipeline/\ncov/\n")]);
    repo.commit_files(
        "work",
        &[
            ("good/a.js", "a();\nb();\n"),
            ("low/a.js", "1\n2\n3\n4\n"),
            ("low/b.js", "x();\n\ny();\nz();\n"),
            ("missing/a.py", "x = 1\n"),
            ("malformed/a.py", "x = 1\n"),
            ("huge/a.js", "x();\n"),
        ],
    );
    let out = pipeline(&repo);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let reasons: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  - ")).collect();
    let reason = |component: &str| {
        let prefix = format!("{component} test failed: ");
        reasons
            .iter()
            .find_map(|r| r.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no reason for {component}: {stdout}"))
    };
    // Only low's files count (good/a.js in its report does not lift it); low/b.js is in no report.
    assert_eq!(
        reason("low"),
        "coverage below the minimum: lines 14.2% (1/7) < 80%; furthest below: low/b.js 0% (in no report), low/a.js 25% (1/4); add tests or lower components.low.test.coverage.min_lines"
    );
    assert_eq!(
        reason("missing"),
        "coverage: no coverage report at cov/never.xml after the test step; make components.missing.test.run write it there or fix components.missing.test.coverage.report"
    );
    assert!(reason("malformed").contains("cov/bad.xml is not valid cobertura"), "{stdout}");
    assert!(reason("malformed").contains("the document ends before </coverage>"), "{stdout}");
    assert!(
        reason("huge").starts_with("coverage: the coverage report cov/huge.lcov is 104857600 bytes, over the"),
        "{stdout}"
    );
    assert_eq!(reasons.len(), 4, "{stdout}");

    let records = test_records(&repo);
    let good = records.iter().find(|r| r.component == "good").unwrap();
    assert_eq!(good.status, Status::Passed);
    let coverage = good.details.coverage.as_ref().unwrap();
    // Cut to good's own file: low/a.js in the same report does not count.
    assert_eq!((coverage.lines.covered, coverage.lines.total), (2, 2));
    assert!(records.iter().filter(|r| r.component != "good").all(|r| r.status == Status::Failed));
}

#[test]
fn new_untested_code_lowers_the_sample_below_its_minimum_and_the_gate_refuses() {
    let repo = test_support::sample_monorepo();
    // An untested module: no test imports it, so no report mentions it, and it counts as 0%.
    let body: String = (0..40).map(|i| format!("def helper_{i}(x):\n    return x + {i}\n\n")).collect();
    repo.commit_files("untested helpers", &[("lambda/api-handler/helpers.py", &body)]);
    let out = pipeline(&repo);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let reasons: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  - ")).collect();
    assert_eq!(
        reasons,
        [
            "api-handler test failed: coverage below the minimum: lines 48.1% (90/187) < 80%, changed lines 0% (0/80) < 80%; \
             furthest below: lambda/api-handler/helpers.py 0% (in no report), lambda/api-handler/index.py 77% (57/74); \
             add tests or lower components.api-handler.test.coverage.min_lines / components.api-handler.test.coverage.min_changed_lines"
        ],
        "{stdout}"
    );
    let records = test_records(&repo);
    let api = records.iter().find(|r| r.component == "api-handler").unwrap();
    assert_eq!(api.status, Status::Failed);
    let coverage = api.details.coverage.as_ref().unwrap();
    assert_eq!(coverage.unreported, 1);
    assert_eq!(coverage.files[0].path, "lambda/api-handler/helpers.py");
    let run = RunDir::latest(&repo.path().join(".pipeline")).unwrap();
    let markdown = std::fs::read_to_string(run.path.join("report.md")).unwrap();
    assert!(markdown.contains("| `lambda/api-handler/helpers.py` | 0% (in no report) |"), "{markdown}");
}
