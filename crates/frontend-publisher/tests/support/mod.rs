//! What the publisher's test binaries share.

/// Every key in `bucket`.
#[allow(dead_code)]
pub async fn keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
}

/// A distribution in front of `bucket`, made in `cloudfront`'s account (moto's).
#[allow(dead_code)]
pub async fn distribution(cloudfront: &aws_sdk_cloudfront::Client, bucket: &str) -> String {
    use aws_sdk_cloudfront::types::{
        DefaultCacheBehavior, DistributionConfig, Origin, Origins, S3OriginConfig, ViewerProtocolPolicy,
    };
    let origin = Origin::builder()
        .id("site")
        .domain_name(format!("{bucket}.s3.amazonaws.com"))
        .s3_origin_config(S3OriginConfig::builder().origin_access_identity("").build())
        .build()
        .unwrap();
    let config = DistributionConfig::builder()
        .caller_reference(bucket)
        .comment("frontend-publisher test")
        .enabled(true)
        .origins(Origins::builder().quantity(1).items(origin).build().unwrap())
        .default_cache_behavior(
            DefaultCacheBehavior::builder()
                .target_origin_id("site")
                .viewer_protocol_policy(ViewerProtocolPolicy::RedirectToHttps)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let out = cloudfront.create_distribution().distribution_config(config).send().await.unwrap();
    out.distribution().unwrap().id().to_owned()
}
