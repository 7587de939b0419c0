//! A deploy on a flaky network, through the binary against the emulator, with the fault proxy
//! of test-support between them: for every API call of a stack update, in turn, the call and
//! the SDK's retries of it are cut after they reached the emulator (the caller never learns
//! what happened), and each write also answered with a throttling error. Each run either completes (the SDK's
//! and our retries are enough) or fails with a one-line error, and in both cases the stack is
//! left in a settled state with no change set of ours behind; the next run, on a good network,
//! deploys the change.

use std::path::Path;
use std::process::Output;

use run_state::RunDir;
use test_support::{Fault, FaultProxy, Rule};

mod support;

fn template(value: &str) -> String {
    format!(
        "Resources:\n  Setting:\n    Type: AWS::SSM::Parameter\n    Properties:\n      Type: String\n      Value: {value}\n"
    )
}

fn deploy(repo: &Path, run: &RunDir, endpoint: &str) -> Output {
    support::deployer_at(endpoint, repo, run, &[])
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The stack's status and the change sets left on it. AWS removes a stack's change sets once
/// one is executed; the emulator keeps the executed one, so only those not executed count.
async fn stack(cf: &aws_sdk_cloudformation::Client, name: &str) -> (String, Vec<String>) {
    let stacks = cf.describe_stacks().stack_name(name).send().await.unwrap();
    let status = stacks.stacks()[0].stack_status().map(|s| s.as_str().to_owned()).unwrap_or_default();
    let sets = cf.list_change_sets().stack_name(name).send().await.unwrap();
    let executed = |s: &aws_sdk_cloudformation::types::ChangeSetSummary| {
        s.execution_status() == Some(&aws_sdk_cloudformation::types::ExecutionStatus::ExecuteComplete)
    };
    let left = sets
        .summaries()
        .iter()
        .filter(|s| !executed(s))
        .filter_map(|s| s.change_set_name().map(str::to_owned))
        .collect();
    (status, left)
}

/// The repository's `pipeline.toml`: one stack `setting` of component `infra`.
fn write_config(repo: &Path, name: &str) {
    std::fs::write(
        repo.join("pipeline.toml"),
        format!(
            "[deploy]\nartifact_bucket = \"{name}-artifacts\"\n[deploy.stacks.setting]\ntemplate = \"cfn/setting.yaml\"\n\
             stack_name = \"{name}-{{env}}\"\ncomponents = [\"infra\"]\n"
        ),
    )
    .unwrap();
}

/// The faults a call is tried with: every call cut after it reached the emulator; the writes
/// also throttled.
fn faults_for(call: &str) -> Vec<Fault> {
    let writes = ["CreateChangeSet", "ExecuteChangeSet", "PUT "];
    if writes.iter().any(|w| call.contains(w)) {
        vec![Fault::ResetAfter, Fault::Status(503)]
    } else {
        vec![Fault::ResetAfter]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_cut_at_any_call_settles_and_the_next_run_completes_it() {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let name = format!("sd-network-{}", std::process::id());
    aws_target::s3(&config, None).create_bucket().bucket(format!("{name}-artifacts")).send().await.unwrap();
    let cf = aws_target::cloudformation(&config, None);
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    write_config(repo.path(), &name);
    // What the stack holds: its template's value (the emulator cannot describe the resource).
    let deployed = || async {
        let template = cf.get_template().stack_name(format!("{name}-dev")).send().await.unwrap();
        let body = template.template_body().unwrap_or_default().to_owned();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| serde_json::Value::String(body));
        json["Resources"]["Setting"]["Properties"]["Value"].as_str().map(str::to_owned)
    };

    // Release 0 on a good network, and a count of the calls an update makes.
    let proxy = FaultProxy::start(&moto.endpoint);
    std::fs::write(repo.path().join("cfn/setting.yaml"), template("v0")).unwrap();
    let out = deploy(repo.path(), &support::infra_run(repo.path(), "run-0"), &moto.endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::write(repo.path().join("cfn/setting.yaml"), template("v1")).unwrap();
    proxy.forget();
    let out = deploy(repo.path(), &support::infra_run(repo.path(), "run-1"), &proxy.endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let calls = proxy.seen();
    assert!(calls.len() >= 5, "an update makes its calls through the proxy: {calls:#?}");
    let stack_name = format!("{name}-dev");

    let mut version = 1;
    let mut failed = 0;
    for (n, call) in calls.iter().enumerate() {
        for fault in faults_for(call) {
            version += 1;
            let value = format!("v{version}");
            std::fs::write(repo.path().join("cfn/setting.yaml"), template(&value)).unwrap();
            // The call and the SDK's two retries of it.
            proxy.set(vec![Rule { matching: None, at: vec![n + 1, n + 2, n + 3], fault: fault.clone() }]);
            proxy.forget();
            let cut = deploy(repo.path(), &support::infra_run(repo.path(), &format!("run-{version}")), &proxy.endpoint);
            proxy.clear();
            let said = text(&cut);
            let case = format!("{fault:?} at call {} ({call}): {said}\nproxy: {:#?}", n + 1, proxy.seen());
            let (status, left) = stack(&cf, &stack_name).await;
            assert!(!status.ends_with("_IN_PROGRESS"), "the stack is left settled, not {status}: {case}");
            assert!(left.is_empty(), "change sets left behind {left:?}: {case}");
            match cut.status.code() {
                Some(0) => {
                    assert_eq!(
                        deployed().await.as_deref(),
                        Some(value.as_str()),
                        "a green run deployed the change: {case}"
                    );
                }
                // 2 when the cut came before anything changed (a preflight call: the bucket, the
                // stack's state), 1 once the deploy had begun.
                Some(1 | 2) => {
                    failed += 1;
                    let error = said.lines().filter(|l| l.starts_with("stack-deployer:")).count();
                    assert!(error >= 1, "a failure says so in a line of its own: {case}");
                    // The next run, on a good network, deploys the change.
                    let again = deploy(
                        repo.path(),
                        &support::infra_run(repo.path(), &format!("run-{version}-again")),
                        &proxy.endpoint,
                    );
                    assert_eq!(again.status.code(), Some(0), "{case}\nagain: {}", text(&again));
                    assert_eq!(deployed().await.as_deref(), Some(value.as_str()), "{case}");
                }
                other => panic!("exit {other:?}: {case}"),
            }
        }
    }
    // The faults were felt: some runs failed rather than every call being retried silently.
    assert!(failed > 0, "no fault made a run fail: the proxy is not in the path");
}
