//! Whether a stack's earlier template can take back what was removed since: a resource the
//! release's template has and the stack no longer has is created again by the rollback's change
//! set. That is refused before anything changes when it cannot give back what was there:
//! a resource kept by its `DeletionPolicy` (`Retain`, `RetainExceptOnCreate`, `Snapshot`) still
//! exists outside the stack (created again under a fixed name it fails half-way, under a new
//! name the stack points at an empty one), and a stateful resource deleted with its data (a
//! table, a bucket, a database, a file system, a stream) would come back empty.
//!
//! What is not detectable from a release: a resource replaced in place since (same logical id,
//! a new physical one) goes back by another replacement, as CloudFormation plans it.

use std::collections::BTreeSet;

use crate::Error;

/// Resource types whose data goes with them when deleted.
const STATEFUL: &[&str] = &[
    "AWS::DynamoDB::Table",
    "AWS::DynamoDB::GlobalTable",
    "AWS::S3::Bucket",
    "AWS::RDS::DBInstance",
    "AWS::RDS::DBCluster",
    "AWS::EFS::FileSystem",
    "AWS::Kinesis::Stream",
    "AWS::ElastiCache::ReplicationGroup",
    "AWS::OpenSearchService::Domain",
    "AWS::Elasticsearch::Domain",
    "AWS::DocDB::DBCluster",
    "AWS::Neptune::DBCluster",
    "AWS::Cognito::UserPool",
    "AWS::SecretsManager::Secret",
    "AWS::KMS::Key",
];

/// A resource of the earlier template the rollback cannot take back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Its logical id.
    pub logical_id: String,
    /// Its type.
    pub kind: String,
    /// Why not.
    pub why: String,
}

/// The resources of `template` (the release's, as JSON) the stack no longer has (`present`:
/// its logical ids now) that a change set cannot give back (pure). A resource with a
/// `Condition` is left out: its absence may be the condition's doing.
pub(crate) fn removed(template: &serde_json::Value, present: &BTreeSet<String>) -> Vec<Removed> {
    let Some(resources) = template.get("Resources").and_then(serde_json::Value::as_object) else { return Vec::new() };
    let mut out = Vec::new();
    for (logical_id, resource) in resources {
        if present.contains(logical_id) || resource.get("Condition").is_some() {
            continue;
        }
        let kind = resource.get("Type").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        let policy = resource.get("DeletionPolicy").and_then(serde_json::Value::as_str);
        let why = match policy {
            Some(policy @ ("Retain" | "RetainExceptOnCreate" | "Snapshot")) => format!(
                "was removed from the stack since and kept by its DeletionPolicy {policy}: the earlier template would create it again beside the kept one; import the kept resource into the stack (or delete it), then roll back"
            ),
            _ if STATEFUL.contains(&kind.as_str()) => {
                "was deleted with its data since: the earlier template would create it again empty; restore it from a backup (or deploy a fix forward) instead".to_string()
            }
            _ => continue,
        };
        out.push(Removed { logical_id: logical_id.clone(), kind, why });
    }
    out
}

/// The stack's logical ids now (every page of `ListStackResources`).
pub(crate) async fn present(cf: &aws_sdk_cloudformation::Client, stack: &str) -> Result<BTreeSet<String>, Error> {
    let mut ids = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let out =
            cf.list_stack_resources().stack_name(stack).set_next_token(token).send().await.map_err(|e| Error::Aws {
                operation: "ListStackResources",
                target: stack.to_string(),
                kind: aws_target::ErrorKind::of(&e),
                source: Box::new(e),
            })?;
        ids.extend(out.stack_resource_summaries().iter().filter_map(|s| s.logical_resource_id().map(str::to_owned)));
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(ids);
        }
    }
}

/// Refuses (exit 3, [`Error::CannotTakeBack`]) a stack whose release template has a resource
/// [`removed`] says cannot come back; `Ok(Some(warning))` when the body is not JSON (the
/// deployer uploads JSON; another body is not read, and the rollback says so).
pub(crate) async fn check(
    cf: &aws_sdk_cloudformation::Client,
    stack: &str,
    release: &str,
    body: &[u8],
) -> Result<Option<String>, Error> {
    let Ok(template) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(Some(format!(
            "stack {stack}: release {release}'s template is not JSON, so resources removed since were not checked"
        )));
    };
    let found = removed(&template, &present(cf, stack).await?);
    match found.into_iter().next() {
        None => Ok(None),
        Some(Removed { logical_id, kind, why }) => Err(Error::CannotTakeBack {
            stack: stack.to_string(),
            release: release.to_string(),
            resource: format!("{logical_id} ({kind})"),
            why,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_or_stateful_resource_removed_since_cannot_be_taken_back() {
        let template = serde_json::json!({"Resources": {
            "Kept": {"Type": "AWS::SNS::Topic", "DeletionPolicy": "Retain"},
            "Table": {"Type": "AWS::DynamoDB::Table"},
            "Queue": {"Type": "AWS::SNS::Topic"},
            "Maybe": {"Type": "AWS::S3::Bucket", "Condition": "IsProd"},
            "Still": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain"},
        }});
        let present = BTreeSet::from(["Still".to_string()]);
        let found: Vec<(String, bool)> = removed(&template, &present)
            .into_iter()
            .map(|r| (r.logical_id, r.why.contains("DeletionPolicy")))
            .collect();
        assert_eq!(found, [("Kept".to_string(), true), ("Table".to_string(), false)]);
        let all = BTreeSet::from(["Kept".into(), "Table".into(), "Queue".into(), "Still".into()]);
        assert!(removed(&template, &all).is_empty());
    }

    /// In the emulator: a table kept by `DeletionPolicy: Retain` and removed by a later update
    /// refuses the rollback to the template that had it, naming it, with exit 3.
    #[tokio::test]
    async fn a_retained_table_removed_since_refuses_the_rollback_in_the_emulator() {
        let moto = test_support::Moto::shared();
        let cf = aws_target::cloudformation(&moto.sdk_config().await, None);
        let stack = format!("takeback-{}", std::process::id());
        let table = serde_json::json!({
            "Type": "AWS::DynamoDB::Table",
            "DeletionPolicy": "Retain",
            "Properties": {
                "TableName": format!("{stack}-table"),
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            },
        });
        let topic = serde_json::json!({"Type": "AWS::SNS::Topic"});
        let release1 = serde_json::json!({"Resources": {"Table": table, "Topic": topic}}).to_string();
        let release2 = serde_json::json!({"Resources": {"Topic": topic}}).to_string();
        cf.create_stack().stack_name(&stack).template_body(&release1).send().await.unwrap();
        assert_eq!(check(&cf, &stack, "r1", release1.as_bytes()).await.unwrap(), None);
        cf.update_stack().stack_name(&stack).template_body(&release2).send().await.unwrap();
        let refused = check(&cf, &stack, "r1", release1.as_bytes()).await.unwrap_err();
        assert_eq!(refused.exit_code(), 3);
        assert!(
            refused.to_string().starts_with(&format!(
                "stack {stack} cannot go back to release r1: Table (AWS::DynamoDB::Table) was removed from the stack since and kept by its DeletionPolicy Retain"
            )),
            "{refused}"
        );
        let warned = check(&cf, &stack, "r1", b"Resources: {}").await.unwrap();
        assert!(warned.is_some_and(|w| w.contains("not JSON")));
    }
}
