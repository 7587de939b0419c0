//! Pruning the DynamoDB store (the emulator): old runs' items are deleted, the run of an
//! environment's latest success and a run still running are kept.

use std::time::{Duration, SystemTime};

use run_state::{DynamoStore, Prune, Status, Step, StepRecord, Store};
use test_support::Moto;

#[test]
fn a_prune_deletes_old_runs_items_and_keeps_the_latest_success_and_running_runs() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = runtime.block_on(Moto::shared().sdk_config());
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("prune-{}", std::process::id());
    runtime.block_on(DynamoStore::create_table(&client, &table)).unwrap();
    let store = DynamoStore::new(&config, &table).unwrap();
    for run in ["r1", "r2", "r3", "r4", "r5"] {
        store.record(&StepRecord::new(run, "abc", "api", Step::Test, Status::Passed)).unwrap();
        // Each run listed after the one before (created is in milliseconds).
        std::thread::sleep(Duration::from_millis(5));
    }
    store.record(&StepRecord::new("r1", "abc", "api", Step::Deploy, Status::Passed)).unwrap();
    store.mark_success("r1", "dev").unwrap();
    let mut running = StepRecord::new("r3", "abc", "web", Step::Build, Status::Running);
    running.details.set_runner_to_this_process();
    store.record(&running).unwrap();

    let pruned =
        store.prune(Prune { keep_runs: Some(1), older_than: None }, SystemTime::now(), &["dev".into()]).unwrap();
    assert_eq!(pruned.removed, ["r2", "r4"]);
    assert_eq!(
        pruned.protected,
        [
            ("r1".to_string(), "the latest success of an environment".to_string()),
            ("r3".to_string(), "a step is still running".to_string())
        ]
    );
    assert_eq!(store.run_ids().unwrap(), ["r1", "r3", "r5"]);
    assert!(store.run("r2").unwrap().is_empty());
    assert_eq!(store.run("r3").unwrap().len(), 2);
    assert_eq!(store.last_success("dev").unwrap().unwrap().run_id, "r1");
}
