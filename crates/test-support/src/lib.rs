//! Test helpers shared by the workspace's crates: a dev-dependency of the product crates,
//! and used by xtask for `cargo xtask emulator`. Not for the crates' own code.
//!
//! - [`Moto`]: a moto server on a free loopback port, one per test binary,
//!   stopped when the test process exits. It runs with the harness's patches
//!   (`src/moto_harness.py`) for gaps that would stop the sample monorepo deploying at
//!   all: outputs kept after a change set runs, `!GetAtt Nested.Outputs.X`, and the
//!   CloudFront distribution, origin access control, HTTP API and bucket policy resource
//!   types made in moto's own service backends. The product never relies on them: its
//!   handling of what AWS does there is tested with recorded AWS responses.
//! - [`GitRepo`]: a throw-away git repository with a scripted, reproducible history.
//! - [`sample_monorepo`]: a copy of `fixtures/monorepo` to work on.
//! - [`http_sink`]: an HTTP endpoint on loopback that hands on what is posted to it (an SNS subscriber).
//! - [`Relay`]: a TCP relay in front of moto that keeps what passes, so a test reads the
//!   signatures of a binary's calls (which keys, which region) and the keys STS issued.
//! - [`iam`]: a small IAM policy evaluator (actions, resources, conditions, boundaries), for the
//!   footprint test that holds every stage's calls against its role.
//! - [`process`]: whether a process still runs, read from `/proc` (a test fails when it cannot tell).

#![allow(clippy::print_stderr)]

mod faults;
mod git;
mod http;
pub mod iam;
mod moto;
pub mod process;
mod relay;

use std::path::{Path, PathBuf};

pub use faults::{Fault, FaultProxy, Rule};
pub use git::GitRepo;
pub use http::http_sink;
pub use moto::{Moto, health, only_test_credentials, python};
pub use relay::{Relay, Signature};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/test-support sits two levels down")
        .to_path_buf()
}

/// A fresh git repository holding a copy of `fixtures/monorepo`, committed once.
pub fn sample_monorepo() -> GitRepo {
    let repo = GitRepo::new();
    copy_tree(&workspace_root().join("fixtures/monorepo"), repo.path());
    repo.commit_all("sample monorepo");
    repo
}

/// Copies a folder recursively, skipping build output and caches.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if [".pipeline", "dist", "node_modules", "__pycache__", ".pytest_cache"].iter().any(|skip| name == *skip) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
