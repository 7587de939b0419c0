//! W3037: the actions of IAM policies exist in AWS's catalogue (the one the pinned cfn-lint
//! ships, embedded in [`crate::schemas`]); `*` and `?` in an action match as cfn-lint matches
//! them. The policies are the ones cfn-lint reads: identity policies (IAM roles, users and
//! groups' `Policies`, managed and inline policies, SSO permission sets), resource policies
//! (buckets, queues, topics, KMS keys, OpenSearch domains, ECR repositories) and roles' trust
//! policies. Like cfn-lint, not with the SAM transform; a policy written as a JSON string, and
//! actions that are intrinsic functions, are not checked.

use super::{Entry, IAM_ACTION_UNKNOWN, Names, Out, entries};
use crate::node::{Node, Value};
use crate::schemas::Schemas;

/// Where each resource type keeps its policies: a property, or `Policies.*.PolicyDocument`.
const POLICY_PROPERTIES: &[(&str, &str)] = &[
    ("AWS::IAM::Group", "Policies"),
    ("AWS::IAM::Role", "Policies"),
    ("AWS::IAM::User", "Policies"),
    ("AWS::IAM::Role", "AssumeRolePolicyDocument"),
    ("AWS::IAM::ManagedPolicy", "PolicyDocument"),
    ("AWS::IAM::Policy", "PolicyDocument"),
    ("AWS::IAM::UserPolicy", "PolicyDocument"),
    ("AWS::IAM::RolePolicy", "PolicyDocument"),
    ("AWS::IAM::GroupPolicy", "PolicyDocument"),
    ("AWS::SSO::PermissionSet", "InlinePolicy"),
    ("AWS::KMS::Key", "KeyPolicy"),
    ("AWS::OpenSearchService::Domain", "AccessPolicies"),
    ("AWS::S3::BucketPolicy", "PolicyDocument"),
    ("AWS::SNS::TopicPolicy", "PolicyDocument"),
    ("AWS::SQS::QueuePolicy", "PolicyDocument"),
    ("AWS::ECR::Repository", "RepositoryPolicyText"),
];

/// Resource policies that only take their own service's actions.
const ONLY_SERVICE: &[(&str, &str)] =
    &[("AWS::S3::BucketPolicy", "s3"), ("AWS::SQS::QueuePolicy", "sqs"), ("AWS::SNS::TopicPolicy", "sns")];

pub(super) fn actions(root: &Node, names: &Names<'_>, out: &mut Out<'_>) {
    if names.transforms.sam {
        return;
    }
    for Entry { node: resource, .. } in entries(root.get("Resources"), names.transforms) {
        let Some(resource_type) = resource.get("Type").and_then(Node::as_str) else { continue };
        let Some(properties) = resource.get("Properties") else { continue };
        for (_, property) in POLICY_PROPERTIES.iter().filter(|(t, _)| *t == resource_type) {
            let Some(value) = properties.get(property) else { continue };
            let documents: Vec<&Node> = if *property == "Policies" {
                value.items().iter().filter_map(|p| p.get("PolicyDocument")).collect()
            } else {
                vec![value]
            };
            let only = ONLY_SERVICE.iter().find(|(t, _)| *t == resource_type).map(|(_, s)| *s);
            for document in documents {
                let Some(statements) = document.get("Statement") else { continue };
                let statements: Vec<&Node> = match &statements.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![statements],
                };
                for statement in statements {
                    for field in ["Action", "NotAction"] {
                        if let (Some(key), Some(action)) = (statement.key(field), statement.get(field)) {
                            // cfn-lint points at the key, for a list too.
                            let listed: Vec<(&Node, crate::node::Pos)> = match &action.value {
                                Value::Seq(items) => items.iter().map(|i| (i, key.pos)).collect(),
                                _ => vec![(action, key.pos)],
                            };
                            check(&listed, only, out);
                        }
                    }
                }
            }
        }
    }
}

fn check(actions: &[(&Node, crate::node::Pos)], only: Option<&str>, out: &mut Out<'_>) {
    let schemas = Schemas::get();
    for (node, pos) in actions {
        let Value::String(action) = &node.value else { continue };
        if action == "*" {
            continue;
        }
        let Some((service, permission)) = action.split_once(':') else {
            out.add(IAM_ACTION_UNKNOWN, *pos, format!("'{action}' is not a valid action: write service:action or '*'"));
            // Like cfn-lint: the rest of this Action is not looked at.
            return;
        };
        let (service, permission) = (service.to_lowercase(), permission.to_lowercase());
        if let Some(only) = only
            && service != only
        {
            out.add(
                IAM_ACTION_UNKNOWN,
                *pos,
                format!("'{service}' is not one of ['{only}']: this policy takes only {only} actions"),
            );
        }
        match schemas.service_actions(&service) {
            None => out.add(
                IAM_ACTION_UNKNOWN,
                *pos,
                format!("'{service}' is not a service of AWS's IAM catalogue: check the prefix of `{action}`"),
            ),
            Some(known) => {
                let exists = if permission.contains(['*', '?']) {
                    known.iter().any(|k| glob(permission.as_bytes(), k.as_bytes()))
                } else {
                    known.binary_search(&permission).is_ok()
                };
                if !exists {
                    out.add(
                        IAM_ACTION_UNKNOWN,
                        *pos,
                        format!("`{action}` is not an action of {service} in AWS's IAM catalogue: check its spelling"),
                    );
                }
            }
        }
    }
}

/// `*` any run of characters, `?` any one character, the rest literal.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..])),
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn wildcards_match_as_cfn_lint_matches_them() {
        assert!(glob(b"get*", b"getobject"));
        assert!(glob(b"?utobject", b"putobject"));
        assert!(glob(b"*", b"anything"));
        assert!(!glob(b"get*", b"putobject"));
        assert!(!glob(b"get?", b"getobject"));
    }
}
