//! Release records in the DynamoDB store against moto, through the real SDK client: a run's
//! parts join its release, another environment's releases are its own, oldest first.
#![cfg(feature = "dynamodb")]

use run_state::DynamoStore;
use run_state::release::{ReleaseStore, SiteRelease, contribute};
use test_support::Moto;

fn store(name: &str) -> DynamoStore {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = runtime.block_on(Moto::shared().sdk_config());
    let client = aws_sdk_dynamodb::Client::new(&config);
    runtime.block_on(async { DynamoStore::create_table(&client, name).await.unwrap() });
    DynamoStore::new(&config, name).unwrap()
}

#[test]
fn a_runs_parts_join_its_release_and_releases_are_kept_per_environment_in_order() {
    let store = store("releases-table");
    assert!(store.releases("dev").unwrap().is_empty());
    let site = |id: &str| SiteRelease {
        component: "web".into(),
        bucket: "site".into(),
        prefix: String::new(),
        release_id: id.into(),
        manifest_key: format!(".publish/kept/releases/{id}.json"),
        distribution: None,
        run_id: id.into(),
    };
    contribute(&store, "dev", "20260101T000000000Z-aaaa", "c1", |r| r.artifact_bucket = Some("artifacts".into()))
        .unwrap();
    contribute(&store, "dev", "20260101T000000000Z-aaaa", "c1", |r| r.site = Some(site("r1"))).unwrap();
    contribute(&store, "prod", "20260101T000000000Z-aaaa", "c1", |_| {}).unwrap();
    let second = contribute(&store, "dev", "20260102T000000000Z-bbbb", "c2", |_| {}).unwrap();
    assert_eq!(second.site, Some(site("r1")), "the site carried over from the last release");
    let dev = store.releases("dev").unwrap();
    assert_eq!(dev.iter().map(|r| r.commit.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
    assert_eq!(dev[0].artifact_bucket.as_deref(), Some("artifacts"), "both parts of the first run");
    assert_eq!(dev[0].site, Some(site("r1")));
    assert_eq!(store.releases("prod").unwrap().len(), 1);
    assert!(contribute(&store, "../etc", "r", "c", |_| {}).is_err(), "an environment becomes a key: checked");
}
