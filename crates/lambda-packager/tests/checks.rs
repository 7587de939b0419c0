//! What a real monorepo gets wrong before a deploy: a handler the zip lacks, two templates that
//! disagree, a runtime or architecture the template does not run, dependencies for another
//! Python or architecture, a dependencies folder that is not there. Each is one line naming the
//! function, the file and the fix, from the binary on a real run, and the run's `packages/` gets
//! nothing.

use std::path::Path;
use std::process::Command;

use lambda_packager::LambdaSettings;

mod support;
use support::{begin_run, build};

const HELLO: &str = "def handler(event, context):\n    return 1\n";

/// A git monorepo with component `hello` (everything), `fn/index.py`, the given config after
/// `[components.hello]`, and the given files, committed; and a run started on it.
fn monorepo(config: &str, files: &[(&str, &str)]) -> (test_support::GitRepo, run_state::RunDir) {
    let repo = test_support::GitRepo::new();
    repo.write("fn/index.py", HELLO);
    repo.write("pipeline.toml", &format!("[components.hello]\npaths = [\"**\"]\n\n{config}"));
    for (path, text) in files {
        repo.write(path, text);
    }
    repo.commit_all("monorepo");
    let run = begin_run(&repo);
    (repo, run)
}

/// Runs the binary on the latest run; gives the exit code and stderr.
fn package(repo: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lambda-packager")).arg("--repo").arg(repo).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The error line of a failed run (exit 2, one line), with nothing in the run's packages/.
fn refused(repo: &test_support::GitRepo, run: &run_state::RunDir) -> String {
    let (code, stderr) = package(repo.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let packages = run.packages_dir();
    let written: Vec<_> =
        std::fs::read_dir(&packages).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(written.is_empty(), "written to the run's packages/: {written:?}");
    stderr.trim_end().strip_prefix("lambda-packager: ").expect("named").to_string()
}

fn template(resource_type: &str, properties: &str) -> String {
    format!(
        "AWSTemplateFormatVersion: \"2010-09-09\"\nTransform: AWS::Serverless-2016-10-31\nResources:\n  HelloFunction:\n    Type: {resource_type}\n    Properties:\n{properties}"
    )
}

#[test]
fn a_handler_whose_module_is_not_in_the_zip_is_an_error_naming_the_handler_the_template_and_the_fix() {
    let cfn = template(
        "AWS::Lambda::Function",
        "      Runtime: python3.12\n      Handler: app.handler\n      Code:\n        S3Bucket: b\n        S3Key: hello.zip\n",
    );
    let (repo, run) = monorepo(
        "[lambda.functions.hello]\nsources = [\"fn\"]\ntemplate = \"cfn/app.yaml\"\nresource = \"HelloFunction\"\n",
        &[("cfn/app.yaml", &cfn)],
    );
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: handler `app.handler` (HelloFunction at cfn/app.yaml:8) needs `app.py` or `app/__init__.py` at the zip's root, and the zip has neither; fix the handler, or the function's `sources` in [lambda.functions.hello]"
    );

    // Fixed in the template: built, and recorded.
    repo.commit_files("fix", &[("cfn/app.yaml", &cfn.replace("app.handler", "index.handler"))]);
    begin_run(&repo);
    let (code, stderr) = package(repo.path());
    assert_eq!(code, Some(0), "{stderr}");

    // Dotted packages: `pkg.mod.handler` needs pkg/mod.py (or pkg/mod/__init__.py).
    let (repo, run) = monorepo(
        "[lambda.functions.hello]\nsources = [\"fn\"]\nhandler = \"pkg.mod.handler\"\n",
        &[("fn/pkg/__init__.py", ""), ("fn/pkg/other.py", HELLO)],
    );
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: handler `pkg.mod.handler` (pipeline.toml [lambda.functions.hello] handler) needs `pkg/mod.py` or `pkg/mod/__init__.py` at the zip's root, and the zip has neither; fix the handler, or the function's `sources` in [lambda.functions.hello]"
    );
    repo.commit_files("module", &[("fn/pkg/mod.py", HELLO)]);
    begin_run(&repo);
    assert_eq!(package(repo.path()).0, Some(0));
}

#[test]
fn two_templates_declaring_the_function_with_different_handlers_are_an_error_naming_both() {
    // Found by CodeUri: both SAM templates deploy `fn/`, the function's source.
    let sam = |handler: &str| {
        template(
            "AWS::Serverless::Function",
            &format!("      Runtime: python3.12\n      Handler: {handler}\n      CodeUri: ../fn/\n"),
        )
    };
    let (repo, run) = monorepo(
        "[lambda]\ntemplates = [\"sam/*.yaml\"]\n\n[lambda.functions.hello]\nsources = [\"fn\"]\n",
        &[("sam/api.yaml", &sam("index.handler")), ("sam/local.yaml", &sam("index.main"))],
    );
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: handler `index.handler` (HelloFunction at sam/api.yaml:8) and handler `index.main` (HelloFunction at sam/local.yaml:8) disagree; make them the same handler"
    );
}

#[test]
fn a_runtime_or_architecture_the_template_disagrees_with_is_an_error_naming_the_key_to_fix() {
    let cfn = template(
        "AWS::Lambda::Function",
        "      Runtime: python3.11\n      Handler: index.handler\n      Code: ../fn\n",
    );
    let (repo, run) = monorepo(
        "[lambda]\ntemplates = [\"cfn/*.yaml\"]\n\n[lambda.functions.hello]\nsources = [\"fn\"]\n",
        &[("cfn/app.yaml", &cfn)],
    );
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: HelloFunction at cfn/app.yaml:7 says Runtime `python3.11`, but pipeline.toml packages it for `python3.12`; make them agree: fix the template or `runtime` in [lambda.functions.hello] (or [lambda])"
    );

    // No `Architectures` is x86_64 to Lambda, whatever the config says.
    let cfn = cfn.replace("python3.11", "python3.12");
    let (repo, run) = monorepo(
        "[lambda]\ntemplates = [\"cfn/*.yaml\"]\narchitecture = \"arm64\"\n\n[lambda.functions.hello]\nsources = [\"fn\"]\n",
        &[("cfn/app.yaml", &cfn)],
    );
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: HelloFunction at cfn/app.yaml:4 says Architectures `x86_64`, but pipeline.toml packages it for `arm64`; make them agree: fix the template or `architecture` in [lambda.functions.hello] (or [lambda])"
    );
    let cfn = cfn.replace("      Code:", "      Architectures: [arm64]\n      Code:");
    repo.commit_files("arm", &[("cfn/app.yaml", &cfn)]);
    begin_run(&repo);
    let (code, stderr) = package(repo.path());
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_resource_the_template_does_not_have_names_the_key() {
    let cfn = template("AWS::Lambda::Function", "      Runtime: python3.12\n      Handler: index.handler\n");
    let (repo, run) = monorepo(
        "[lambda.functions.hello]\nsources = [\"fn\"]\ntemplate = \"cfn/app.yaml\"\nresource = \"HeloFunction\"\n",
        &[("cfn/app.yaml", &cfn)],
    );
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: cfn/app.yaml has no AWS::Lambda::Function or AWS::Serverless::Function `HeloFunction`; fix [lambda.functions.hello] resource (the function's logical ID) or template"
    );
}

/// A fake x86_64 ELF shared object.
fn elf_x86_64() -> String {
    let mut bytes = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
    bytes.resize(18, 0);
    bytes.extend_from_slice(&62u16.to_le_bytes());
    bytes.resize(64, 0);
    String::from_utf8(bytes).unwrap()
}

fn wheel(tag: &str) -> String {
    format!("Wheel-Version: 1.0\nGenerator: bdist_wheel\nRoot-Is-Purelib: false\nTag: {tag}\n")
}

#[test]
fn a_dependencies_dir_installed_for_another_python_is_an_error_naming_the_package_and_the_fix() {
    let so = elf_x86_64();
    let (repo, run) = monorepo(
        "[lambda]\ndependencies_dir = \"vendor\"\n\n[lambda.functions.hello]\nsources = [\"fn\"]\n",
        &[
            ("vendor/simplejson/__init__.py", "x = 1\n"),
            ("vendor/simplejson/_speedups.cpython-311-x86_64-linux-gnu.so", &so),
            ("vendor/simplejson-3.19.2.dist-info/WHEEL", &wheel("cp311-cp311-manylinux_2_17_x86_64")),
        ],
    );
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: vendor/simplejson-3.19.2.dist-info/WHEEL says `simplejson` is for CPython 3.11 (Tag cp311-cp311-manylinux_2_17_x86_64), but the function runs python3.12 on x86_64; reinstall vendor for python3.12 on x86_64 (pip install --target vendor --python-version 3.12 --platform manylinux2014_x86_64 --implementation cp --only-binary=:all: …), or fix `runtime`/`architecture` in [lambda.functions.hello]"
    );

    // Without its metadata, the compiled module's name says it: python3.12 would not load it and
    // simplejson would fall back to pure Python without a word.
    repo.git(&["rm", "-rq", "vendor/simplejson-3.19.2.dist-info"]);
    repo.git(&["commit", "-qm", "no metadata"]);
    let run = begin_run(&repo);
    let error = refused(&repo, &run);
    assert!(
        error.starts_with(
            "function `hello`: vendor/simplejson/_speedups.cpython-311-x86_64-linux-gnu.so is built for CPython 3.11, but the function runs python3.12 on x86_64; reinstall vendor"
        ),
        "{error}"
    );
}

#[test]
fn a_dependencies_dir_installed_for_another_architecture_is_an_error_naming_the_package_and_the_fix() {
    let (repo, run) = monorepo(
        "[lambda.functions.hello]\nsources = [\"fn\"]\ndependencies_dir = \"vendor\"\n",
        &[
            ("vendor/fastthing/__init__.py", "x = 1\n"),
            ("vendor/fastthing-1.0.dist-info/WHEEL", &wheel("cp312-cp312-manylinux2014_aarch64")),
        ],
    );
    let error = refused(&repo, &run);
    assert!(
        error.starts_with(
            "function `hello`: vendor/fastthing-1.0.dist-info/WHEEL says `fastthing` is for Linux on arm64 (Tag cp312-cp312-manylinux2014_aarch64), but the function runs python3.12 on x86_64; reinstall vendor for python3.12 on x86_64"
        ),
        "{error}"
    );
}

#[test]
fn a_dependencies_dir_that_does_not_exist_names_the_key_not_a_requirements_file() {
    let (repo, run) = monorepo("[lambda.functions.hello]\nsources = [\"fn\"]\ndependencies_dir = \"vendor\"\n", &[]);
    // Once: "requirements file … does not exist".
    assert_eq!(
        refused(&repo, &run),
        "function `hello`: dependencies_dir `vendor` does not exist or is not a folder; fix [lambda.functions.hello] dependencies_dir, or install the packages there first"
    );
    // Inherited from [lambda]: that key is named.
    let (repo, run) =
        monorepo("[lambda]\ndependencies_dir = \"vendor\"\n\n[lambda.functions.hello]\nsources = [\"fn\"]\n", &[]);
    assert!(refused(&repo, &run).contains("fix [lambda] dependencies_dir"));
}

fn names(zip: &Path) -> Vec<String> {
    lambda_packager::archive::list(zip).unwrap().into_iter().map(|(name, _)| name).collect()
}

#[test]
fn section_defaults_are_inherited_and_a_function_overrides_them() {
    let repo = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = repo.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("fn/index.py", HELLO);
    write("fn/notes.txt", "left out by the section's exclude\n");
    write("fn/data.json", "{}\n");
    write("vendor/shared/__init__.py", "");
    write("vendor/boto3/__init__.py", "");
    write("own/special/__init__.py", "");
    // A dependencies folder outside the monorepo (a CodeBuild cache) is taken as given.
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("cached")).unwrap();
    std::fs::write(cache.path().join("cached/__init__.py"), "").unwrap();
    write(
        "pipeline.toml",
        &format!(
            "[lambda]\ndependencies_dir = \"vendor\"\nexclude = [\"*.txt\"]\nkeep_packages = [\"boto3\"]\n\n\
             [lambda.functions.plain]\nsources = [\"fn\"]\n\n\
             [lambda.functions.own]\nsources = [\"fn\"]\ndependencies_dir = \"own\"\nexclude = [\"*.json\"]\nkeep_packages = []\n\n\
             [lambda.functions.cached]\nsources = [\"fn\"]\ndependencies_dir = \"{}\"\n",
            cache.path().display()
        ),
    );
    let out = repo.path().join("out");
    build(repo.path(), &out).unwrap();
    assert_eq!(names(&out.join("plain.zip")), ["boto3/__init__.py", "data.json", "index.py", "shared/__init__.py"]);
    assert_eq!(names(&out.join("own.zip")), ["index.py", "notes.txt", "special/__init__.py"]);
    assert_eq!(names(&out.join("cached.zip")), ["cached/__init__.py", "data.json", "index.py"]);
}

#[test]
fn a_bad_handler_key_names_the_key_and_line() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[lambda.functions.hello]\nsources = [\"fn\"]\nhandler = \"index\"\n",
    )
    .unwrap();
    let error = LambdaSettings::load(&repo.path().join("pipeline.toml")).unwrap_err().to_string();
    assert!(
        error.ends_with(
            "pipeline.toml:3: lambda.functions.hello.handler: `index` is not `module.function` (e.g. `index.handler`, `pkg.app.handler`)"
        ),
        "{error}"
    );
}
