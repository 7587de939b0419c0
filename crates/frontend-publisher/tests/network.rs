//! A publish on a flaky network, through the binary against the emulator, with the fault proxy
//! of test-support between them: for every call of a publish of release 2 over release 1, in
//! turn, the call and the SDK's retries of it are cut after they reached the emulator. Whatever
//! the run says, the site in the bucket is always whole: its `index.html` is release 1's or
//! release 2's, and every file it references is there; and the next publish, on a good
//! network, leaves release 2 whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use run_state::{DeployedStack, RunDir, StackOutputs, Status, Step, StepRecord, Store};
use test_support::{Fault, FaultProxy, Rule};

const BIN: &str = env!("CARGO_BIN_EXE_frontend-publisher");

fn config(bucket: &str) -> String {
    format!(
        "[publish]\ncomponent = \"frontend\"\ndist = \"dist\"\nbucket = \"{bucket}\"\n\
         [publish.runtime_config]\nfiles = [\"aws-config.js\"]\nstack = \"master\"\nkeys = {{ apiUrl = \"ApiUrl\" }}\nregion_key = \"region\"\n\n\
         [deploy]\nartifact_bucket = \"artifacts-{{env}}\"\n[deploy.stacks.master]\ntemplate = \"cfn/master.yaml\"\nstack_name = \"site-{{env}}\"\ncomponents = [\"frontend\"]\n\
         [deploy.environments.dev]\nregion = \"us-east-1\"\n"
    )
}

/// Release `n` of the site in `dist`: its HTML names its own asset.
fn build(root: &Path, n: usize) -> String {
    let dist = root.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    let html = format!(
        "<html><script src=\"/aws-config.js\"></script><script src=\"/assets/app.v{n}.js\"></script>release {n}</html>"
    );
    std::fs::write(dist.join("index.html"), &html).unwrap();
    std::fs::write(dist.join(format!("assets/app.v{n}.js")), format!("console.log({n})")).unwrap();
    html
}

/// A run of the repository whose diff changed the site, validate passed, with dev's outputs.
fn run(root: &Path, id: &str) -> RunDir {
    let run = RunDir::create(&root.join(".pipeline"), id).unwrap();
    let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"frontend\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let stack = DeployedStack {
        stack_name: "site-dev".into(),
        region: "us-east-1".into(),
        stack_id: None,
        outputs: BTreeMap::from([("ApiUrl".to_string(), "https://api.example.test".to_string())]),
    };
    let outputs = StackOutputs {
        environments: BTreeMap::from([("dev".to_string(), BTreeMap::from([("master".to_string(), stack)]))]),
    };
    outputs.merge_into(&run).unwrap();
    let store = run_state::FileStore::open(&root.join(".pipeline")).unwrap();
    store.record(&StepRecord::new(id, "abc", run_state::PIPELINE, Step::Validate, Status::Passed)).unwrap();
    run
}

fn publish(root: &Path, run: &RunDir, endpoint: &str) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["publish", "--env", "dev", "--endpoint-url", endpoint, "--region", "us-east-1"])
        .arg("--repo")
        .arg(root)
        .arg("--run-dir")
        .arg(&run.path);
    test_support::only_test_credentials(&mut command).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The site as the bucket serves it: its `index.html`, and the files it references that are
/// missing.
async fn served(s3: &aws_sdk_s3::Client, bucket: &str) -> (String, Vec<String>) {
    let html = s3.get_object().bucket(bucket).key("index.html").send().await.unwrap();
    let html = String::from_utf8(html.body.collect().await.unwrap().to_vec()).unwrap();
    let mut missing = Vec::new();
    for reference in html.split("src=\"/").skip(1).filter_map(|r| r.split('"').next()) {
        if s3.head_object().bucket(bucket).key(reference).send().await.is_err() {
            missing.push(reference.to_string());
        }
    }
    (html, missing)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_cut_at_any_call_leaves_one_whole_release_and_the_next_completes_it() {
    let moto = test_support::Moto::shared();
    let config_sdk = moto.sdk_config().await;
    let s3 = aws_target::s3(&config_sdk, None);
    let bucket = format!("fp-network-{}", std::process::id());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(root.join("pipeline.toml"), config(&bucket)).unwrap();

    // Release 1 on a good network; release 2 once through the proxy, to count its calls.
    let proxy = FaultProxy::start(&moto.endpoint);
    build(&root, 1);
    let out = publish(&root, &run(&root, "run-1"), &moto.endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let release = build(&root, 2);
    proxy.forget();
    let out = publish(&root, &run(&root, "run-2"), &proxy.endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let calls = proxy.seen();
    assert!(calls.iter().any(|c| c.starts_with("PUT ")), "the publish uploads through the proxy: {calls:#?}");
    assert_eq!(served(&s3, &bucket).await, (release.clone(), Vec::new()));
    let mut previous = release;

    let mut failed = 0;
    for (n, call) in calls.iter().enumerate() {
        // A release that differs from what the bucket serves, cut at call n + 1.
        let number = n + 3;
        let release = build(&root, number);
        proxy.set(vec![Rule { matching: None, at: vec![n + 1, n + 2, n + 3], fault: Fault::ResetAfter }]);
        proxy.forget();
        let cut = publish(&root, &run(&root, &format!("run-{number}")), &proxy.endpoint);
        proxy.clear();
        let case = format!("cut at call {} ({call}): {}\nproxy: {:#?}", n + 1, text(&cut), proxy.seen());
        let (html, missing) = served(&s3, &bucket).await;
        assert!(missing.is_empty(), "the served HTML references files that are not there {missing:?}: {case}");
        assert!(html == previous || html == release, "the bucket serves neither release whole: {html}: {case}");
        match cut.status.code() {
            Some(0) => assert_eq!(html, release, "a green publish serves its release: {case}"),
            Some(1 | 2) => {
                failed += 1;
                let again = publish(&root, &run(&root, &format!("run-{number}-again")), &proxy.endpoint);
                assert_eq!(again.status.code(), Some(0), "{case}\nagain: {}", text(&again));
                assert_eq!(served(&s3, &bucket).await, (release.clone(), Vec::new()), "{case}");
            }
            other => panic!("exit {other:?}: {case}"),
        }
        previous = release;
    }
    assert!(failed > 0, "no cut made a publish fail: the proxy is not in the path");
}
