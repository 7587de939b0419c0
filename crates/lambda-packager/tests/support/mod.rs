//! What the packager's test binaries share.

use std::path::Path;

use lambda_packager::{Error, LambdaSettings, Manifest, Packager, Pip};

/// Begins a run of the repository's HEAD (the diff written, as `source-diff` does).
#[allow(dead_code)]
pub fn begin_run(repo: &test_support::GitRepo) -> run_state::RunDir {
    let state = repo.path().join(".pipeline");
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let store = run_state::FileStore::open(&state).unwrap();
    source_diff::begin_run(&handle, &components, &Default::default(), "HEAD", false, &store, &state).unwrap().0
}

/// Builds every function of the repository's `[lambda]` into `out`, in process (no pip: these
/// functions need none).
#[allow(dead_code)]
pub fn build(repo: &Path, out: &Path) -> Result<Manifest, Error> {
    let (_, functions) = LambdaSettings::load(&repo.join("pipeline.toml")).unwrap();
    let packager = Packager {
        repo: repo.to_path_buf(),
        cache_dir: repo.join(".pipeline/cache"),
        out_dir: out.to_path_buf(),
        pip: Pip { python: "python3-not-needed".into(), extra_args: Vec::new() },
    };
    packager.build(&functions, &|_| {})
}
