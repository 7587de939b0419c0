//! Automated rollback on the sample monorepo in its own emulator: release 2 fails dev's E2E,
//! and dev goes back to its previous release, through the `rollback --after-failed-check`
//! binary (as CodeBuild's E2E stage runs it) and through `cargo xtask pipeline`; what AWS
//! holds afterwards is compared with release 1's, and both runs' records are read.

mod support;
use support::{dev_state as state, output_text as text, rollback_binary};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use run_state::{FileStore, PIPELINE, ReleaseStore, RunDir, RunFile, Status, Step, StepRecord, Store};

/// `cargo xtask pipeline --approve` (E2E runs after the approval), against the emulator.
fn pipeline(repo: &Path, endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--repo"])
        .arg(repo)
        .args(["--endpoint-url", endpoint, "--approve", "--approver", "ci-bot"])
        .output()
        .unwrap()
}

fn store(repo: &Path) -> FileStore {
    FileStore::open(&repo.join(".pipeline")).unwrap()
}

fn releases(repo: &Path) -> Vec<run_state::Release> {
    store(repo).releases("dev").unwrap()
}

fn find<'a>(records: &'a [StepRecord], component: &str, step: Step) -> Option<&'a StepRecord> {
    records.iter().find(|r| r.component == component && r.step == step)
}

/// The sample's pipeline.toml with `rollback_on` for dev (or without it).
fn config(repo: &Path, rollback_on: bool) -> String {
    let text = std::fs::read_to_string(support::root().join("fixtures/monorepo/pipeline.toml")).unwrap();
    let dev = "[deploy.environments.dev]\nregion = \"us-east-1\"\n";
    assert!(text.contains(dev));
    let wanted = if rollback_on { text.replace(dev, &format!("{dev}rollback_on = [\"e2e\"]\n")) } else { text };
    std::fs::write(repo.join("pipeline.toml"), &wanted).unwrap();
    wanted
}

/// Release 2: the root template gains a resource (when `template`), the API handler's code
/// changes, and the API's end-to-end check fails.
fn break_release_2(repo: &test_support::GitRepo, template: bool) -> String {
    let root = repo.path();
    if template {
        let master = std::fs::read_to_string(root.join("cfn/master.yaml")).unwrap();
        // A resource moto models fully (created on the update, deleted on the rollback). Not an
        // SSM parameter: moto creates an unnamed one again on each read of the stack's resources
        // and fails, so every DescribeStackResource of the root stack answers an empty 500 (a named
        // one fails the second rollback's delete); nor a WaitConditionHandle, which moto leaves
        // unmodelled (None among the stack's resources: the same 500s, in some runs).
        let marker = "Resources:\n  ReleaseMarker:\n    Type: AWS::SNS::Topic\n";
        repo.write("cfn/master.yaml", &master.replace("Resources:\n", marker));
    }
    let handler = std::fs::read_to_string(root.join("lambda/api-handler/index.py")).unwrap();
    repo.write("lambda/api-handler/index.py", &format!("{handler}\n# release 2\n"));
    repo.write("tests/e2e/api_smoke.py", "import sys\nsys.exit(\"release 2 breaks the API\")\n");
    repo.commit_all("release 2: a handler change and a failing API")
}

/// The failed run's own records: its E2E failed, its `pipeline` deploy step failed naming the
/// check and the rollback, production never reached; the rollback's run records each component
/// rolled back with the reason; dev's releases end with the rollback's.
fn assert_recorded(root: &Path, failed_run: &str, release1: &str, expected_line: &str) -> String {
    let store = store(root);
    let records = store.run(failed_run).unwrap();
    let e2e = find(&records, "api-handler", Step::E2e).expect("E2E recorded");
    assert_eq!(e2e.status, Status::Failed, "{records:#?}");
    let marker = find(&records, PIPELINE, Step::Deploy).expect("the rollback in the failed run");
    assert_eq!(marker.status, Status::Failed, "the run stays red: {records:#?}");
    let said = marker.details.error.clone().unwrap_or_default();
    assert!(said.contains(expected_line), "{said}");
    let last = releases(root).pop().unwrap();
    let origin = last.rollback.clone().expect("the rollback's release");
    assert_eq!((origin.to.as_str(), origin.from.as_str()), (release1, failed_run));
    let rolled = store.run(&last.id).unwrap();
    let infra = find(&rolled, "infra", Step::Deploy).expect("the rollback's run");
    assert_eq!(infra.status, Status::Passed, "{rolled:#?}");
    let note = infra.details.note.clone().unwrap_or_default();
    assert!(note.contains(&format!("automatic: e2e failed in run {failed_run}")), "{note}");
    last.id
}

/// Each test deploys the whole sample more than once: two at a time made the emulators answer
/// reads of a stack under update with empty 500s (`xtask/tests/rollback.rs`). One at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Release 1 deployed (dev and prod), release 2 fails dev's E2E:
/// - without `rollback_on`, the pipeline and `rollback --after-failed-check` change nothing;
/// - with it, the binary refuses while a deploy holds the stack's lock and while release 1's
///   template is gone from the bucket (exit 2, nothing changed), then rolls dev back: each CodeSha256, the root template and its parameters are
///   release 1's, both runs record it; asked again, it says dev no longer runs that release;
/// - with `rollback_on` committed, `cargo xtask pipeline` rolls dev back by itself, its run
///   red, its report (the notification's body) naming the failed check and the rollback.
#[test]
#[allow(clippy::print_stderr)] // the rollback's wall time, shown with --nocapture
fn a_failing_e2e_rolls_dev_back_to_its_previous_release() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let moto = test_support::Moto::start();
    let endpoint = moto.endpoint.as_str();
    let repo = test_support::sample_monorepo();
    let root = repo.path();

    let out = pipeline(root, endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let release1 = releases(root).pop().expect("release 1").id;
    let state1 = state(endpoint);

    // Release 2 without rollback_on: red, nothing rolled back.
    let commit2 = break_release_2(&repo, true);
    let out = pipeline(root, endpoint);
    assert_eq!(out.status.code(), Some(1), "E2E fails: {}", text(&out));
    assert!(text(&out).contains("does not roll back on it"), "{}", text(&out));
    let run2 = RunDir::latest(&root.join(".pipeline")).unwrap().run_id;
    let state2 = state(endpoint);
    assert_ne!(state2.template, state1.template, "release 2 changed the template");
    assert_ne!(state2.code, state1.code, "release 2 changed a function");
    assert_eq!(releases(root).pop().unwrap().commit, commit2);
    let after = rollback_binary(root, endpoint, &["--env", "dev", "--after-failed-check", "--run", &run2]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    assert!(text(&after).contains("does not roll back on it"), "{}", text(&after));
    assert_eq!(state(endpoint), state2, "nothing changed");

    // rollback_on = ["e2e"] (the CodeBuild path: the binary reads the config as the build has it).
    config(root, true);
    let lock = "deploy/us-east-1/pipeline-dashboard-dev";
    store(root).acquire_lock(lock, "run another-deploy", std::time::Duration::from_secs(600)).unwrap();
    let locked = rollback_binary(root, endpoint, &["--env", "dev", "--after-failed-check", "--run", &run2]);
    assert_eq!(locked.status.code(), Some(2), "{}", text(&locked));
    let last = String::from_utf8_lossy(&locked.stderr).lines().last().unwrap_or_default().to_owned();
    assert!(last.starts_with("rollback: ") && last.contains("is locked by run another-deploy"), "{}", text(&locked));
    assert_eq!(state(endpoint), state2, "refused: nothing changed");
    store(root).release_lock(lock, "run another-deploy").unwrap();

    // Release 1's root template gone from the artifact bucket (expired): refused naming it.
    let release = releases(root).into_iter().find(|r| r.id == release1).unwrap();
    let (bucket, key) = (release.artifact_bucket.clone().unwrap(), release.stacks["master"].template_key.clone());
    let env = support::pipeline_env(endpoint);
    let aside = format!("{key}.aside");
    let copy = |from: &str, to: &str| {
        let source = format!("{bucket}/{from}");
        support::aws_json(&["s3api", "copy-object", "--bucket", &bucket, "--copy-source", &source, "--key", to], &env)
    };
    copy(&key, &aside);
    support::aws_json(&["s3api", "delete-object", "--bucket", &bucket, "--key", &key], &env);
    let expired = rollback_binary(root, endpoint, &["--env", "dev", "--after-failed-check", "--run", &run2]);
    assert_eq!(expired.status.code(), Some(2), "{}", text(&expired));
    let gone = format!("release `{release1}` of `dev` cannot be restored: template s3://{bucket}/{key} is gone");
    assert!(text(&expired).contains(&gone), "{}", text(&expired));
    assert_eq!(state(endpoint), state2, "refused: nothing changed");
    copy(&aside, &key);

    let started = std::time::Instant::now();
    let after = rollback_binary(root, endpoint, &["--env", "dev", "--after-failed-check", "--run", &run2]);
    eprintln!("rollback --after-failed-check (dev, emulator): {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(after.status.code(), Some(0), "{}", text(&after));
    let back = state(endpoint);
    assert_eq!(back.code, state1.code, "{}", text(&after));
    assert_eq!((&back.template, &back.parameters), (&state1.template, &state1.parameters), "{}", text(&after));
    let line = format!("e2e failed in run {run2}: `dev` rolled back from release {run2} to release {release1}");
    assert!(text(&after).contains(&line), "{}", text(&after));
    let rollback3 = assert_recorded(root, &run2, &release1, &line);
    let again = rollback_binary(root, endpoint, &["--env", "dev", "--after-failed-check", "--run", &run2]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("no longer runs"), "{}", text(&again));
    assert_eq!(state(endpoint), back);

    // The pipeline's own path: rollback_on committed (a config change redeploys everything).
    repo.commit_all("dev rolls back when its E2E fails");
    let out = pipeline(root, endpoint);
    assert_eq!(out.status.code(), Some(1), "red: {}", text(&out));
    // The newest run folder is the rollback's: the failed run's is the release before its.
    let all = releases(root);
    let run4 = RunDir::open(&run_state::runs_dir(&root.join(".pipeline")).join(&all[all.len() - 2].id)).unwrap();
    let line = format!(
        "e2e failed in run {}: `dev` rolled back from release {} to release {rollback3}",
        run4.run_id, run4.run_id
    );
    assert!(text(&out).contains(&line), "{}", text(&out));
    let now = state(endpoint);
    assert_eq!(now.code, state1.code, "{}", text(&out));
    assert_eq!((&now.template, &now.parameters), (&state1.template, &state1.parameters), "{}", text(&out));
    assert_recorded(root, &run4.run_id, &rollback3, &line);
    let records = store(root).run(&run4.run_id).unwrap();
    let prod = find(&records, PIPELINE, Step::ProdDeploy).expect("production refused");
    assert_eq!(prod.status, Status::Skipped, "{records:#?}");
    let report = std::fs::read_to_string(run4.file(RunFile::ReportMarkdown)).unwrap();
    assert!(
        report.contains("rolled back from release") && report.contains("| api-handler | e2e | ❌ failed"),
        "{report}"
    );
    assert!(text(&out).contains("notified failure"), "{}", text(&out));
}

/// Production as its role reaches it: each function's CodeSha256, the root template, and the
/// site's root document.
fn prod_state(endpoint: &str, site_bucket: &str) -> (BTreeMap<String, String>, String, String) {
    let env = support::prod_env(endpoint, &support::SAMPLE_PROD);
    let json = |args: &[&str]| support::aws_json(args, &env);
    let code = support::function_code(&env);
    let template =
        json(&["cloudformation", "get-template", "--stack-name", support::SAMPLE_PROD.stack])["TemplateBody"]
            .to_string();
    let head = json(&["s3api", "head-object", "--bucket", site_bucket, "--key", "index.html"]);
    (code, template, head["ETag"].as_str().unwrap_or_default().to_owned())
}

/// Production's site check fails after its deploy (its bucket's public access block is gone:
/// a change outside the pipeline) and prod's `rollback_on` lists `site-check`: `cargo xtask
/// pipeline` rolls production back to release 1 without asking an approval (that release was
/// approved), the run red, the rollback's run saying why, production's success mark at release
/// 1's commit.
#[test]
fn a_failing_production_site_check_rolls_production_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let moto = test_support::Moto::start();
    let endpoint = moto.endpoint.as_str();
    let repo = test_support::sample_monorepo();
    let root = repo.path();
    let text_now = std::fs::read_to_string(root.join("pipeline.toml")).unwrap();
    let prod = "[deploy.environments.prod]\nregion = \"us-east-1\"\n";
    assert!(text_now.contains(prod));
    repo.write("pipeline.toml", &text_now.replace(prod, &format!("{prod}rollback_on = [\"site-check\"]\n")));
    repo.commit_all("production rolls back when its site check fails");

    let out = pipeline(root, endpoint);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p1 = store(root).releases("prod").unwrap().pop().expect("production's release 1");
    let site_bucket = p1.site.as_ref().expect("the site's part").bucket.clone();
    let state1 = prod_state(endpoint, &site_bucket);

    let handler = std::fs::read_to_string(root.join("lambda/api-handler/index.py")).unwrap();
    repo.write("lambda/api-handler/index.py", &format!("{handler}\n# release 2\n"));
    let html = std::fs::read_to_string(root.join("frontend/src/index.html")).unwrap();
    repo.write("frontend/src/index.html", &html.replace("</body>", "<p>release 2</p></body>"));
    repo.commit_all("release 2: a handler and a page change");
    let env = support::prod_env(endpoint, &support::SAMPLE_PROD);
    support::aws_json(&["s3api", "delete-public-access-block", "--bucket", &site_bucket], &env);

    let out = pipeline(root, endpoint);
    assert_eq!(out.status.code(), Some(1), "red: {}", text(&out));
    let prod_releases = store(root).releases("prod").unwrap();
    let [_, p2, p3] = <[run_state::Release; 3]>::try_from(prod_releases).expect("release 1, 2 and the rollback's");
    let line =
        format!("site-check failed in run {}: `prod` rolled back from release {} to release {}", p2.id, p2.id, p1.id);
    assert!(text(&out).contains(&line), "{}", text(&out));
    assert_eq!(prod_state(endpoint, &site_bucket), state1, "{}", text(&out));
    let store = store(root);
    let records = store.run(&p2.id).unwrap();
    let check = records.iter().find(|r| r.step == Step::ProdDast).expect("prod's site check");
    assert_eq!(check.status, Status::Failed, "{records:#?}");
    let marker = find(&records, PIPELINE, Step::ProdDeploy).expect("the rollback in the failed run");
    let said = marker.details.error.clone().unwrap_or_default();
    assert!(marker.status == Status::Failed && said.starts_with(&line), "{records:#?}");
    let rolled = store.run(&p3.id).unwrap();
    assert!(rolled.iter().all(|r| r.step != Step::Approval), "no approval asked: {rolled:#?}");
    assert!(
        rolled.iter().any(|r| r.step == Step::ProdDeploy
            && r.status == Status::Passed
            && r.details.note.as_deref().is_some_and(|n| n.contains("automatic: site-check failed"))),
        "{rolled:#?}"
    );
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, p1.commit);
}

/// The CodeBuild path as the buildspecs run it (`cargo xtask codebuild`, one stage at a time):
/// release 1 through every stage to production, then release 2, whose E2E fails, through the
/// E2E stage: the stage fails, and its `post_build` (`rollback --env dev --after-failed-check`)
/// has put dev back to release 1's code and root template, recorded in the run and in a
/// rollback run of its own.
#[test]
fn the_e2e_stage_in_codebuild_rolls_dev_back_after_a_failing_e2e() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let repo = support::rehearsal_sample();
    let root = repo.path();
    config(root, true);
    repo.git(&["commit", "-q", "-a", "--amend", "--no-edit"]);
    let moto = test_support::Moto::start();
    let endpoint = moto.endpoint.as_str();
    let env = support::rehearsal_env(endpoint, "xtask-auto-rollback");
    support::codebuild_run(root, &env);
    let state1 = state(endpoint);

    // The code only (the template's change and its rollback are covered by the pipeline path).
    let commit2 = break_release_2(&repo, false);
    let rehearsal = support::Rehearsal::new(root, env.clone());
    let mut e2e = None;
    for &(buildspec, previous) in support::CODEBUILD_ORDER {
        let (ok, out, text) = rehearsal.stage(buildspec, previous);
        if buildspec == "e2e.yml" {
            assert!(!ok, "the E2E stage stays failed: {text}");
            assert!(text.contains("`dev` rolled back from release"), "{text}");
            e2e = Some(out);
            break;
        }
        assert!(ok, "{buildspec}: {text}");
    }
    let now = state(endpoint);
    assert_eq!(now.code, state1.code);
    assert_eq!((&now.template, &now.parameters), (&state1.template, &state1.parameters));
    let store = FileStore::open(&e2e.unwrap().join("artifacts/.pipeline")).unwrap();
    let releases = store.releases("dev").unwrap();
    let [.., failed, rolled] = releases.as_slice() else { panic!("{releases:#?}") };
    assert_eq!(failed.commit, commit2);
    assert_eq!(rolled.rollback.as_ref().map(|r| r.from.as_str()), Some(failed.id.as_str()));
    let records = store.run(&failed.id).unwrap();
    let marker = find(&records, PIPELINE, Step::Deploy).expect("the rollback in the failed run");
    assert!(marker.details.error.as_deref().is_some_and(|e| e.starts_with("e2e failed in run")), "{records:#?}");
}
