//! An error's cause is its typed `source()`, never also in its one-line message: a binary prints
//! the chain (`message: cause`), so the cause shows once.

use std::error::Error as _;
use std::os::unix::fs::symlink;
use std::path::Path;

use lambda_packager::{Error, LambdaSettings, Manifest, Packager, Pip};

/// The message and the typed cause; asserts the message is one line without the cause's text.
fn split<T: std::error::Error + 'static>(error: &Error) -> (String, &T) {
    let top = error.to_string();
    assert_eq!(top.lines().count(), 1, "{top}");
    let source = error.source().expect("a source");
    let cause = source.downcast_ref::<T>().unwrap_or_else(|| panic!("source is not the typed cause: {source:?}"));
    assert!(!top.contains(&cause.to_string()), "the cause is in the message: {top}");
    (top, cause)
}

fn packager(repo: &Path, python: &str) -> Packager {
    Packager {
        repo: repo.to_path_buf(),
        cache_dir: repo.join(".pipeline/cache"),
        out_dir: repo.join("out"),
        pip: Pip { python: python.into(), extra_args: Vec::new() },
    }
}

#[test]
fn a_file_that_is_not_a_zip_is_a_zip_error_with_the_zip_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.zip");
    std::fs::write(&path, "not a zip").unwrap();
    let error = lambda_packager::archive::list(&path).unwrap_err();
    let (top, _) = split::<zip::result::ZipError>(&error);
    assert_eq!(
        top,
        format!("{}: the zip cannot be read or written; check the file and the free disk space", path.display())
    );
}

#[test]
fn a_manifest_that_does_not_parse_keeps_the_json_error_as_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, "{ not json").unwrap();
    let error = Manifest::read(&path).unwrap_err();
    let (top, cause) = split::<serde_json::Error>(&error);
    assert_eq!(top, format!("{} is not a package manifest; run lambda-packager again to write it", path.display()));
    assert_eq!(cause.line(), 1);
}

#[test]
fn a_python_that_does_not_exist_keeps_the_os_error_as_its_source() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("fn")).unwrap();
    std::fs::write(repo.path().join("fn/index.py"), "def handler(e, c):\n    return 1\n").unwrap();
    std::fs::write(repo.path().join("fn/requirements.txt"), "six==1.16.0\n").unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[lambda.functions.hello]\nsources = [\"fn/index.py\"]\nrequirements = \"fn/requirements.txt\"\n",
    )
    .unwrap();
    let (_, functions) = LambdaSettings::load(&repo.path().join("pipeline.toml")).unwrap();
    let error = packager(repo.path(), "/nonexistent/python3").build(&functions, &|_| {}).unwrap_err();
    assert!(matches!(error, Error::PipNotRunnable { .. }), "{error:?}");
    let (top, cause) = split::<std::io::Error>(&error);
    assert_eq!(top, "cannot run pip with /nonexistent/python3; install Python 3 with pip or set the packager's python");
    assert_eq!(cause.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn a_link_loop_in_a_source_folder_keeps_the_walk_error_as_its_source() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join("fn");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.py"), "def handler(e, c):\n    return 1\n").unwrap();
    symlink(&dir, dir.join("again")).unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), "[lambda.functions.hello]\nsources = [\"fn\"]\n").unwrap();
    let (_, functions) = LambdaSettings::load(&repo.path().join("pipeline.toml")).unwrap();
    let error = packager(repo.path(), "python3-not-needed").build(&functions, &|_| {}).unwrap_err();
    assert!(matches!(error, Error::Walk { .. }), "{error:?}");
    let (top, cause) = split::<walkdir::Error>(&error);
    assert!(top.starts_with("cannot read the folder "), "{top}");
    assert!(top.ends_with("; fix its permissions or the link loop in it"), "{top}");
    assert!(cause.loop_ancestor().is_some(), "{cause}");
}
