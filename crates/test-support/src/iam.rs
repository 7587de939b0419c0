//! A small IAM policy evaluator: whether a role's policies (and its permissions boundary) allow
//! one call, as AWS's policy evaluation logic decides for an identity in its own account.
//!
//! What it evaluates: `Allow`/`Deny` statements; `Action`/`NotAction` with `*` and `?`
//! (case-insensitive); `Resource`/`NotResource` with `*` and `?` (case-sensitive); an explicit
//! deny in any policy or the boundary wins; without an allow in the identity policies the call is
//! implicitly denied; with a boundary it must allow the call too. Conditions: the string, ARN,
//! `Bool` and `Null` operators, with the `ForAllValues:`/`ForAnyValue:` set prefixes and the
//! `IfExists` suffix, keys matched case-insensitively; a key the request's context does not carry
//! is not guessed: the statement's verdict is then *unevaluated* and the key listed
//! ([`Verdict::unevaluated`]), an allow counted as an allow and a deny not counted (so the caller
//! sees what was assumed). Not modelled: resource-based policies, SCPs, session policies, policy
//! variables, numeric/date/IP operators (reported as unevaluated).
//!
//! Chosen over the `iam-rs` crate: it declares itself not yet externally verified, and it has no
//! way to say "this condition's key is unknown here" apart from "false", which the footprint
//! test must list rather than decide.

use std::collections::BTreeMap;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `"Effect": "Allow"`.
    Allow,
    /// `"Effect": "Deny"`.
    Deny,
}

/// One condition: `{"OPERATOR": {"KEY": [VALUES]}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `StringEquals`, `ForAllValues:StringLike`, `ArnLikeIfExists` …
    pub operator: String,
    /// `dynamodb:LeadingKeys`.
    pub key: String,
    /// The policy's values (any of them may match).
    pub values: Vec<String>,
}

/// One statement, its strings already substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its `Sid` (or a name the caller gives it).
    pub sid: String,
    /// Allow or deny.
    pub effect: Effect,
    /// `Action` (empty when the statement uses `NotAction`).
    pub actions: Vec<String>,
    /// `NotAction`.
    pub not_actions: Vec<String>,
    /// `Resource` (empty when the statement uses `NotResource`).
    pub resources: Vec<String>,
    /// `NotResource`.
    pub not_resources: Vec<String>,
    /// Every condition (all must hold).
    pub conditions: Vec<Condition>,
}

/// One call: the action, the resource ARN, the condition keys the request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `s3:GetObject`.
    pub action: String,
    /// `arn:aws:s3:::bucket/key`.
    pub resource: String,
    /// Condition keys (lower- or mixed-case) and their values.
    pub context: BTreeMap<String, Vec<String>>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the statements named.
    Allowed(Vec<String>),
    /// Denied by the statement named.
    ExplicitDeny(String),
    /// No identity policy allows it.
    ImplicitDeny,
    /// The identity policies allow it; the boundary does not.
    OutsideBoundary,
}

/// The decision and what it assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allowed or why not.
    pub decision: Decision,
    /// `SID: OPERATOR KEY` of each condition whose key the request did not carry.
    pub unevaluated: Vec<String>,
}

impl Verdict {
    /// Whether the call is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self.decision, Decision::Allowed(_))
    }
}

/// `*` any run of characters, `?` one character; the rest literal.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// How a statement meets a request.
#[derive(Debug, PartialEq, Eq)]
enum Applies {
    No,
    Yes,
    /// Action and resource match; these conditions could not be decided.
    Unknown(Vec<String>),
}

fn matches_action(statement: &Statement, action: &str) -> bool {
    let hit = |list: &[String]| list.iter().any(|p| wildcard(&p.to_ascii_lowercase(), &action.to_ascii_lowercase()));
    if statement.not_actions.is_empty() { hit(&statement.actions) } else { !hit(&statement.not_actions) }
}

fn matches_resource(statement: &Statement, resource: &str) -> bool {
    let hit = |list: &[String]| list.iter().any(|p| wildcard(p, resource));
    if statement.not_resources.is_empty() { hit(&statement.resources) } else { !hit(&statement.not_resources) }
}

/// One condition: `Some(holds)`, or `None` when its key is not in the context (and the operator
/// needs it).
fn condition_holds(condition: &Condition, context: &BTreeMap<String, Vec<String>>) -> Option<bool> {
    let found = context.iter().find(|(k, _)| k.eq_ignore_ascii_case(&condition.key)).map(|(_, v)| v.as_slice());
    let (set, operator) = match condition.operator.split_once(':') {
        Some((set, op)) => (Some(set), op),
        None => (None, condition.operator.as_str()),
    };
    let (operator, if_exists) = match operator.strip_suffix("IfExists") {
        Some(op) => (op, true),
        None => (operator, false),
    };
    if operator == "Null" {
        let absent = found.is_none_or(<[String]>::is_empty);
        return Some(condition.values.iter().any(|v| v.eq_ignore_ascii_case(&absent.to_string())));
    }
    let values = match found {
        Some(values) => values,
        None if if_exists || set == Some("ForAllValues") => return Some(true),
        None if set == Some("ForAnyValue") => return Some(false),
        None => return None,
    };
    let (negated, base) = match operator.split_once("Not") {
        Some((head, tail)) if !head.is_empty() => (true, format!("{head}{tail}")),
        _ => (false, operator.to_owned()),
    };
    let one = |value: &str| -> Option<bool> {
        let any = |f: &dyn Fn(&str) -> bool| condition.values.iter().any(|p| f(p));
        let hit = match base.as_str() {
            "StringEquals" | "ArnEquals" => any(&|p| p == value),
            "StringEqualsIgnoreCase" => any(&|p| p.eq_ignore_ascii_case(value)),
            "StringLike" | "ArnLike" => any(&|p| wildcard(p, value)),
            "Bool" => any(&|p| p.eq_ignore_ascii_case(value)),
            _ => return None,
        };
        Some(hit != negated)
    };
    let results: Option<Vec<bool>> = values.iter().map(|v| one(v)).collect();
    let results = results?;
    Some(match set {
        Some("ForAllValues") => results.iter().all(|r| *r),
        _ => results.iter().any(|r| *r),
    })
}

fn applies(statement: &Statement, request: &Request) -> Applies {
    if !matches_action(statement, &request.action) || !matches_resource(statement, &request.resource) {
        return Applies::No;
    }
    let mut unknown = Vec::new();
    for condition in &statement.conditions {
        match condition_holds(condition, &request.context) {
            Some(true) => {}
            Some(false) => return Applies::No,
            None => unknown.push(format!("{}: {} {}", statement.sid, condition.operator, condition.key)),
        }
    }
    if unknown.is_empty() { Applies::Yes } else { Applies::Unknown(unknown) }
}

/// Whether `identity` (every statement of the role's policies) and its `boundary` allow the call.
pub fn evaluate(identity: &[Statement], boundary: Option<&[Statement]>, request: &Request) -> Verdict {
    let mut unevaluated = Vec::new();
    let all = identity.iter().chain(boundary.into_iter().flatten());
    for statement in all.filter(|s| s.effect == Effect::Deny) {
        match applies(statement, request) {
            Applies::Yes => {
                return Verdict { decision: Decision::ExplicitDeny(statement.sid.clone()), unevaluated };
            }
            Applies::Unknown(keys) => unevaluated.extend(keys),
            Applies::No => {}
        }
    }
    let mut allowed_by = |statements: &[Statement]| {
        let mut sids = Vec::new();
        for statement in statements.iter().filter(|s| s.effect == Effect::Allow) {
            match applies(statement, request) {
                Applies::Yes => sids.push(statement.sid.clone()),
                Applies::Unknown(keys) => {
                    unevaluated.extend(keys);
                    sids.push(statement.sid.clone());
                }
                Applies::No => {}
            }
        }
        sids
    };
    let sids = allowed_by(identity);
    let decision = if sids.is_empty() {
        Decision::ImplicitDeny
    } else if boundary.is_some_and(|b| allowed_by(b).is_empty()) {
        Decision::OutsideBoundary
    } else {
        Decision::Allowed(sids)
    };
    Verdict { decision, unevaluated }
}

#[cfg(test)]
mod tests {
    //! The examples of AWS's IAM User Guide ("Policy evaluation logic", "Permissions boundaries
    //! for IAM entities", "Condition operators", "Multivalued context keys", "NotAction",
    //! "Amazon DynamoDB: Allows access to specific items") as this evaluator decides them.
    use super::*;

    fn statement(effect: Effect, actions: &[&str], resources: &[&str]) -> Statement {
        Statement {
            sid: format!("{effect:?}"),
            effect,
            actions: actions.iter().map(|s| s.to_string()).collect(),
            not_actions: Vec::new(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            not_resources: Vec::new(),
            conditions: Vec::new(),
        }
    }

    fn request(action: &str, resource: &str, context: &[(&str, &[&str])]) -> Request {
        Request {
            action: action.into(),
            resource: resource.into(),
            context: context.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect(),
        }
    }

    fn condition(operator: &str, key: &str, values: &[&str]) -> Condition {
        Condition { operator: operator.into(), key: key.into(), values: values.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn wildcards_span_any_run_and_one_character() {
        assert!(wildcard("arn:aws:s3:::amzn-s3-demo-bucket/*", "arn:aws:s3:::amzn-s3-demo-bucket/a/b.txt"));
        assert!(!wildcard("arn:aws:s3:::amzn-s3-demo-bucket/*", "arn:aws:s3:::amzn-s3-demo-bucket"));
        assert!(wildcard(
            "arn:aws:s3:::amzn-s3-demo-bucket/*/Toolkit/*",
            "arn:aws:s3:::amzn-s3-demo-bucket/p/Toolkit/x"
        ));
        assert!(
            wildcard("s3:Get*", "s3:GetObjectVersion") && wildcard("ec2:Describe?nstances", "ec2:DescribeInstances")
        );
        assert!(!wildcard("s3:Get?", "s3:Get") && wildcard("*", ""));
    }

    #[test]
    fn an_explicit_deny_overrides_any_allow_and_nothing_allowed_is_denied() {
        // "An explicit deny in any policy overrides any allows."
        let policies =
            [statement(Effect::Allow, &["s3:*"], &["*"]), statement(Effect::Deny, &["s3:DeleteObject"], &["*"])];
        let delete = evaluate(&policies, None, &request("s3:DeleteObject", "arn:aws:s3:::b/k", &[]));
        assert_eq!(delete.decision, Decision::ExplicitDeny("Deny".into()));
        assert!(evaluate(&policies, None, &request("s3:GetObject", "arn:aws:s3:::b/k", &[])).allowed());
        // "By default, all requests are implicitly denied."
        let ec2 = evaluate(&policies, None, &request("ec2:RunInstances", "*", &[]));
        assert_eq!(ec2.decision, Decision::ImplicitDeny);
        // Actions are case-insensitive, resources are not.
        assert!(evaluate(&policies, None, &request("S3:getobject", "arn:aws:s3:::b/k", &[])).allowed());
        let bucket = [statement(Effect::Allow, &["s3:GetObject"], &["arn:aws:s3:::b/*"])];
        assert!(!evaluate(&bucket, None, &request("s3:GetObject", "arn:aws:s3:::B/k", &[])).allowed());
    }

    #[test]
    fn a_boundary_limits_what_the_identity_policy_allows() {
        // The guide's example: the boundary allows S3, CloudWatch and EC2; the identity policy
        // allows iam:CreateUser, which the boundary does not: denied.
        let boundary = [statement(Effect::Allow, &["s3:*", "cloudwatch:*", "ec2:*"], &["*"])];
        let identity = [statement(Effect::Allow, &["iam:CreateUser", "s3:ListBucket"], &["*"])];
        let create = evaluate(&identity, Some(&boundary), &request("iam:CreateUser", "*", &[]));
        assert_eq!(create.decision, Decision::OutsideBoundary);
        assert!(evaluate(&identity, Some(&boundary), &request("s3:ListBucket", "arn:aws:s3:::b", &[])).allowed());
        // The boundary alone grants nothing.
        let put = evaluate(&identity, Some(&boundary), &request("s3:PutObject", "arn:aws:s3:::b/k", &[]));
        assert_eq!(put.decision, Decision::ImplicitDeny);
    }

    #[test]
    fn not_action_allows_everything_else() {
        // The guide's NotAction example: everything but IAM.
        let mut s = statement(Effect::Allow, &[], &["*"]);
        s.not_actions = vec!["iam:*".into()];
        assert!(evaluate(&[s.clone()], None, &request("s3:GetObject", "arn:aws:s3:::b/k", &[])).allowed());
        assert!(!evaluate(&[s], None, &request("iam:CreateUser", "*", &[])).allowed());
    }

    #[test]
    fn dynamodb_leading_keys_and_the_set_operators() {
        // The guide's "allows access to specific items": ForAllValues:StringEquals on LeadingKeys.
        let mut s = statement(
            Effect::Allow,
            &["dynamodb:GetItem", "dynamodb:PutItem"],
            &["arn:aws:dynamodb:*:*:table/MyTable"],
        );
        s.conditions = vec![condition("ForAllValues:StringLike", "dynamodb:LeadingKeys", &["run#*", "runs"])];
        let table = "arn:aws:dynamodb:us-east-1:1:table/MyTable";
        assert!(
            evaluate(&[s.clone()], None, &request("dynamodb:PutItem", table, &[("dynamodb:LeadingKeys", &["run#1"])]))
                .allowed()
        );
        let other = request("dynamodb:PutItem", table, &[("dynamodb:LeadingKeys", &["success#prod"])]);
        assert_eq!(evaluate(&[s.clone()], None, &other).decision, Decision::ImplicitDeny);
        // "ForAllValues … returns true if there are no context keys in the request."
        assert!(evaluate(&[s.clone()], None, &request("dynamodb:PutItem", table, &[])).allowed());
        // ForAnyValue: at least one; absent is false.
        s.conditions = vec![condition("ForAnyValue:StringEquals", "aws:TagKeys", &["env"])];
        assert!(
            evaluate(&[s.clone()], None, &request("dynamodb:GetItem", table, &[("aws:TagKeys", &["env", "x"])]))
                .allowed()
        );
        assert!(!evaluate(&[s], None, &request("dynamodb:GetItem", table, &[])).allowed());
    }

    #[test]
    fn conditions_hold_fail_or_are_listed_as_unevaluated() {
        let mut pass = statement(Effect::Allow, &["iam:PassRole"], &["arn:aws:iam::1:role/cfn"]);
        pass.conditions = vec![condition("StringEquals", "iam:PassedToService", &["cloudformation.amazonaws.com"])];
        let role = "arn:aws:iam::1:role/cfn";
        let to_cfn = request("iam:PassRole", role, &[("iam:passedtoservice", &["cloudformation.amazonaws.com"])]);
        assert_eq!(
            evaluate(&[pass.clone()], None, &to_cfn),
            Verdict { decision: Decision::Allowed(vec!["Allow".into()]), unevaluated: vec![] }
        );
        let to_ec2 = request("iam:PassRole", role, &[("iam:PassedToService", &["ec2.amazonaws.com"])]);
        assert!(!evaluate(&[pass.clone()], None, &to_ec2).allowed());
        // A key the request does not carry: the allow stands, the assumption is listed.
        let unknown = evaluate(&[pass.clone()], None, &request("iam:PassRole", role, &[]));
        assert!(unknown.allowed());
        assert_eq!(unknown.unevaluated, ["Allow: StringEquals iam:PassedToService"]);
        // …IfExists holds without the key; Null tests presence; Not negates.
        pass.conditions = vec![condition("StringEqualsIfExists", "iam:PassedToService", &["x"])];
        assert!(evaluate(&[pass.clone()], None, &request("iam:PassRole", role, &[])).unevaluated.is_empty());
        pass.conditions = vec![condition("Null", "sts:ExternalId", &["false"])];
        assert!(
            evaluate(&[pass.clone()], None, &request("iam:PassRole", role, &[("sts:ExternalId", &["(set)"])]))
                .allowed()
        );
        assert!(!evaluate(&[pass.clone()], None, &request("iam:PassRole", role, &[])).allowed());
        pass.conditions = vec![condition("StringNotLike", "aws:PrincipalArn", &["arn:aws:iam::*:role/admin*"])];
        assert!(
            !evaluate(
                &[pass.clone()],
                None,
                &request("iam:PassRole", role, &[("aws:PrincipalArn", &["arn:aws:iam::1:role/admin-x"])])
            )
            .allowed()
        );
        // A deny whose condition cannot be decided does not deny, and says so.
        let mut deny = statement(Effect::Deny, &["*"], &["*"]);
        deny.conditions = vec![condition("Bool", "aws:SecureTransport", &["false"])];
        let allow = statement(Effect::Allow, &["s3:GetObject"], &["*"]);
        let verdict = evaluate(&[allow, deny], None, &request("s3:GetObject", "arn:aws:s3:::b/k", &[]));
        assert!(verdict.allowed());
        assert_eq!(verdict.unevaluated, ["Deny: Bool aws:SecureTransport"]);
    }
}
