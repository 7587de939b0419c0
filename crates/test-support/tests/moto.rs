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

/// The harness's patches to moto (`src/moto_harness.py`): a stack made through a change set
/// keeps its outputs, `!GetAtt Nested.Outputs.X` resolves, and a CloudFront distribution and an
/// HTTP API made by a template exist in those services' APIs. Without them the sample monorepo's
/// master stack deploys with no outputs and the publish stage finds no bucket.
#[tokio::test]
async fn a_change_set_stack_with_nested_outputs_and_a_distribution_has_its_outputs() {
    use aws_sdk_cloudformation::types::{ChangeSetType, ExecutionStatus};
    let moto = Moto::shared();
    let config = moto.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let cloudfront = aws_sdk_cloudfront::Client::new(&config);

    let bucket = "test-support-harness-templates";
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let child = r#"{"Resources": {"Site": {"Type": "AWS::S3::Bucket"},
        "Cdn": {"Type": "AWS::CloudFront::Distribution", "Properties": {"DistributionConfig": {
            "Enabled": true, "Origins": [{"Id": "site", "DomainName": {"Fn::GetAtt": ["Site", "RegionalDomainName"]},
            "S3OriginConfig": {}}], "DefaultCacheBehavior": {"TargetOriginId": "site", "ViewerProtocolPolicy": "redirect-to-https"}}}},
        "Api": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"Name": "harness-api", "ProtocolType": "HTTP"}}},
      "Outputs": {"DistributionId": {"Value": {"Ref": "Cdn"}}, "Domain": {"Value": {"Fn::GetAtt": ["Cdn", "DomainName"]}},
        "Endpoint": {"Value": {"Fn::GetAtt": ["Api", "ApiEndpoint"]}}}}"#;
    s3.put_object().bucket(bucket).key("child.json").body(child.as_bytes().to_vec().into()).send().await.unwrap();
    let parent = format!(
        r#"{{"Resources": {{"Child": {{"Type": "AWS::CloudFormation::Stack",
            "Properties": {{"TemplateURL": "https://{bucket}.s3.amazonaws.com/child.json"}}}}}},
          "Outputs": {{"DistributionId": {{"Value": {{"Fn::GetAtt": ["Child", "Outputs.DistributionId"]}}}},
            "Domain": {{"Value": {{"Fn::GetAtt": ["Child", "Outputs.Domain"]}}}},
            "Endpoint": {{"Value": {{"Fn::GetAtt": ["Child", "Outputs.Endpoint"]}}}}}}}}"#
    );
    let created = cfn
        .create_change_set()
        .stack_name("test-support-harness")
        .change_set_name("first")
        .change_set_type(ChangeSetType::Create)
        .template_body(parent)
        .send()
        .await
        .unwrap();
    let change_set = created.id().unwrap();
    for _ in 0..100 {
        let described = cfn.describe_change_set().change_set_name(change_set).send().await.unwrap();
        if described.execution_status() == Some(&ExecutionStatus::Available) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cfn.execute_change_set().change_set_name(change_set).send().await.unwrap();

    let stacks = cfn.describe_stacks().stack_name("test-support-harness").send().await.unwrap();
    let outputs: std::collections::BTreeMap<&str, &str> =
        stacks.stacks()[0].outputs().iter().map(|o| (o.output_key().unwrap(), o.output_value().unwrap())).collect();
    assert_eq!(outputs.keys().copied().collect::<Vec<_>>(), ["DistributionId", "Domain", "Endpoint"]);
    let distribution = cloudfront.get_distribution().id(outputs["DistributionId"]).send().await.unwrap();
    assert_eq!(distribution.distribution().unwrap().domain_name(), outputs["Domain"]);
    assert!(outputs["Endpoint"].starts_with("https://") && outputs["Endpoint"].contains(".execute-api."));
}
