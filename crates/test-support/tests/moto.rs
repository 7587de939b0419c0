//! The emulator harness works end to end: a real SDK client talks to the
//! per-binary moto server over loopback.

use test_support::Moto;

#[tokio::test]
async fn s3_round_trip_through_the_sdk() {
    let moto = Moto::shared();
    let config = moto.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let bucket = "test-support-smoke";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    s3.put_object().bucket(bucket).key("a/b.txt").body(b"hello".to_vec().into()).send().await.unwrap();
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b.txt"]);
    let body = s3.get_object().bucket(bucket).key("a/b.txt").send().await.unwrap().body.collect().await.unwrap();
    assert_eq!(body.into_bytes().as_ref(), b"hello");
}
