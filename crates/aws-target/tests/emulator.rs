//! Against the emulator (moto on loopback): the identity STS reports, path-style S3, and the
//! request counter seeing every call.

use aws_config::BehaviorVersion;
use aws_target::{ErrorKind, RequestCounter, Target};
use test_support::Moto;

async fn config(moto: &Moto) -> aws_config::SdkConfig {
    let target =
        Target { endpoint_url: Some(moto.endpoint.clone()), region: Some("us-east-1".into()), ..Target::default() };
    // Fixed credentials: the test must not depend on the machine's AWS profile.
    aws_target::load_with(&target, aws_config::defaults(BehaviorVersion::latest()).test_credentials()).await.unwrap()
}

#[tokio::test]
async fn identity_names_the_account_and_region() {
    let moto = Moto::shared();
    let who = aws_target::identity(&config(moto).await).await.unwrap();
    assert_eq!(who.account.len(), 12, "{who}");
    assert_eq!(who.region, "us-east-1");
    assert!(who.to_string().contains(&moto.endpoint), "{who}");
}

#[tokio::test]
async fn s3_is_path_style_and_counted() {
    let moto = Moto::shared();
    let counter = RequestCounter::default();
    let s3 = aws_target::s3(&config(moto).await, Some(&counter));
    s3.create_bucket().bucket("aws-target-counted").send().await.unwrap();
    s3.put_object().bucket("aws-target-counted").key("a").body(b"x".to_vec().into()).send().await.unwrap();
    let missing = s3.head_object().bucket("aws-target-counted").key("nope").send().await.unwrap_err();
    assert_eq!(ErrorKind::of(&missing), ErrorKind::NotFound);
    let counts = counter.snapshot();
    assert_eq!(counts.get("S3.CreateBucket"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("S3.PutObject"), Some(&1), "{counts:?}");
    assert_eq!(counter.count(|op| op.starts_with("Head")), 1);
    let gone = s3.get_object().bucket("aws-target-no-such-bucket").key("a").send().await.unwrap_err();
    assert_eq!(ErrorKind::of(&gone), ErrorKind::NotFound);
}

#[tokio::test]
async fn bad_region_and_endpoint_are_named() {
    let bad = Target { region: Some("us-east1".into()), ..Target::default() };
    let err = aws_target::load(&bad).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "region `us-east1` is not a region name (like `us-east-1`); fix --region, AWS_REGION or the profile"
    );
    let bad =
        Target { endpoint_url: Some("localhost:5000".into()), region: Some("us-east-1".into()), ..Target::default() };
    assert!(aws_target::load(&bad).await.unwrap_err().to_string().contains("--endpoint-url"));
}
