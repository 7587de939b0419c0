//! The runtime config written from a template file of the repository (`[publish.runtime_config]
//! templates`): JS or JSON with `${Output}`, `${STACK.Output}` and `${AWS::Region}`
//! placeholders filled from the run's stack outputs, next to a file made from nested TOML keys.
//! Through the `frontend-publisher` binary against moto: what the bucket holds, a placeholder
//! naming a missing output (file:line, exit 2, nothing uploaded), and a secret in a filled value
//! (refused before any upload).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use run_state::{DeployedStack, FileStore, RunDir, StackOutputs, StageContext, Status, Step, Store};

mod support;
use support::keys;

const TEMPLATE: &str = "// The site's runtime config: filled by the pipeline at deploy time.\n\
window.AWS_CONFIG = {\n\
  Auth: { Cognito: { userPoolId: \"${UserPoolId}\", userPoolClientId: \"${auth.ClientId}\", region: \"${AWS::Region}\" } },\n\
  API: { REST: { endpoint: '${ApiEndpoint}' } },\n\
  note: \"$${not a placeholder}\",\n\
};\n";

/// A site and a config in a temporary repository, with a run whose deploy wrote `outputs`.
struct Site {
    dir: tempfile::TempDir,
    run: RunDir,
}

impl Site {
    fn new(bucket: &str, template: &str, master: &[(&str, &str)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("pipeline.toml"),
            format!(
                "[publish]\ncomponent = \"frontend\"\ndist = \"dist\"\nbucket = \"{bucket}\"\n\n\
                 [publish.runtime_config]\nstack = \"master\"\nfiles = [\"aws-config.json\"]\n\
                 templates = {{ \"assets/aws-config.js\" = \"config/aws-config.template.js\" }}\n\n\
                 [publish.runtime_config.keys.API.REST]\nendpoint = \"ApiEndpoint\"\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::write(root.join("config/aws-config.template.js"), template).unwrap();
        std::fs::create_dir_all(root.join("dist/assets")).unwrap();
        std::fs::write(root.join("dist/index.html"), "<!doctype html><script src=\"assets/aws-config.js\"></script>")
            .unwrap();
        let context =
            StageContext::open(&run_state::StageOptions { repo: Some(root.to_path_buf()), ..Default::default() })
                .unwrap();
        let run = RunDir::create(&context.state_dir, "run-1").unwrap();
        let stack = |name: &str, values: &[(&str, &str)]| DeployedStack {
            stack_name: format!("{name}-dev"),
            region: "eu-west-1".into(),
            stack_id: None,
            outputs: values.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let stacks = BTreeMap::from([
            ("master".to_string(), stack("master", master)),
            ("auth".to_string(), stack("auth", &[("ClientId", "client-123")])),
        ]);
        StackOutputs { environments: BTreeMap::from([("dev".to_string(), stacks)]) }.merge_into(&run).unwrap();
        let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"frontend\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
        run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
        let store = context.file_store().unwrap();
        let validated = run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed);
        store.record(&validated).unwrap();
        Site { dir, run }
    }

    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }

    fn publish(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_frontend-publisher"))
            .args(["publish", "--env", "dev", "--region", "us-east-1"])
            .args(["--endpoint-url", &test_support::Moto::shared().endpoint])
            .args(["--repo".as_ref(), self.root().as_os_str()])
            .args(["--run-dir".as_ref(), self.run.path.as_os_str()])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    }

    fn deploy_record(&self) -> Option<run_state::StepRecord> {
        let store = FileStore::open(&self.root().join(".pipeline")).unwrap();
        store.run("run-1").unwrap().into_iter().find(|r| r.step == Step::Deploy)
    }
}

async fn s3_with(bucket: &str) -> aws_sdk_s3::Client {
    let config = test_support::Moto::shared().sdk_config().await;
    let s3 = aws_target::s3(&config, None);
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    s3
}

async fn object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (String, Option<String>) {
    let out = s3.get_object().bucket(bucket).key(key).send().await.unwrap();
    let cache_control = out.cache_control().map(str::to_owned);
    (String::from_utf8(out.body.collect().await.unwrap().into_bytes().to_vec()).unwrap(), cache_control)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const MASTER: [(&str, &str); 2] =
    [("ApiEndpoint", "https://api.example.com/prod's"), ("UserPoolId", "eu-west-1_Ab\"c")];

#[tokio::test]
async fn a_template_of_the_repository_is_filled_from_the_outputs_and_published_uncached() {
    let s3 = s3_with("rt-template").await;
    let site = Site::new("rt-template", TEMPLATE, &MASTER);

    let dry = site.publish(&["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(keys(&s3, "rt-template").await.is_empty(), "a dry run uploads nothing");

    let out = site.publish(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (script, cache_control) = object(&s3, "rt-template", "assets/aws-config.js").await;
    // Each placeholder filled, escaped for the string it stands in; `$${` kept as `${`.
    assert_eq!(
        script,
        "// The site's runtime config: filled by the pipeline at deploy time.\n\
         window.AWS_CONFIG = {\n\
           Auth: { Cognito: { userPoolId: \"eu-west-1_Ab\\\"c\", userPoolClientId: \"client-123\", region: \"eu-west-1\" } },\n\
           API: { REST: { endpoint: 'https://api.example.com/prod\\u0027s' } },\n\
           note: \"${not a placeholder}\",\n\
         };\n"
    );
    assert_eq!(cache_control.as_deref(), Some(frontend_publisher::NO_CACHE));
    // The file made from the nested TOML keys, beside it.
    let (json, cache_control) = object(&s3, "rt-template", "aws-config.json").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json, serde_json::json!({ "API": { "REST": { "endpoint": "https://api.example.com/prod's" } } }));
    assert_eq!(cache_control.as_deref(), Some(frontend_publisher::NO_CACHE));
    assert_eq!(site.deploy_record().map(|r| r.status), Some(Status::Passed));
}

#[tokio::test]
async fn a_placeholder_naming_a_missing_output_names_its_line_and_nothing_is_uploaded() {
    let s3 = s3_with("rt-missing").await;
    let template = TEMPLATE.replace("${auth.ClientId}", "${auth.IdentityPoolId}");
    let site = Site::new("rt-missing", &template, &MASTER);
    let out = site.publish(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end(),
        "frontend-publisher: config/aws-config.template.js:3: `${auth.IdentityPoolId}` names no output of the run's deploy; nothing was uploaded: stack `auth-dev` (`auth` in `dev`) has no output `IdentityPoolId`; add it to the template's Outputs or fix the name"
    );
    assert!(keys(&s3, "rt-missing").await.is_empty(), "nothing uploaded");
    assert_eq!(site.deploy_record().map(|r| r.status), Some(Status::Failed));

    // Text after `${` that is no placeholder is refused the same way, with its line.
    let site = Site::new("rt-missing", &TEMPLATE.replace("'${ApiEndpoint}'", "'${ApiEndpoint + 1}'"), &MASTER);
    let out = site.publish(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "frontend-publisher: config/aws-config.template.js:4: `${ApiEndpoint + 1}' } },` is not a placeholder;"
        ),
        "{}",
        stderr(&out)
    );
    assert!(keys(&s3, "rt-missing").await.is_empty(), "nothing uploaded");
}

#[tokio::test]
async fn a_secret_in_a_filled_value_is_refused_before_any_upload() {
    let s3 = s3_with("rt-secret").await;
    // The template names the value a secret; the stack outputs one (a high-entropy string).
    let master = [("ApiEndpoint", "https://api.example.com"), ("UserPoolId", "q7Zp3LmX9vT2kR8wYb4N")];
    let template = TEMPLATE.replace("userPoolId: \"${UserPoolId}\"", "clientSecret: \"${UserPoolId}\"");
    let site = Site::new("rt-secret", &template, &master);
    let out = site.publish(&[]);
    assert_eq!(out.status.code(), Some(1), "the publisher's own verdict: {}", stderr(&out));
    let message = stderr(&out);
    assert!(message.starts_with("frontend-publisher: the runtime config would publish a secret"), "{message}");
    assert!(message.contains("assets/aws-config.js:3:"), "{message}");
    assert!(!message.contains("q7Zp3LmX9vT2kR8wYb4N"), "the secret is never shown: {message}");
    assert!(keys(&s3, "rt-secret").await.is_empty(), "nothing uploaded");
}

#[test]
fn template_paths_are_checked_with_their_line() {
    let check = |templates: &str| {
        let text = format!(
            "[publish]\ncomponent = \"frontend\"\ndist = \"dist\"\nbucket = \"b\"\n[publish.runtime_config]\nstack = \"master\"\nfiles = [\"aws-config.json\"]\ntemplates = {templates}\n"
        );
        let config = pipeline_config::ConfigFile::from_text(Path::new("pipeline.toml"), &text);
        frontend_publisher::PublishConfig::from_config(&config).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(check("{ \"aws-config.js\" = \"config/t.js\" }"), Ok(()));
    let error = check("{ \"aws-config.js\" = \"../t.js\" }").unwrap_err();
    assert!(
        error.starts_with(
            "pipeline.toml:8: publish.runtime_config.templates.\"aws-config.js\": must be a file inside the monorepo"
        ),
        "{error}"
    );
    let error = check("{ \"aws-config.json\" = \"config/t.json\" }").unwrap_err();
    assert!(error.contains("is also in runtime_config.files"), "{error}");
}
