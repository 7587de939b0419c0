//! Sources that are not plain files or names: named pipes, links to devices or out of the
//! monorepo, names that are not UTF-8. Each is a one-line error naming the file (or the key) and
//! what to do, never a hang, a huge read or a renamed entry. And what is written is readable by
//! whoever deploys it, with paths that survive moving the folder.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use lambda_packager::{Error, Manifest};

mod support;
use support::build;

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// A monorepo folder with `fn/index.py` and `[lambda]` set to `functions`.
fn repo(functions: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("fn")).unwrap();
    std::fs::write(repo.path().join("fn/index.py"), "def handler(e, c):\n    return 1\n").unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), functions).unwrap();
    repo
}

fn one_line(error: &Error) -> String {
    let text = error.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    text
}

#[test]
fn a_named_pipe_among_the_sources_is_an_error_naming_it() {
    // Once: reading the pipe hung the packager.
    let repo = repo("[lambda.functions.hello]\nsources = [\"fn/pipe\"]\n");
    mkfifo(&repo.path().join("fn/pipe"));
    let out = repo.path().join("out");
    let error = build(repo.path(), &out).unwrap_err();
    let real = repo.path().canonicalize().unwrap();
    assert_eq!(
        one_line(&error),
        format!(
            "function `hello`: {}/fn/pipe is a named pipe, not a regular file; only regular files are packaged: remove it, or leave it out with `exclude` in [lambda.functions.hello]",
            real.display()
        )
    );
    assert!(!out.exists());

    // Inside a source folder too, unless excluded.
    let repo = self::repo("[lambda.functions.hello]\nsources = [\"fn\"]\n");
    mkfifo(&repo.path().join("fn/pipe"));
    let error = build(repo.path(), &out).unwrap_err();
    assert!(matches!(error, Error::NotRegularFile { .. }), "{error}");
    assert!(one_line(&error).contains("/fn/pipe is a named pipe"), "{error}");
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[lambda.functions.hello]\nsources = [\"fn\"]\nexclude = [\"pipe\"]\n",
    )
    .unwrap();
    let manifest = build(repo.path(), &out).unwrap();
    assert_eq!(manifest.packages[0].files, 1);
}

#[test]
fn a_link_to_a_device_is_refused_as_a_link_out_of_the_tree() {
    let repo = repo("[lambda.functions.hello]\nsources = [\"fn\"]\n");
    symlink("/dev/zero", repo.path().join("fn/zero.bin")).unwrap();
    let error = build(repo.path(), &repo.path().join("out")).unwrap_err();
    assert!(matches!(error, Error::SymlinkOutside { .. }), "{error}");
    assert!(one_line(&error).contains("outside the source tree"), "{error}");

    let repo = self::repo("[lambda.functions.hello]\nsources = [\"fn/zero.bin\"]\n");
    symlink("/dev/zero", repo.path().join("fn/zero.bin")).unwrap();
    let error = build(repo.path(), &repo.path().join("out")).unwrap_err();
    assert!(matches!(error, Error::SymlinkOutside { .. }), "{error}");
}

#[test]
fn a_dependencies_dir_linking_out_of_the_monorepo_is_refused_naming_the_key() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("pkg")).unwrap();
    std::fs::write(outside.path().join("pkg/__init__.py"), "secret = 1\n").unwrap();
    let repo = repo("[lambda.functions.hello]\nsources = [\"fn\"]\ndependencies_dir = \"vendor\"\n");
    symlink(outside.path(), repo.path().join("vendor")).unwrap();
    // Once: the folder out of the monorepo was packaged.
    let error = build(repo.path(), &repo.path().join("out")).unwrap_err();
    assert_eq!(
        one_line(&error),
        format!(
            "function `hello`: dependencies_dir `vendor` links to {}, outside the monorepo; fix [lambda.functions.hello] dependencies_dir: copy the installed packages into the monorepo, use an absolute path, or use `requirements`",
            outside.path().canonicalize().unwrap().display()
        )
    );
    // A folder inside the monorepo is fine.
    std::fs::remove_file(repo.path().join("vendor")).unwrap();
    std::fs::create_dir_all(repo.path().join("vendor/pkg")).unwrap();
    std::fs::write(repo.path().join("vendor/pkg/__init__.py"), "x = 1\n").unwrap();
    let manifest = build(repo.path(), &repo.path().join("out")).unwrap();
    assert_eq!(manifest.packages[0].files, 2);
}

#[test]
fn a_file_name_that_is_not_utf8_is_refused_with_its_bytes_escaped() {
    let repo = repo("[lambda.functions.hello]\nsources = [\"fn\"]\n");
    // Once: both became `caf\u{FFFD}.py`, and the error showed them as one name.
    std::fs::write(repo.path().join("fn").join(OsStr::from_bytes(b"caf\xe9.py")), "a = 1\n").unwrap();
    std::fs::write(repo.path().join("fn").join(OsStr::from_bytes(b"caf\xe8.py")), "b = 1\n").unwrap();
    let error = build(repo.path(), &repo.path().join("out")).unwrap_err();
    assert_eq!(
        one_line(&error),
        "function `hello`: the file name `fn/caf\\xe8.py` is not UTF-8 (bytes shown escaped); rename the file to UTF-8, as a zip entry's name is UTF-8"
    );

    let repo = self::repo("[lambda.functions.hello]\nsources = [\"fn/caf\u{e9}.py\"]\n");
    let error = build(repo.path(), &repo.path().join("out")).unwrap_err();
    assert!(matches!(error, Error::MissingSource { .. }), "{error}");
}

#[test]
fn zips_and_the_manifest_are_0644_and_the_manifest_paths_are_relative_to_its_folder() {
    let repo = repo("[lambda.functions.hello]\nsources = [\"fn\"]\n");
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("packages");
    let manifest = build(repo.path(), &out).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // Once: 0600, from the temporary file the zip was written to.
    assert_eq!(mode(&out.join("hello.zip")), 0o644);
    assert_eq!(mode(&out.join("manifest.json")), 0o644);
    let cached = std::fs::read_dir(repo.path().join(".pipeline/cache/packages")).unwrap().next().unwrap().unwrap();
    assert_eq!(mode(&cached.path()), 0o644);

    // Once: the absolute path of --out, wrong once the folder is an artifact somewhere else.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(json["packages"][0]["path"], "hello.zip");
    assert_eq!(manifest.packages[0].path, out.join("hello.zip"));
    assert_eq!(Manifest::read(&out.join("manifest.json")).unwrap(), manifest);
    let moved = out.with_file_name("moved");
    std::fs::rename(&out, &moved).unwrap();
    let read = Manifest::read(&moved.join("manifest.json")).unwrap();
    assert_eq!(read.packages[0].path, moved.join("hello.zip"));
    assert!(read.packages[0].path.is_file());
}
