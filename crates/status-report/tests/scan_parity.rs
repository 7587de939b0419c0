//! `stats::from_file_store` (the file store read its own way, for speed) gives what
//! `stats::from_store` (the store's own visit of its runs) gives: the same figures for a
//! generated history with every shape of line a store may hold, and the same error for a line
//! the store did not write.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use run_state::{Coverage, FileCoverage, FileStore, PIPELINE, Ratio, ReleaseDigest, Status, Step, StepRecord, Store};
use status_report::stats::{self, Query, StatsPolicy};

/// A small linear congruential generator: the same history every time.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const STATUSES: [Status; 6] =
    [Status::Pending, Status::Running, Status::Passed, Status::Failed, Status::Skipped, Status::Cancelled];

/// One record of run `id` at `start`, of a random step, status and details.
fn record(random: &mut Lcg, id: &str, start: SystemTime) -> StepRecord {
    let step = Step::ALL[random.below(Step::ALL.len() as u64) as usize];
    let component = match step {
        Step::Source | Step::Diff | Step::Validate | Step::Approval => PIPELINE,
        _ => ["api", "web", "worker", "ünï"][random.below(4) as usize],
    };
    let status = STATUSES[random.below(6) as usize];
    let mut record = StepRecord::new(id, "c0ffee", component, step, status);
    let from = random.below(3600);
    if random.below(10) > 0 {
        record.started_at = Some(start + Duration::from_millis(from * 1000 + random.below(1000)));
    }
    if status.is_final() && random.below(10) > 0 {
        record.ended_at = Some(start + Duration::from_secs(from + random.below(600)));
    }
    let details = &mut record.details;
    match random.below(6) {
        0 => details.note = Some(format!("1 template(s): {} finding(s), {} at or above error", random.below(9), 1)),
        1 => details.note = Some("a \"quoted\" note\twith escapes".into()),
        2 => details.error = Some(format!("3 finding(s), {} at or above error", random.below(3))),
        3 => details.log_tail = Some("line one\nline two\n".into()),
        _ => details.log_path = Some(format!("logs/{component}-{step}.log")),
    }
    if step == Step::Test && random.below(4) > 0 {
        details.coverage = Some(Box::new(Coverage {
            report: "coverage.xml".into(),
            lines: Ratio { covered: random.below(100), total: random.below(2) * 100 },
            branches: (random.below(2) == 0).then_some(Ratio { covered: 3, total: 4 }),
            min_lines: (random.below(2) == 0).then_some(72.5),
            files: if random.below(5) == 0 {
                vec![FileCoverage { path: "a.py".into(), lines: Ratio { covered: 1, total: 2 }, reported: true }]
            } else {
                Vec::new()
            },
            ..Coverage::default()
        }));
    }
    if step == Step::Approval && random.below(2) == 0 {
        details.by = Some(Box::new("alice".into()));
        let mut digest = ReleaseDigest::default();
        digest.insert("api", "sha256:0");
        details.digest = Some(Box::new(digest));
    }
    if !status.is_final()
        && random.below(3) == 0
        && let Some((runner, process)) = run_state::this_process()
    {
        // This process (alive), or a pid of this host that is surely free (dead).
        let (host, _) = runner.rsplit_once(':').unwrap();
        details.runner = Some(if random.below(2) == 0 { runner.clone() } else { format!("{host}:4194000") });
        details.runner_process = Some(process);
    }
    record
}

/// A store of `runs` runs, a few at a time interleaved, steps recorded again (running then a
/// result, a result then a skip), with success marks, locks, a run id and lines in other
/// shapes the store still reads, and a torn last line.
fn history(dir: &Path, runs: usize) -> FileStore {
    let store = FileStore::open(dir).unwrap();
    let mut random = Lcg(7);
    let first = SystemTime::now() - Duration::from_secs(40 * 86_400);
    let mut open: Vec<(String, SystemTime)> = Vec::new();
    for n in 0..runs {
        open.push((
            if n % 97 == 5 { format!("run \"{n}\"") } else { format!("run-{n}") },
            first + Duration::from_secs(n as u64 * 12_000),
        ));
        for _ in 0..8 {
            let (id, start) = open[random.below(open.len() as u64) as usize].clone();
            store.record(&record(&mut random, &id, start)).unwrap();
        }
        if open.len() > 3 {
            open.remove(0);
        }
        if n % 13 == 0 {
            store.mark_success(&format!("run-{n}"), "prod").ok();
            store.acquire_lock("deploy/api", &format!("run-{n}"), Duration::from_secs(60)).unwrap();
            store.release_lock("deploy/api", &format!("run-{n}")).unwrap();
        }
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(store.path()).unwrap();
    // Lines the store reads but did not write this way: fields in another order, spaces.
    let mut odd = StepRecord::new("odd", "c0ffee", "api", Step::Test, Status::Passed);
    odd.ended_at = Some(first);
    let json = serde_json::to_value(&odd).unwrap();
    writeln!(
        file,
        r#"{{"run_id":"odd","kind":"step","commit":"c","component":"api","step":"build","status":"failed"}}"#
    )
    .unwrap();
    let mut spaced = serde_json::to_string_pretty(&serde_json::json!({"kind": "step", "record": json})).unwrap();
    spaced = spaced.replace('\n', " ");
    let spaced = spaced.replace(r#""record": {"#, "").replacen("} }", "}", 1);
    writeln!(file, "{spaced}").unwrap();
    writeln!(file, r#"{{"kind":"step","run_id":"run-3","commit":"c","component":"api","step":"e2e","status":"passed","started_at":"2025-01-01T00:00:00Z","ended_at":"2025-01-01T00:01:00.5+00:00","details":{{"extra":1}}}}"#).unwrap();
    // A torn last line.
    write!(file, r#"{{"kind":"step","run_id":"run-9","comm"#).unwrap();
    store
}

fn queries(now: SystemTime) -> Vec<Query> {
    vec![
        Query::default(),
        Query { since: Some(now - Duration::from_secs(20 * 86_400)), ..Query::default() },
        Query { only_step: Some(Step::ProdDeploy), env: Some("prod".into()), ..Query::default() },
        Query { lead_step: Some(Step::Deploy), ..Query::default() },
    ]
}

#[test]
fn the_fast_read_gives_the_stores_figures() {
    let dir = tempfile::tempdir().unwrap();
    let store = history(dir.path(), 300);
    let policy = StatsPolicy { window: 7, min_runs: 2, ..StatsPolicy::default() };
    for query in queries(SystemTime::now()) {
        let slow = stats::from_store(&store, query.clone(), policy).unwrap();
        let fast = stats::from_file_store(&store, query, policy).unwrap();
        assert!(slow.runs.total > 0);
        assert_eq!(fast, slow);
        assert_eq!(fast.to_json(), slow.to_json());
        assert_eq!(stats::check(&fast, &policy), stats::check(&slow, &policy));
    }
    // `html`'s read: the newest run (or the one asked) with its records as the store reads them
    // (which refuses a line in another shape unless it holds the run's id).
    let refused = stats::from_file_store_with_run(&store, Some("run-3"), Query::default(), policy).unwrap_err();
    let refused = std::error::Error::source(&refused).unwrap();
    assert_eq!(run_state::error_chain(refused), run_state::error_chain(&store.run("run-3").unwrap_err()));
    let text = std::fs::read_to_string(store.path()).unwrap();
    let kept: Vec<&str> = text.split_inclusive('\n').filter(|l| l.starts_with(r#"{"kind":""#)).collect();
    std::fs::write(store.path(), kept.concat()).unwrap();
    let ids = store.run_ids().unwrap();
    let (figures, newest) = stats::from_file_store_with_run(&store, None, Query::default(), policy).unwrap();
    assert_eq!(figures, stats::from_store(&store, Query::default(), policy).unwrap());
    let newest = newest.unwrap();
    assert_eq!((&newest.run_id, &newest.records), (ids.last().unwrap(), &store.run(ids.last().unwrap()).unwrap()));
    for id in ids.iter().step_by(37).chain([&"run \"5\"".to_string(), &"odd".to_string(), &"none".to_string()]) {
        let (_, read) = stats::from_file_store_with_run(&store, Some(id), Query::default(), policy).unwrap();
        let read = read.unwrap();
        assert_eq!(read.records, store.run(id).unwrap(), "{id}");
        assert_eq!(read.run(id).unwrap(), read.records);
    }
}

#[test]
fn a_line_the_store_did_not_write_is_the_same_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = history(dir.path(), 40);
    let text = std::fs::read_to_string(store.path()).unwrap();
    let whole = &text[..text.rfind('\n').unwrap() + 1];
    let lines: Vec<&str> = whole.lines().collect();
    // The n-th step line the store wrote in its own shape.
    let steps: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].starts_with(r#"{"kind":"step","run_id":"run-"#)).collect();
    let step = |n: usize| (steps[n], lines[steps[n]]);
    let (s3, s10, s12, last) = (step(3), step(10), step(12), step(steps.len() - 4));
    let policy = StatsPolicy::default();
    let broken = [
        // Not JSON, between two runs.
        (lines.len() / 2, "not json".to_string()),
        // A step line in the store's shape whose record does not parse: the store says so when
        // it reaches the run.
        (s3.0, s3.1.replacen(r#""status":""#, r#""status":"bogus"#, 1)),
        (last.0, last.1.replacen(r#""component":"#, r#""component":7,"x":"#, 1)),
        (s10.0, s10.1.replacen(r#""commit":"c0ffee","#, "", 1)),
        // A step line with a control character in a text.
        (s12.0, s12.1.replacen("c0ffee", "c0\u{1}ffee", 1)),
        // A line the store places by parsing it.
        (20, r#"{"kind":"lock","name":"x"}"#.to_string()),
    ];
    for (at, line) in broken {
        let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        changed[at] = line.clone();
        std::fs::write(store.path(), format!("{}\n", changed.join("\n"))).unwrap();
        let slow = stats::from_store(&store, Query::default(), policy).unwrap_err();
        let fast = stats::from_file_store(&store, Query::default(), policy).unwrap_err();
        assert_eq!(run_state::error_chain(&fast), run_state::error_chain(&slow), "line {at}: {line}");
        assert!(changed.iter().filter(|l| **l != line).count() == changed.len() - 1, "{line}");
    }
    // Two faults in two runs: the one of the run first seen is reported, as the store does.
    let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    changed[last.0] = last.1.replacen(r#""status":""#, r#""status":"x"#, 1);
    changed[steps[1]] = lines[steps[1]].replacen(r#""step":""#, r#""step":"x"#, 1);
    std::fs::write(store.path(), format!("{}\n", changed.join("\n"))).unwrap();
    let slow = stats::from_store(&store, Query::default(), policy).unwrap_err();
    let fast = stats::from_file_store(&store, Query::default(), policy).unwrap_err();
    assert_eq!(run_state::error_chain(&fast), run_state::error_chain(&slow));
}
