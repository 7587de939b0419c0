//! Artifacts kept for rollback, through the binary against the emulator (moto keeps object
//! tags as S3 does): with `[deploy] keep_releases = 2`, after three releases the templates only
//! the oldest release needs (its master and the nested template it alone used) are tagged
//! `pipeline-retention=expirable`, and everything the two kept releases need (including the
//! nested template all three share) is tagged `release`. A later release that needs an
//! expirable template again tags it back.

use std::collections::BTreeMap;
use std::path::Path;

use stack_deployer::retention::{EXPIRABLE, KEPT, TAG_KEY};

mod support;
use support::text;

fn write(repo: &Path, path: &str, body: &str) {
    std::fs::write(repo.join(path), body).unwrap();
}

/// The master (a topic named `label`) with two nested stacks: `shared` never changes, `child`
/// holds a topic named `child`.
fn templates(repo: &Path, label: &str, child: &str) {
    write(
        repo,
        "cfn/master.yaml",
        &format!(
            "Resources:\n  {label}:\n    Type: AWS::SNS::Topic\n  Shared:\n    Type: AWS::CloudFormation::Stack\n    Properties:\n      TemplateURL: ./shared.yaml\n  Child:\n    Type: AWS::CloudFormation::Stack\n    Properties:\n      TemplateURL: ./child.yaml\n"
        ),
    );
    write(repo, "cfn/shared.yaml", "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n");
    write(repo, "cfn/child.yaml", &format!("Resources:\n  {child}:\n    Type: AWS::SNS::Topic\n"));
}

/// Every object of the bucket under `prefix/templates/` with its retention tag (None: untagged).
async fn tags(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> BTreeMap<String, Option<String>> {
    let listed = s3.list_objects_v2().bucket(bucket).prefix(format!("{prefix}/templates/")).send().await.unwrap();
    let mut tags = BTreeMap::new();
    for object in listed.contents() {
        let key = object.key().unwrap().to_string();
        let tagging = s3.get_object_tagging().bucket(bucket).key(&key).send().await.unwrap();
        let value = tagging.tag_set().iter().find(|t| t.key() == TAG_KEY).map(|t| t.value().to_string());
        tags.insert(key, value);
    }
    tags
}

/// The key of a release's master template.
fn master_of(store: &run_state::FileStore, id: &str) -> String {
    let release = run_state::release::ReleaseStore::releases(store, "dev")
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no release {id}"));
    release.stacks["master"].template_key.clone()
}

#[tokio::test]
async fn after_more_releases_than_kept_only_the_oldest_ones_artifacts_are_expirable() {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let name = format!("sd-retain-{}", std::process::id());
    let bucket = format!("{name}-artifacts");
    let s3 = aws_target::s3(&config, None);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    write(
        repo.path(),
        "pipeline.toml",
        &format!(
            "[deploy]\nartifact_bucket = \"{bucket}\"\nkey_prefix = \"app\"\nkeep_releases = 2\n\n[deploy.stacks.master]\ntemplate = \"cfn/master.yaml\"\nstack_name = \"{name}-{{env}}\"\ncomponents = [\"infra\"]\n\n[deploy.environments.dev]\nregion = \"us-east-1\"\n"
        ),
    );
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();

    // Release 1 (its own child template), then 2 and 3 (another child, shared by both).
    let mut masters = Vec::new();
    for (run_id, label, child) in [("run-1", "One", "ChildA"), ("run-2", "Two", "ChildB"), ("run-3", "Three", "ChildB")]
    {
        templates(repo.path(), label, child);
        let run = support::infra_run(repo.path(), run_id);
        let out = support::deployer_in("dev", &moto.endpoint, repo.path(), &run, &[]);
        assert_eq!(out.status.code(), Some(0), "{run_id}: {}{}", text(&out.stdout), text(&out.stderr));
        masters.push(master_of(&store, run_id));
        if run_id == "run-3" {
            let stdout = text(&out.stdout);
            assert!(stdout.contains("artifacts kept for the last 2 release(s) per environment"), "{stdout}");
        }
    }
    let tags = tags(&s3, &bucket, "app").await;
    let with = |value: &str| -> Vec<String> {
        tags.iter().filter(|(_, v)| v.as_deref() == Some(value)).map(|(k, _)| k.clone()).collect()
    };
    let (expirable, kept) = (with(EXPIRABLE), with(KEPT));
    // Release 1's master and its child A: expirable; nothing else is.
    assert_eq!(expirable.len(), 2, "{tags:#?}");
    assert!(expirable.contains(&masters[0]), "{tags:#?}");
    assert!(expirable.iter().any(|k| k.starts_with("app/templates/child-")), "{tags:#?}");
    // Releases 2 and 3: their masters, child B and the shared template are kept.
    assert_eq!(kept.len(), 4, "{tags:#?}");
    assert!(kept.contains(&masters[1]) && kept.contains(&masters[2]), "{tags:#?}");
    assert!(kept.iter().any(|k| k.starts_with("app/templates/shared-")), "{tags:#?}");
    assert!(kept.iter().any(|k| k.starts_with("app/templates/child-")), "{tags:#?}");
    assert!(tags.values().all(Option::is_some), "every template is classified: {tags:#?}");

    // Release 4 goes back to release 1's templates: they are kept again, and release 2's
    // master (needed only by it now) becomes expirable.
    templates(repo.path(), "One", "ChildA");
    let run = support::infra_run(repo.path(), "run-4");
    let out = support::deployer_in("dev", &moto.endpoint, repo.path(), &run, &[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let again = self::tags(&s3, &bucket, "app").await;
    assert_eq!(again[&masters[0]].as_deref(), Some(KEPT), "{again:#?}");
    assert_eq!(again[&masters[1]].as_deref(), Some(EXPIRABLE), "{again:#?}");
    assert_eq!(again[&masters[2]].as_deref(), Some(KEPT), "{again:#?}");
}
