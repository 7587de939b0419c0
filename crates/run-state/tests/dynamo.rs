//! The DynamoDB store against moto, through the real SDK client: conditional writes, locks,
//! the last success per environment, a missing table.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use run_state::{DynamoStore, Error, Status, Step, StepRecord, Store};
use test_support::Moto;

fn config() -> aws_config::SdkConfig {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(Moto::shared().sdk_config())
}

/// A fresh table shaped as cfn/pipeline.yaml's StatusTable (pk, sk), and a store on it.
fn store(name: &str) -> DynamoStore {
    let config = config();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = aws_sdk_dynamodb::Client::new(&config);
    runtime.block_on(async {
        DynamoStore::create_table(&client, name).await.unwrap();
    });
    DynamoStore::new(&config, name).unwrap()
}

fn rec(run: &str, commit: &str, component: &str, step: Step, status: Status) -> StepRecord {
    StepRecord::new(run, commit, component, step, status)
}

#[test]
fn a_finished_step_wins_every_race_with_a_late_writer() {
    let store = Arc::new(store("race"));
    const ROUNDS: usize = 15;
    for round in 0..ROUNDS {
        let run = format!("r{round}");
        // A late `running` against a finish: whichever lands first, the step ends passed.
        let start = Barrier::new(2);
        let (late, finish) = std::thread::scope(|scope| {
            let late = scope.spawn(|| {
                start.wait();
                store.record(&rec(&run, "abc", "api", Step::Test, Status::Running))
            });
            let finish = scope.spawn(|| {
                start.wait();
                store.record(&rec(&run, "abc", "api", Step::Test, Status::Passed))
            });
            (late.join().unwrap(), finish.join().unwrap())
        });
        finish.unwrap();
        assert!(
            matches!(&late, Ok(()) | Err(Error::StepFinished { status: Status::Passed, .. })),
            "round {round}: {late:?}"
        );
        assert_eq!(store.run(&run).unwrap()[0].status, Status::Passed, "round {round}");

        // Two finishes: exactly one lands, the other is told the step already finished, and
        // the stored state is the winner's.
        let start = Barrier::new(2);
        let results: Vec<(Status, Result<(), Error>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = [Status::Passed, Status::Failed]
                .into_iter()
                .map(|status| {
                    let (store, start, run) = (&store, &start, &run);
                    scope.spawn(move || {
                        start.wait();
                        (status, store.record(&rec(run, "abc", "web", Step::Deploy, status)))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<Status> = results.iter().filter(|(_, r)| r.is_ok()).map(|(s, _)| *s).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = results.iter().find(|(_, r)| r.is_err()).unwrap();
        assert!(
            matches!(&loser.1, Err(Error::StepFinished { status, .. }) if *status == winners[0]),
            "round {round}: {results:?}"
        );
        let web = store.run(&run).unwrap().into_iter().find(|r| r.component == "web").unwrap();
        assert_eq!(web.status, winners[0], "round {round}");
    }
    // The same write again (an SDK retry of a write that landed) is not a conflict.
    store.record(&rec("r0", "abc", "api", Step::Test, Status::Passed)).unwrap();
    // Runs are listed oldest first, from the run list, not a scan.
    let ids = store.run_ids().unwrap();
    assert_eq!(ids, (0..ROUNDS).map(|i| format!("r{i}")).collect::<Vec<_>>());
    assert_eq!(store.runs().unwrap()[3].1.len(), 2);
}

#[test]
fn a_lock_has_one_holder_until_released_or_expired() {
    let store = store("locks");
    let hour = Duration::from_secs(3600);
    store.acquire_lock("deploy/app-dev", "run-1 host:1", hour).unwrap();
    store.acquire_lock("deploy/app-dev", "run-1 host:1", hour).unwrap();
    let refused = store.acquire_lock("deploy/app-dev", "run-2 host:2", hour).unwrap_err();
    assert!(matches!(&refused, Error::Locked { holder, since: Some(_), .. } if holder == "run-1 host:1"), "{refused}");
    assert!(refused.to_string().starts_with("`deploy/app-dev` is locked by run-1 host:1 since 20"), "{refused}");
    // Another lock is independent.
    store.acquire_lock("deploy/app-prod", "run-2 host:2", hour).unwrap();
    // Released by someone else: it stays held.
    store.release_lock("deploy/app-dev", "run-2 host:2").unwrap();
    assert!(matches!(store.acquire_lock("deploy/app-dev", "run-2 host:2", hour), Err(Error::Locked { .. })));
    store.release_lock("deploy/app-dev", "run-1 host:1").unwrap();
    store.acquire_lock("deploy/app-dev", "run-2 host:2", hour).unwrap();

    // Expiry: a crashed holder's lock is taken over once its ttl is past.
    store.acquire_lock("deploy/app-stg", "crashed", Duration::from_secs(1)).unwrap();
    assert!(store.acquire_lock("deploy/app-stg", "next", hour).is_err());
    std::thread::sleep(Duration::from_millis(2100));
    store.acquire_lock("deploy/app-stg", "next", hour).unwrap();
    let back = store.acquire_lock("deploy/app-stg", "crashed", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(&back, Error::Locked { holder, .. } if holder == "next"), "{back}");
    // The crashed holder's late release does not free the new holder's lock.
    store.release_lock("deploy/app-stg", "crashed").unwrap();
    assert!(store.acquire_lock("deploy/app-stg", "third", hour).is_err());
}

#[test]
fn the_last_success_is_kept_per_environment() {
    let store = store("successes");
    store.record(&rec("r1", "aaa", "api", Step::Deploy, Status::Passed)).unwrap();
    store.record(&rec("r2", "bbb", "api", Step::Deploy, Status::Passed)).unwrap();
    store.record(&rec("r3", "ccc", "api", Step::Deploy, Status::Failed)).unwrap();
    assert_eq!(store.last_success("prod").unwrap(), None);
    store.mark_success("r1", "prod").unwrap();
    store.mark_success("r1", "dev").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let mark = store.mark_success("r2", "dev").unwrap();
    assert_eq!((mark.env.as_str(), mark.commit.as_str()), ("dev", "bbb"));
    let refused = store.mark_success("r3", "prod").unwrap_err();
    assert!(refused.to_string().contains("api deploy is failed"), "{refused}");
    assert!(matches!(store.mark_success("nope", "prod"), Err(Error::UnknownRun { .. })));
    assert_eq!(store.last_success("dev").unwrap().unwrap().commit, "bbb");
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, "aaa");
}

#[test]
fn a_missing_table_is_one_error_naming_the_fix() {
    let store = DynamoStore::new(&config(), "no-such-table").unwrap();
    let error = store.check().unwrap_err();
    assert!(matches!(error, Error::NoTable { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "DynamoDB table `no-such-table` does not exist; create it with cfn/pipeline.yaml (StatusTable), or name another with --store dynamodb://TABLE, PIPELINE_STORE or `[store] dynamodb_table` in pipeline.toml"
    );
    assert!(matches!(store.run("r1"), Err(Error::NoTable { .. })));
}

/// stack-deployer calls the store for its locks from async code, on a runtime's worker:
/// the store must neither panic there nor wait on that worker (a current-thread runtime has
/// no other).
#[tokio::test(flavor = "current_thread")]
async fn the_store_works_from_inside_a_runtime() {
    let store = std::thread::spawn(|| store("in-runtime")).join().unwrap();
    store.acquire_lock("deploy/x", "me", Duration::from_secs(60)).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Test, Status::Passed)).unwrap();
    assert_eq!(store.run("r1").unwrap()[0].status, Status::Passed);
    drop(store);
}

#[test]
fn a_later_skip_is_kept_beside_a_result_and_a_skip_gives_way_to_a_result() {
    let store = store("weaker");
    let deploy = |component: &str, status: Status, note: &str| {
        let mut record = rec("r1", "abc", component, Step::Deploy, status);
        record.details.note = Some(note.into());
        record
    };
    // A failed deploy, then a preview: the failure stays, the preview is noted beside it.
    store.record(&deploy("infra", Status::Failed, "stack master: rolled back")).unwrap();
    store.record(&deploy("infra", Status::Skipped, "preview only (--no-execute)")).unwrap();
    let infra = store.run("r1").unwrap().remove(0);
    assert_eq!(infra.status, Status::Failed);
    assert_eq!(
        infra.details.note.as_deref(),
        Some("stack master: rolled back | later skipped: preview only (--no-execute)")
    );
    // The same skip again is no change; a rerun is a late writer, as any second result.
    store.record(&deploy("infra", Status::Skipped, "preview only (--no-execute)")).unwrap();
    assert_eq!(store.run("r1").unwrap().remove(0), infra);
    assert!(matches!(
        store.record(&rec("r1", "abc", "infra", Step::Deploy, Status::Running)),
        Err(Error::StepFinished { status: Status::Failed, .. })
    ));
    // A passed deploy, then a skip: still passed, and the success check reads the pass.
    store.record(&deploy("web", Status::Passed, "published")).unwrap();
    store.record(&deploy("web", Status::Skipped, "web did not change in this run")).unwrap();
    let web = store.run("r1").unwrap().into_iter().find(|r| r.component == "web").unwrap();
    assert_eq!(web.status, Status::Passed);
    // A skip first (a preview), then the real deploy: the deploy replaces it.
    store.record(&deploy("api", Status::Skipped, "preview only (--no-execute)")).unwrap();
    store.record(&deploy("api", Status::Running, "")).unwrap();
    store.record(&deploy("api", Status::Passed, "deployed")).unwrap();
    let api = store.run("r1").unwrap().into_iter().find(|r| r.component == "api").unwrap();
    assert_eq!((api.status, api.details.note.as_deref()), (Status::Passed, Some("deployed")));
}

#[test]
fn a_mark_for_a_promoted_environment_needs_its_promotion_passed() {
    let store = store("promoted-marks");
    store.record(&rec("r1", "abc", "infra", Step::Deploy, Status::Passed)).unwrap();
    store.record(&rec("r1", "abc", "web", Step::Deploy, Status::Passed)).unwrap();
    // Dev deployed only: refused for prod, and no mark is kept.
    let refused = store.mark_success_for("r1", "prod", Step::ProdDeploy).unwrap_err();
    assert!(
        matches!(&refused, Error::NotSuccessful { reason, .. } if reason == "no prod-deploy step passed"),
        "{refused}"
    );
    store.record(&rec("r1", "abc", "infra", Step::ProdDeploy, Status::Passed)).unwrap();
    let refused = store.mark_success_for("r1", "prod", Step::ProdDeploy).unwrap_err().to_string();
    assert!(refused.contains("web prod-deploy never ran, but its deploy passed"), "{refused}");
    assert_eq!(store.last_success("prod").unwrap(), None);
    store.record(&rec("r1", "abc", "web", Step::ProdDeploy, Status::Passed)).unwrap();
    assert_eq!(store.mark_success_for("r1", "prod", Step::ProdDeploy).unwrap().commit, "abc");
    assert_eq!(store.last_success("prod").unwrap().unwrap().run_id, "r1");
}

/// The store on a flaky network (test-support's fault proxy between the SDK and the
/// emulator): every third call throttled, every seventh cut after it reached the table. Eight
/// writers record 40 steps at once; each ends recorded exactly as written, and a late writer
/// of a finished step is still refused (`StepFinished`), never let through by a retry.
#[test]
fn under_throttling_and_cut_connections_no_record_is_lost_or_overwritten() {
    let table = "run-state-flaky";
    let _ = store(table);
    let proxy = test_support::FaultProxy::start(&Moto::shared().endpoint);
    let flaky = {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = runtime.block_on(async {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .test_credentials()
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(&proxy.endpoint)
                .load()
                .await
        });
        Arc::new(DynamoStore::new(&config, table).unwrap())
    };
    proxy.set(vec![
        test_support::Rule {
            matching: None,
            at: (1..400).map(|n| n * 3).collect(),
            fault: test_support::Fault::Status(503),
        },
        test_support::Rule {
            matching: None,
            at: (1..400).map(|n| n * 7).collect(),
            fault: test_support::Fault::ResetAfter,
        },
    ]);
    let components: Vec<String> = (0..40).map(|n| format!("c{n}")).collect();
    let status_of = |n: usize| if n.is_multiple_of(4) { Status::Failed } else { Status::Passed };
    std::thread::scope(|scope| {
        for writer in 0..8 {
            let (flaky, components) = (flaky.clone(), &components);
            scope.spawn(move || {
                for (n, component) in components.iter().enumerate().filter(|(n, _)| n % 8 == writer) {
                    flaky.record(&rec("flaky-run", "abc", component, Step::Test, status_of(n))).unwrap();
                }
            });
        }
    });
    let faulted = proxy.seen().iter().filter(|s| !s.ends_with("forwarded")).count();
    assert!(faulted >= 10, "the faults were felt: {:#?}", proxy.seen());
    // A late writer of a finished step, still on the flaky network.
    let late = flaky.record(&rec("flaky-run", "abc", "c1", Step::Test, Status::Failed));
    assert!(matches!(late, Err(Error::StepFinished { .. })), "{late:?}");
    proxy.clear();
    let records = store(table).run("flaky-run").unwrap();
    assert_eq!(records.len(), 40, "{records:#?}");
    for (n, component) in components.iter().enumerate() {
        let record = records.iter().find(|r| &r.component == component).unwrap();
        assert_eq!(record.status, status_of(n), "{record:?}");
    }
}
