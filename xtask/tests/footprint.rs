//! The pipeline's AWS footprint, measured: every buildspec rehearsed against the emulator as
//! CodeBuild runs it (the status store in DynamoDB, as `cfn/pipeline.yaml` sets `STATUS_TABLE`),
//! through a first deploy, an update of one function, an unchanged run and a failing test that
//! keeps production out, with the call log on (`aws_target::LOG_VAR`). Each logged call (IAM
//! action, resource ARN, condition keys) is then held against the policy of the role its stage
//! runs as in `cfn/pipeline.yaml` (a call signed by production's deploy role against that role
//! in `cfn/app-account.yaml`), the templates' `!Sub`/`!Ref`/`!GetAtt` resolved with the
//! rehearsal's account, region and names, through `test_support::iam`. It fails on any call the
//! role would refuse, and on any action a role allows that no stage ever calls, unless
//! `footprint-allow.txt` names it with why (rights AWS needs that the emulator does not exercise:
//! CodeBuild's own logs and artifacts, KMS behind SNS, CodePipeline's approval record).
//!
//! Not measured here: the calls CloudFormation makes as the execution role (the emulator creates
//! resources without IAM checks, so `CloudFormationRole` is checked by its shape in
//! `codebuild.rs`), `cargo xtask pipeline` (one process for every stage, so no stage's role can
//! be told from another's), rollbacks (moto does not roll back: `../shared/emulator.md`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use aws_target::Call;
use test_support::iam::{self, Condition, Effect, Statement};
use validate::{Node, Value};

mod support;
use support::{Rehearsal, SAMPLE_PROD, root};

/// moto's default account (the access key `testing`), and the rehearsal's region.
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const PROD_ACCOUNT: &str = "111111111111";
const BUCKET: &str = "monorepo-footprint-artifacts";
const TABLE: &str = "monorepo-pipeline-status";
const STACK: &str = "monorepo-pipeline";
const DEV_CFN_ROLE: &str = "arn:aws:iam::123456789012:role/pipeline-dashboard-cfn-dev";
const PROD_CFN_ROLE: &str = "arn:aws:iam::111111111111:role/pipeline-dashboard-cfn-prod";

/// The stage (buildspec) → the CodeBuild project's role in `cfn/pipeline.yaml`.
const STAGE_ROLES: &[(&str, &str)] = &[
    ("toolkit", "ToolkitRole"),
    ("diff", "DiffRole"),
    ("validate", "ValidateRole"),
    ("build", "BuildRole"),
    ("test", "TestRole"),
    ("deploy", "DeployDevRole"),
    ("status", "StatusRole"),
    ("e2e", "E2ERole"),
    ("deploy-prod", "DeployProdRole"),
];
/// Production's deploy role, as `cfn/app-account.yaml` defines it.
const PROD_DEPLOY_ROLE: &str = "app-account/DeployRole";

/// What `!Ref`, `!GetAtt` and `${…}` stand for in one template, for one account.
struct Names(BTreeMap<String, String>);

impl Names {
    fn get(&self, name: &str) -> String {
        self.0.get(name).cloned().unwrap_or_else(|| panic!("the test does not know what `{name}` resolves to"))
    }

    /// Every string a node stands for (a list is each of its strings).
    fn strings(&self, node: &Node) -> Vec<String> {
        match &node.value {
            Value::String(s) => vec![s.clone()],
            Value::Seq(items) => items.iter().flat_map(|i| self.strings(i)).collect(),
            Value::Map(_) => vec![self.one(node)],
            _ => Vec::new(),
        }
    }

    fn one(&self, node: &Node) -> String {
        if let Some(name) = node.get("Ref").and_then(Node::as_str) {
            return self.get(name);
        }
        if let Some(att) = node.get("Fn::GetAtt") {
            let parts: Vec<String> = att.items().iter().filter_map(|p| p.as_str().map(str::to_owned)).collect();
            return self.get(&parts.join("."));
        }
        if let Some(sub) = node.get("Fn::Sub") {
            let text = sub.as_str().map(str::to_owned).unwrap_or_else(|| sub.items()[0].as_str().unwrap().to_owned());
            return self.sub(&text);
        }
        panic!("an intrinsic the test does not resolve: {node:?}")
    }

    fn sub(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("a closed ${…}") + start;
            out.push_str(&self.get(&rest[start + 2..end]));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn template(path: &str) -> Node {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    validate::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The pipeline template's names in the rehearsal's account.
fn pipeline_names(template: &Node) -> Names {
    let mut names = defaults(template, ACCOUNT);
    let a = |s: &str| s.to_owned();
    for (k, v) in [
        ("ConnectionArn", format!("arn:aws:codeconnections:{REGION}:{ACCOUNT}:connection/rehearsal")),
        ("ProdDeployRoleArn", a(SAMPLE_PROD.role_arn)),
        ("DevCloudFormationRoleArn", a(DEV_CFN_ROLE)),
        ("ProdCloudFormationRoleArn", a(PROD_CFN_ROLE)),
        ("ArtifactBucket", a(BUCKET)),
        ("ArtifactBucket.Arn", format!("arn:aws:s3:::{BUCKET}")),
        ("StatusTable", a(TABLE)),
        ("StatusTable.Arn", format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}")),
        ("NotificationTopic", format!("arn:aws:sns:{REGION}:{ACCOUNT}:monorepo-pipeline")),
        ("NotificationKey", a("rehearsal-key")),
        ("NotificationKey.Arn", format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/rehearsal-key")),
        ("Pipeline", a("monorepo-pipeline")),
    ] {
        names.0.insert(k.to_owned(), v);
    }
    names
}

/// Production's `cfn/app-account.yaml` names.
fn prod_names(template: &Node) -> Names {
    let mut names = defaults(template, PROD_ACCOUNT);
    for (k, v) in [
        ("Environment", "prod".to_owned()),
        ("ArtifactBucketName", "pipeline-dashboard-artifacts-prod".to_owned()),
        ("DeployPrincipalArn", format!("arn:aws:iam::{ACCOUNT}:role/DeployProdRole")),
        ("AppRoleBoundary", format!("arn:aws:iam::{PROD_ACCOUNT}:policy/pipeline-dashboard-boundary")),
        ("CloudFormationRole.Arn", PROD_CFN_ROLE.to_owned()),
    ] {
        names.0.insert(k.to_owned(), v);
    }
    names
}

/// Pseudo parameters, parameter defaults, and every resource's `Ref`/`.Arn` as a marker.
fn defaults(template: &Node, account: &str) -> Names {
    let mut names = BTreeMap::new();
    for (k, v) in
        [("AWS::Partition", "aws"), ("AWS::Region", REGION), ("AWS::AccountId", account), ("AWS::StackName", STACK)]
    {
        names.insert(k.to_owned(), v.to_owned());
    }
    for (key, parameter) in template.get("Parameters").map(Node::entries).unwrap_or_default() {
        if let Some(default) = parameter.get("Default") {
            let text = match &default.value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.clone(),
                _ => continue,
            };
            names.insert(key.name.clone(), text);
        }
    }
    for (key, _) in template.get("Resources").unwrap().entries() {
        names.insert(key.name.clone(), format!("ref:{}", key.name));
        names.insert(format!("{}.Arn", key.name), format!("arn:aws:iam::{account}:role/{}", key.name));
    }
    Names(names)
}

/// The statements of one policy document node.
fn statements_of(document: &Node, names: &Names, owner: &str) -> Vec<Statement> {
    let list = document.get("Statement").unwrap();
    let items: Vec<&Node> = match &list.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![list],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let strings = |key: &str| s.get(key).map(|n| names.strings(n)).unwrap_or_default();
            let mut conditions = Vec::new();
            for (operator, keys) in s.get("Condition").map(Node::entries).unwrap_or_default() {
                for (key, values) in keys.entries() {
                    conditions.push(Condition {
                        operator: operator.name.clone(),
                        key: key.name.clone(),
                        values: names.strings(values),
                    });
                }
            }
            let sid = s.get("Sid").and_then(Node::as_str).map_or_else(|| format!("#{i}"), str::to_owned);
            Statement {
                sid: format!("{owner}/{sid}"),
                effect: if s.get("Effect").and_then(Node::as_str) == Some("Deny") {
                    Effect::Deny
                } else {
                    Effect::Allow
                },
                actions: strings("Action"),
                not_actions: strings("NotAction"),
                resources: strings("Resource"),
                not_resources: strings("NotResource"),
                conditions,
            }
        })
        .collect()
}

/// A role's statements: its inline policies and the managed policies of the same template.
fn role_statements(template: &Node, role: &str, names: &Names) -> Vec<Statement> {
    let resources = template.get("Resources").unwrap();
    let properties = resources.get(role).unwrap_or_else(|| panic!("no role {role}")).get("Properties").unwrap();
    let mut out = Vec::new();
    for policy in properties.get("Policies").map(Node::items).unwrap_or_default() {
        out.extend(statements_of(policy.get("PolicyDocument").unwrap(), names, role));
    }
    for managed in properties.get("ManagedPolicyArns").map(Node::items).unwrap_or_default() {
        let name = managed.get("Ref").and_then(Node::as_str).expect("a managed policy of this template");
        let document = resources.get(name).unwrap().get("Properties").unwrap().get("PolicyDocument").unwrap();
        out.extend(statements_of(document, names, name));
    }
    assert!(properties.get("PermissionsBoundary").is_none(), "{role}: a boundary the test does not read");
    out
}

/// Every role the calls are held against, by name.
fn roles() -> BTreeMap<String, Vec<Statement>> {
    let pipeline = template("cfn/pipeline.yaml");
    let names = pipeline_names(&pipeline);
    let mut roles: BTreeMap<String, Vec<Statement>> =
        STAGE_ROLES.iter().map(|(_, role)| (role.to_string(), role_statements(&pipeline, role, &names))).collect();
    let app = template("cfn/app-account.yaml");
    roles.insert(PROD_DEPLOY_ROLE.into(), role_statements(&app, "DeployRole", &prod_names(&app)));
    roles
}

/// The status table's partition key, from the template.
fn partition_key() -> String {
    let pipeline = template("cfn/pipeline.yaml");
    let table = pipeline.get("Resources").unwrap().get("StatusTable").unwrap().get("Properties").unwrap();
    let hash = table
        .get("KeySchema")
        .unwrap()
        .items()
        .iter()
        .find(|k| k.get("KeyType").and_then(Node::as_str) == Some("HASH"));
    hash.unwrap().get("AttributeName").and_then(Node::as_str).unwrap().to_owned()
}

/// The role a call was made as.
fn role_of(call: &Call) -> String {
    if call.signer == SAMPLE_PROD.role_arn {
        return PROD_DEPLOY_ROLE.into();
    }
    let stage = STAGE_ROLES.iter().find(|(s, _)| *s == call.stage);
    stage.unwrap_or_else(|| panic!("a call of an unknown stage: {call:?}")).1.to_owned()
}

fn request(call: &Call, key: &str) -> iam::Request {
    let mut context: BTreeMap<String, Vec<String>> =
        call.context.iter().map(|(k, v)| (k.clone(), vec![v.clone()])).collect();
    if call.service == "dynamodb" && !call.keys.is_empty() {
        let leading = call.keys.get(key).cloned().unwrap_or_else(|| format!("(no {key} in {:?})", call.keys));
        context.insert("dynamodb:LeadingKeys".into(), vec![leading]);
    }
    iam::Request { action: call.action.clone(), resource: call.resource.clone(), context }
}

/// `footprint-allow.txt`: `STATEMENT | ACTION | why`, STATEMENT as `OWNER/SID` (`*` matches any
/// run: `*/OwnArtifact` is every role's own artifact statement).
fn allow_list() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(root().join("xtask/tests/footprint-allow.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let parts: Vec<&str> = l.split('|').map(str::trim).collect();
            assert!(parts.len() == 3 && parts[2].len() > 10, "footprint-allow.txt: `STATEMENT | ACTION | why`: {l}");
            (parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned())
        })
        .collect()
}

/// What the calls of every role say against its policy: refusals and unused rights.
fn judge(calls: &[Call]) -> (Vec<String>, Vec<String>, BTreeSet<String>) {
    let roles = roles();
    let key = partition_key();
    let mut refused = BTreeSet::new();
    let mut unevaluated = BTreeSet::new();
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for call in calls {
        let role = role_of(call);
        let verdict = iam::evaluate(&roles[&role], None, &request(call, &key));
        unevaluated.extend(verdict.unevaluated.iter().cloned());
        match &verdict.decision {
            iam::Decision::Allowed(sids) => {
                used.extend(sids.iter().map(|s| (role.clone(), format!("{s}|{}", call.action))))
            }
            other => {
                _ = refused.insert(format!(
                    "{} as {role}: {} on {} ({other:?}, keys {:?})",
                    call.stage, call.action, call.resource, call.keys
                ))
            }
        }
    }
    // A right is a (statement, action): an inline policy's statements are its role's; the shared
    // managed policy's (`StageCommonPolicy/…`) are used when any stage that has it calls them.
    let allowed = allow_list();
    let matches =
        |pattern: &str, action: &str| iam::wildcard(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase());
    let mut unused = BTreeSet::new();
    let mut granted = BTreeSet::new();
    for statements in roles.values() {
        for statement in statements.iter().filter(|s| s.effect == Effect::Allow) {
            for action in &statement.actions {
                granted.insert((statement.sid.clone(), action.clone()));
                let called = used.iter().any(|(_, a)| {
                    let (sid, called) = a.split_once('|').unwrap();
                    sid == statement.sid && matches(action, called)
                });
                let listed = allowed.iter().any(|(sid, a, _)| iam::wildcard(sid, &statement.sid) && a == action);
                if !called && !listed {
                    unused.insert(format!("{}: {action} is never called", statement.sid));
                }
            }
        }
    }
    // An entry must name a right a policy grants; one some run does call (a path the emulator
    // reaches only at times, like deleting a change set) stays valid.
    for (pattern, action, _) in &allowed {
        if !granted.iter().any(|(sid, a)| iam::wildcard(pattern, sid) && a == action) {
            unused.insert(format!("footprint-allow.txt: `{pattern} | {action}` names no right a policy grants"));
        }
    }
    let unused = unused.into_iter().collect();
    (refused.into_iter().collect(), unused, unevaluated)
}

fn aws(args: &[&str], env: &[(String, String)]) {
    let aws = test_support::python().parent().unwrap().join("aws");
    let out = Command::new(&aws).args(args).envs(env.iter().map(|(k, v)| (k, v))).output().unwrap();
    assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The pipeline's account in the emulator as `cfn/pipeline.yaml` leaves it: the artifact
/// buckets, the status table (its key schema), the topic.
fn pipeline_account(env: &[(String, String)]) {
    for bucket in [BUCKET, "pipeline-dashboard-artifacts-dev"] {
        aws(&["s3", "mb", &format!("s3://{bucket}")], env);
    }
    let key = partition_key();
    aws(
        &[
            "dynamodb",
            "create-table",
            "--table-name",
            TABLE,
            "--billing-mode",
            "PAY_PER_REQUEST",
            "--attribute-definitions",
            &format!("AttributeName={key},AttributeType=S"),
            "AttributeName=sk,AttributeType=S",
            "--key-schema",
            &format!("AttributeName={key},KeyType=HASH"),
            "AttributeName=sk,KeyType=RANGE",
        ],
        env,
    );
    aws(&["sns", "create-topic", "--name", "monorepo-pipeline"], env);
    let prod = support::prod_env(&env.iter().find(|(k, _)| k == "AWS_ENDPOINT_URL").unwrap().1, &SAMPLE_PROD);
    aws(&["s3", "mb", "s3://pipeline-dashboard-artifacts-prod"], &prod);
}

/// Every buildspec after the toolkit's, in CodePipeline's order; whether each succeeded. When
/// nothing changed (`any_changed` is not `true`), CodePipeline's entry conditions skip every
/// stage after Diff, and so does this.
fn run_stages(repo: &Path, env: &[(String, String)]) -> Vec<(String, bool, String)> {
    let rehearsal = Rehearsal::new(repo, env.to_vec());
    let mut results = Vec::new();
    for &(buildspec, previous) in support::CODEBUILD_ORDER {
        let cfn_role = if buildspec == "deploy-prod.yml" { PROD_CFN_ROLE } else { DEV_CFN_ROLE };
        let extra = [("CFN_ROLE_ARN", cfn_role), ("PROD_EXTERNAL_ID", SAMPLE_PROD.external_id)];
        // With the DynamoDB store as in CodeBuild: DeployProd's site check records `prod-dast`,
        // beside the `dast` E2E recorded for dev, and the stage reaches its mark-success.
        let (ok, out, text) = rehearsal.stage_with(buildspec, previous, &extra);
        let exported = std::fs::read_to_string(out.join("exported.env")).unwrap_or_default();
        if buildspec == "diff.yml" && !exported.contains("any_changed=true") {
            results.push((buildspec.to_owned(), ok, text));
            break;
        }
        results.push((buildspec.to_owned(), ok, text));
    }
    results
}

#[test]
fn every_stage_calls_only_what_its_role_allows_and_every_right_is_used() {
    let moto = test_support::Moto::start();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("calls.jsonl");
    let mut env = support::pipeline_env(&moto.endpoint);
    for (k, v) in [
        ("ARTIFACT_BUCKET", BUCKET.to_owned()),
        ("STATUS_TABLE", TABLE.to_owned()),
        ("APPROVED_BY", "alice".to_owned()),
        ("NOTIFY_TOPIC_ARN", format!("arn:aws:sns:{REGION}:{ACCOUNT}:monorepo-pipeline")),
        // No METRICS_NAMESPACE: moto answers CloudWatch's CBOR protocol with XML (the SDK
        // cannot read it), so PutMetricData is in footprint-allow.txt.
        (aws_target::LOG_VAR, log.display().to_string()),
    ] {
        env.push((k.to_owned(), v));
    }
    pipeline_account(&env);

    let repo = support::rehearsal_sample();
    let handler = std::fs::read_to_string(repo.path().join("lambda/api-handler/index.py")).unwrap();
    let app = std::fs::read_to_string(repo.path().join("frontend/src/app.js")).unwrap();
    let tests = std::fs::read_to_string(repo.path().join("tests/test_api_handler.py")).unwrap();
    for round in ["first deploy", "a function and the site updated", "unchanged", "a failing test"] {
        match round {
            "a function and the site updated" => {
                let app = format!("{app}\n// v2\n");
                let handler = format!("{handler}\n# v2\n");
                repo.commit_files(
                    "api-handler",
                    &[("lambda/api-handler/index.py", &handler), ("frontend/src/app.js", &app)],
                );
            }
            "a failing test" => {
                let broken = format!("{tests}\n\ndef test_broken():\n    assert 1 == 2\n");
                repo.commit_files("broken api-handler test", &[("tests/test_api_handler.py", &broken)]);
            }
            _ => {}
        }
        let results = run_stages(repo.path(), &env);
        assert_eq!(results.len() == 1, round == "unchanged", "{round}: only Diff runs when nothing changed");
        for (buildspec, ok, text) in &results {
            let expected = round != "a failing test"
                || !matches!(buildspec.as_str(), "status.yml" | "e2e.yml" | "deploy-prod.yml");
            assert_eq!(*ok, expected, "{round}: {buildspec}: {text}");
        }
    }

    let calls = aws_target::read_log(&std::fs::read_to_string(&log).unwrap()).unwrap();
    if let Some(keep) = std::env::var_os("FOOTPRINT_KEEP_LOG") {
        std::fs::copy(&log, keep).unwrap();
    }
    let stages: BTreeSet<&str> = calls.iter().map(|c| c.stage.as_str()).collect();
    assert!(stages.contains("deploy") && stages.contains("deploy-prod") && stages.contains("diff"), "{stages:?}");
    assert!(calls.iter().any(|c| c.signer == SAMPLE_PROD.role_arn), "no call as production's role");
    let (refused, unused, unevaluated) = judge(&calls);
    let listed: Vec<String> = unevaluated.into_iter().collect();
    assert!(
        refused.is_empty() && unused.is_empty(),
        "calls the roles refuse:\n{}\n\nrights no stage uses (drop them or list them in footprint-allow.txt \
         with why):\n{}\n(conditions not evaluated: {listed:?})",
        refused.join("\n"),
        unused.join("\n")
    );
}

/// The judge itself: a call outside its role's resources, a status-table write to another
/// stage's partition, and an allowed right nobody calls are each found.
#[test]
fn the_judge_finds_a_refused_call_a_foreign_partition_and_an_unused_right() {
    let call = |stage: &str, action: &str, resource: &str, keys: &[(&str, &str)]| Call {
        stage: stage.into(),
        service: action.split(':').next().unwrap().into(),
        action: action.into(),
        resource: resource.into(),
        signer: String::new(),
        context: BTreeMap::new(),
        keys: keys.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let table = format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{TABLE}");
    let calls = [
        // Test writing the toolkit's artifact: refused.
        call("test", "s3:PutObject", &format!("arn:aws:s3:::{BUCKET}/monorepo-pipel/Toolkit/bin"), &[]),
        // Test writing a success mark: refused by the LeadingKeys condition.
        call("test", "dynamodb:PutItem", &table, &[("pk", "success#prod"), ("sk", "MS#1")]),
        // Its own step record: allowed.
        call("test", "dynamodb:PutItem", &table, &[("pk", "run#1"), ("sk", "step#test#a")]),
    ];
    let (refused, unused, _) = judge(&calls);
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(refused[0].contains("Toolkit") || refused[1].contains("Toolkit"), "{refused:#?}");
    assert!(refused.iter().any(|r| r.contains("dynamodb:PutItem") && r.contains("success#prod")), "{refused:#?}");
    assert!(
        unused.iter().any(|u| u.starts_with("DeployDevRole") && u.contains("cloudformation:CreateChangeSet")),
        "{unused:#?}"
    );
}
