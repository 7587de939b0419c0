//! Locks in the DynamoDB store (the emulator): a lock whose process is provably dead on this
//! host is taken over at once, well inside its ttl; a live holder's, or one on another host,
//! is not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use run_state::{DynamoStore, Error, Store};
use test_support::Moto;

#[test]
fn a_lock_whose_process_died_is_taken_over_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = runtime.block_on(Moto::shared().sdk_config());
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("locks-dead-{}", std::process::id());
    runtime.block_on(DynamoStore::create_table(&client, &table)).unwrap();
    let store = DynamoStore::new(&config, &table).unwrap();

    let (this, identity) = run_state::this_process().expect("/proc is readable here");
    let host = this.rsplit_once(':').unwrap().0.to_string();
    let namespace = identity.split_once('/').unwrap().0.to_string();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();

    // A lock item as a deployer writes it, held for two hours by `process`.
    let put = |process: String, process_identity: String| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let expires = now + 7200 * 1000;
        runtime
            .block_on(
                client
                    .put_item()
                    .table_name(&table)
                    .item("pk", AttributeValue::S("lock#deploy/app-dev".into()))
                    .item("sk", AttributeValue::S("lock".into()))
                    .item("holder", AttributeValue::S("run-1 (killed)".into()))
                    .item("since", AttributeValue::N(now.to_string()))
                    .item("ttl_secs", AttributeValue::N("7200".into()))
                    .item("expires_at", AttributeValue::N((expires / 1000).to_string()))
                    .item("expires_ms", AttributeValue::N(expires.to_string()))
                    .item("process", AttributeValue::S(process))
                    .item("process_identity", AttributeValue::S(process_identity))
                    .send(),
            )
            .unwrap();
    };
    let hour = Duration::from_secs(3600);

    put(this.clone(), identity.clone());
    let refused = store.acquire_lock("deploy/app-dev", "run-2", hour).unwrap_err();
    assert!(matches!(&refused, Error::Locked { holder, .. } if holder == "run-1 (killed)"), "{refused}");

    put(format!("elsewhere:{dead_pid}"), format!("{namespace}/1"));
    assert!(store.acquire_lock("deploy/app-dev", "run-2", hour).is_err(), "another host cannot be checked");

    put(format!("{host}:{dead_pid}"), format!("{namespace}/1"));
    store.acquire_lock("deploy/app-dev", "run-2", hour).unwrap();
    let refused = store.acquire_lock("deploy/app-dev", "run-3", hour).unwrap_err();
    assert!(matches!(&refused, Error::Locked { holder, .. } if holder == "run-2"), "{refused}");
}
