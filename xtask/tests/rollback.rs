//! Releases and rollback on the sample monorepo in its own emulator: two releases deployed
//! through `cargo xtask pipeline`, refusals that change nothing, a rollback (`cargo xtask
//! rollback`) back to release 1, a rollback of the rollback (the `rollback` binary) forward to
//! release 2, and a lost store rebuilt from the artifact bucket.

mod support;
use support::{output_text as text, rollback_binary};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use run_state::{FileStore, ReleaseStore, RunDir, Status, Step, Store};

fn pipeline(repo: &Path, endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--repo"])
        .arg(repo)
        .args(["--endpoint-url", endpoint])
        .output()
        .unwrap()
}

/// What dev runs, read from the emulator: the root stack's template and parameters, each
/// function's CodeSha256, and each site object's ETag (the kept copies aside).
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    template: String,
    parameters: Vec<(String, String)>,
    code: BTreeMap<String, String>,
    site: BTreeMap<String, String>,
}

fn state(endpoint: &str, site_bucket: &str) -> State {
    let support::DevState { template, parameters, code } = support::dev_state(endpoint);
    let env = support::pipeline_env(endpoint);
    let json = |args: &[&str]| support::aws_json(args, &env);
    let listed = json(&["s3api", "list-objects-v2", "--bucket", site_bucket]);
    let site = listed["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| (o["Key"].as_str().unwrap().to_owned(), o["ETag"].as_str().unwrap().trim_matches('"').to_owned()))
        .filter(|(key, _)| !key.starts_with(".publish/"))
        .collect();
    State { template, parameters, code, site }
}

/// Every object of `release` is in `now` with the same content; what `now` has beyond it is a
/// hashed asset a retained release still references (immutable, never served by the HTML).
fn same_site(release: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut wrong: Vec<String> = release
        .iter()
        .filter(|(key, etag)| now.get(*key) != Some(*etag))
        .map(|(key, etag)| format!("{key}: {etag} in the release, {:?} now", now.get(key)))
        .collect();
    wrong.extend(
        now.keys().filter(|k| !release.contains_key(*k) && !k.starts_with("assets/")).map(|k| format!("{k}: extra")),
    );
    wrong
}

fn releases(repo: &Path) -> Vec<run_state::Release> {
    FileStore::open(&repo.join(".pipeline")).unwrap().releases("dev").unwrap()
}

/// Deploy release 1, then release 2 (the root template gains a parameter resource, the API handler's code
/// and the site's HTML change); roll back (`cargo xtask rollback`): the root template, its
/// parameters, every CodeSha256 and every site object are release 1's, and the base is release
/// 1's commit; roll the rollback back (the `rollback` binary): release 2's again. Refused
/// without any change, exit 2, one line, recorded: an unknown release, a release whose template
/// expired, a rollback while a deploy holds a stack's lock. A lost store rebuilt from S3.
/// The tests here each deploy the whole sample twice, each in its own emulator: one at a
/// time, so two cores are not shared by four deploys.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn two_releases_rolled_back_and_forward_in_the_emulator() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Its own emulator: the sample's stack and bucket names would collide with another sample test.
    let moto = test_support::Moto::start();
    let endpoint = moto.endpoint.as_str();
    let repo = test_support::sample_monorepo();
    let root = repo.path();

    let out = pipeline(root, endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = releases(root);
    assert_eq!(first.len(), 1, "{}", text(&out));
    let release1 = first[0].clone();
    assert_eq!(release1.commit, repo.head());
    assert!(release1.stacks.contains_key("master") && release1.functions.len() == 5, "{release1:#?}");
    let site_bucket = release1.site.as_ref().expect("the site's part").bucket.clone();
    let state1 = state(endpoint, &site_bucket);

    // The root template gains a resource (a nested template's change makes the emulator create
    // the nested stack's named bucket again, which AWS would not).
    let master = std::fs::read_to_string(root.join("cfn/master.yaml")).unwrap();
    // A resource moto models fully (created on the update, deleted on the rollback). Not an
    // SSM parameter: moto creates an unnamed one again on each read of the stack's resources
    // and fails, so every DescribeStackResource of the root stack answers an empty 500 (a named
    // one fails the second rollback's delete); nor a WaitConditionHandle, which moto leaves
    // unmodelled (None among the stack's resources: the same 500s, in some runs).
    let marker = "Resources:\n  ReleaseMarker:\n    Type: AWS::SNS::Topic\n";
    repo.write("cfn/master.yaml", &master.replace("Resources:\n", marker));
    let handler = std::fs::read_to_string(root.join("lambda/api-handler/index.py")).unwrap();
    repo.write("lambda/api-handler/index.py", &format!("{handler}\n# release 2\n"));
    let html = std::fs::read_to_string(root.join("frontend/src/index.html")).unwrap();
    repo.write("frontend/src/index.html", &html.replace("</body>", "<p>release 2</p></body>"));
    let commit2 = repo.commit_all("release 2: a template, a handler and a page change");
    let out = pipeline(root, endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let second = releases(root);
    assert_eq!(second.len(), 2, "{}", text(&out));
    let release2 = second[1].clone();
    let state2 = state(endpoint, &site_bucket);
    assert_ne!(state1.template, state2.template, "release 2 changed the template");
    assert_ne!(state1.code, state2.code, "release 2 changed a function");
    assert_ne!(state1.site.get("index.html"), state2.site.get("index.html"), "release 2 changed the page");
    assert_eq!(release2.functions["orchestration"], release1.functions["orchestration"], "carried over");

    let listed = Command::new(support::binary("status-report"))
        .arg("--repo")
        .arg(root)
        .args(["releases", "--env", "dev"])
        .output()
        .unwrap();
    let listing = text(&listed);
    assert!(listed.status.success(), "{listing}");
    assert!(
        listing.contains(&format!("  {}", release1.id)) && listing.contains(&format!("* {}", release2.id)),
        "{listing}"
    );

    refusals_change_nothing(&repo, endpoint, &site_bucket, &state2, &release1);

    // The plan alone: printed, nothing changed, nothing recorded.
    let runs = FileStore::open(&root.join(".pipeline")).unwrap().run_ids().unwrap();
    let out = rollback_binary(root, endpoint, &["--env", "dev", "--steps", "1", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = text(&out);
    assert!(plan.contains("stack master (pipeline-dashboard-dev): back to https://"), "{plan}");
    assert!(plan.contains("function api-handler (") && plan.contains("function orchestration: stays"), "{plan}");
    assert!(plan.contains(&format!("site: back to its release {}", release1.id)), "{plan}");
    assert_eq!(state(endpoint, &site_bucket), state2);
    assert_eq!(FileStore::open(&root.join(".pipeline")).unwrap().run_ids().unwrap(), runs, "a dry run records nothing");

    // Back to release 1 through cargo xtask rollback.
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["rollback", "--repo"])
        .arg(root)
        .args(["--env", "dev", "--steps", "1", "--endpoint-url", endpoint])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&format!("rollback `dev` from release {} (commit", release2.id)), "{}", text(&out));
    let back = state(endpoint, &site_bucket);
    assert_eq!((&back.template, &back.parameters), (&state1.template, &state1.parameters), "{}", text(&out));
    assert_eq!(back.code, state1.code, "{}", text(&out));
    assert_eq!(same_site(&state1.site, &back.site), Vec::<String>::new(), "{}", text(&out));
    let store = FileStore::open(&root.join(".pipeline")).unwrap();
    assert_eq!(store.last_success("dev").unwrap().unwrap().commit, release1.commit, "the base moved back");
    let rolled = RunDir::latest(&root.join(".pipeline")).unwrap();
    let records = store.run(&rolled.run_id).unwrap();
    let infra = records.iter().find(|r| r.component == "infra" && r.step == Step::Deploy).unwrap();
    assert_eq!(infra.status, Status::Passed, "{records:#?}");
    let third = releases(root);
    assert_eq!(third.len(), 3);
    assert_eq!(third[2].rollback.as_ref().map(|r| r.to.as_str()), Some(release1.id.as_str()));

    // The rollback rolled back (the binary): release 2 again.
    let out = rollback_binary(root, endpoint, &["--env", "dev", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let forward = state(endpoint, &site_bucket);
    assert_eq!((&forward.template, &forward.parameters), (&state2.template, &state2.parameters), "{}", text(&out));
    assert_eq!(forward.code, state2.code, "{}", text(&out));
    assert_eq!(same_site(&state2.site, &forward.site), Vec::<String>::new(), "{}", text(&out));
    assert_eq!(store.last_success("dev").unwrap().unwrap().commit, commit2);

    // A lost store: the releases come back from the artifact bucket.
    let before: Vec<String> = releases(root).into_iter().map(|r| r.id).collect();
    std::fs::remove_file(store.releases_path()).unwrap();
    assert!(releases(root).is_empty());
    let out = rollback_binary(root, endpoint, &["--env", "dev", "--rebuild-from", "pipeline-dashboard-artifacts-dev"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after: Vec<String> = releases(root).into_iter().map(|r| r.id).collect();
    assert_eq!(after, before);
}

/// Each refusal: exit 2, one line naming what to fix, the rollback's run recorded failed, and
/// the emulator's state as it was.
fn refusals_change_nothing(
    repo: &test_support::GitRepo,
    endpoint: &str,
    site_bucket: &str,
    now: &State,
    release1: &run_state::Release,
) {
    let root = repo.path();
    let store = FileStore::open(&root.join(".pipeline")).unwrap();
    let refused = |args: &[&str], expected: &str| {
        let out = rollback_binary(root, endpoint, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("rollback: ") && last.contains(expected), "{stderr}");
        let run = RunDir::latest(&root.join(".pipeline")).unwrap();
        let failed = store.run(&run.run_id).unwrap();
        assert!(
            failed.iter().any(|r| r.step == Step::Deploy
                && r.status == Status::Failed
                && r.details.error.as_deref().is_some_and(|e| e.contains(expected))),
            "{failed:#?}"
        );
        assert_eq!(&state(endpoint, site_bucket), now, "{stderr}");
    };
    refused(&["--env", "dev", "--to", "no-such-release"], "`dev` has no release `no-such-release`");

    let lock = "deploy/us-east-1/pipeline-dashboard-dev";
    store.acquire_lock(lock, "run another-deploy", std::time::Duration::from_secs(600)).unwrap();
    refused(&["--env", "dev", "--steps", "1"], "is locked by run another-deploy");
    store.release_lock(lock, "run another-deploy").unwrap();

    let env = support::pipeline_env(endpoint);
    let bucket = release1.artifact_bucket.clone().unwrap();
    let key = release1.stacks["master"].template_key.clone();
    let aside = format!("{key}.aside");
    let copy = |from: &str, to: &str| {
        support::aws_json(
            &["s3api", "copy-object", "--bucket", &bucket, "--copy-source", &format!("{bucket}/{from}"), "--key", to],
            &env,
        )
    };
    copy(&key, &aside);
    support::aws_json(&["s3api", "delete-object", "--bucket", &bucket, "--key", &key], &env);
    refused(&["--env", "dev", "--to", &release1.id], &format!("template s3://{bucket}/{key} is gone"));
    copy(&aside, &key);
}

fn prod_releases(repo: &Path) -> Vec<run_state::Release> {
    FileStore::open(&repo.join(".pipeline")).unwrap().releases("prod").unwrap()
}

/// Production needs an approval as a promotion does: the rollback's run waits for it (nothing
/// changed), `status-report approve` then `--resume` rolls back; `--emergency` goes without one
/// and says so in the run's records and the release.
#[test]
fn a_production_rollback_waits_for_its_approval_unless_an_emergency() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let moto = test_support::Moto::start();
    let endpoint = moto.endpoint.as_str();
    let repo = test_support::sample_monorepo();
    let root = repo.path();
    let approved = |out: Output| assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let through_prod = || {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["pipeline", "--repo"])
            .arg(root)
            .args(["--endpoint-url", endpoint, "--approve", "--approver", "ci-bot"])
            .output()
            .unwrap()
    };
    approved(through_prod());
    let code1 = support::function_code(&support::prod_env(endpoint, &support::SAMPLE_PROD));
    let handler = std::fs::read_to_string(root.join("lambda/api-handler/index.py")).unwrap();
    repo.write("lambda/api-handler/index.py", &format!("{handler}\n# release 2\n"));
    repo.commit_all("release 2: a handler change");
    approved(through_prod());
    let code2 = support::function_code(&support::prod_env(endpoint, &support::SAMPLE_PROD));
    assert_ne!(code1, code2);
    let [p1, p2] = <[run_state::Release; 2]>::try_from(prod_releases(root)).expect("two prod releases");

    let out = rollback_binary(root, endpoint, &["--env", "prod", "--steps", "1"]);
    approved(out.clone());
    assert!(text(&out).contains("waits for approval"), "{}", text(&out));
    assert_eq!(
        support::function_code(&support::prod_env(endpoint, &support::SAMPLE_PROD)),
        code2,
        "nothing changed before the approval"
    );
    let waiting = RunDir::latest(&root.join(".pipeline")).unwrap().run_id;
    let resumed = rollback_binary(root, endpoint, &["--env", "prod", "--resume", &waiting]);
    assert_eq!(resumed.status.code(), Some(2), "not approved yet: {}", text(&resumed));
    assert!(text(&resumed).contains("needs an approval"), "{}", text(&resumed));
    let approve = Command::new(support::binary("status-report"))
        .arg("--repo")
        .arg(root)
        .args(["approve", "--run", &waiting, "--by", "alice"])
        .output()
        .unwrap();
    approved(approve);
    approved(rollback_binary(root, endpoint, &["--env", "prod", "--resume", &waiting]));
    assert_eq!(
        support::function_code(&support::prod_env(endpoint, &support::SAMPLE_PROD)),
        code1,
        "production runs release 1's code"
    );
    let store = FileStore::open(&root.join(".pipeline")).unwrap();
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, p1.commit);

    approved(rollback_binary(root, endpoint, &["--env", "prod", "--to", &p2.id, "--emergency"]));
    assert_eq!(support::function_code(&support::prod_env(endpoint, &support::SAMPLE_PROD)), code2);
    let last = prod_releases(root).pop().unwrap();
    let origin = last.rollback.expect("a rollback's release");
    assert!(origin.emergency && origin.to == p2.id, "{origin:?}");
    let emergency = RunDir::latest(&root.join(".pipeline")).unwrap().run_id;
    let records = store.run(&emergency).unwrap();
    assert!(
        records.iter().any(|r| r.step == Step::ProdDeploy
            && r.status == Status::Passed
            && r.details.note.as_deref().is_some_and(|n| n.contains("emergency: without approval"))),
        "{records:#?}"
    );
    assert!(records.iter().all(|r| r.step != Step::Approval), "no approval asked: {records:#?}");
}

/// The Rollback project as CodeBuild runs it, started by hand after two releases went through
/// every stage (the file store: its releases read back from dev's artifact bucket first): dev
/// back to release 1's code, and the rollback run's report, naming the emergency, on the topic.
#[test]
fn the_rollback_project_rolls_back_and_tells_the_topic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let repo = support::rehearsal_sample();
    let root = repo.path();
    let moto = test_support::Moto::start();
    let endpoint = moto.endpoint.as_str();
    let mut env = support::rehearsal_env(endpoint, "xtask-rollback-project");
    env.push(("DEV_CFN_ROLE_ARN".to_owned(), "arn:aws:iam::123456789012:role/xtask-contract-cfn".to_owned()));
    support::codebuild_run(root, &env);
    let release1 = support::dev_state(endpoint).code;
    let handler = std::fs::read_to_string(root.join("lambda/api-handler/index.py")).unwrap();
    repo.write("lambda/api-handler/index.py", &format!("{handler}\n# release 2\n"));
    repo.commit_all("release 2: a handler change");
    support::codebuild_run(root, &env);
    let release2 = support::dev_state(endpoint).code;
    assert_ne!(release1, release2, "release 2 changed a function");

    let (url, received) = test_support::http_sink();
    let topic = support::aws_json(&["sns", "create-topic", "--name", "rollbacks"], &env)["TopicArn"]
        .as_str()
        .unwrap()
        .to_owned();
    support::aws_json(
        &["sns", "subscribe", "--topic-arn", &topic, "--protocol", "http", "--notification-endpoint", &url],
        &env,
    );
    let rehearsal = support::Rehearsal::new(root, env.clone());
    // As the Rollback project has it: no CFN_ROLE_ARN, each environment's role by its name.
    let vars =
        [("ROLLBACK_ENV", "dev"), ("EMERGENCY", "true"), ("NOTIFY_TOPIC_ARN", topic.as_str()), ("CFN_ROLE_ARN", "")];
    let (ok, _, text) = rehearsal.started_by_hand("rollback.yml", &vars);
    assert!(ok, "{text}");
    assert_eq!(support::dev_state(endpoint).code, release1, "{text}");
    let run = text
        .lines()
        .find_map(|l| l.strip_prefix("run ").and_then(|l| l.split_once(": `dev` runs release")).map(|(run, _)| run))
        .unwrap_or_else(|| panic!("no rolled-back run in: {text}"))
        .to_owned();
    let notification = loop {
        let body = received.recv_timeout(std::time::Duration::from_secs(10)).expect("no SNS notification arrived");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if json["Type"] == "Notification" {
            break json;
        }
    };
    let message = notification["Message"].as_str().unwrap();
    assert!(message.contains(&run) && message.contains("emergency"), "{notification}");
}
