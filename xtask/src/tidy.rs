//! The repository's own rules, checked by `cargo xtask test` (as rust-analyzer's tidy does):
//! libraries never print, run-folder file names live in the run-state crate only, every stage
//! binary goes through the stage context, every crate documents its public items, and each
//! library builds without its binary's dependencies.

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Dependencies only a binary needs: a library's default build must not pull them in.
pub const BINARY_ONLY: &[&str] = &["clap", "anyhow", "ctrlc", "comfy-table", "indicatif"];

/// The library crates (every crate under `crates/` but the test helpers).
pub fn library_crates(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join("crates"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join("src/lib.rs").is_file() && name != "test-support" {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Each library's dependency tree without features must hold none of [`BINARY_ONLY`].
pub fn check_light_libraries(root: &Path, cargo: &std::ffi::OsStr) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for name in library_crates(root)? {
        let out = Command::new(cargo)
            .current_dir(root)
            .args(["tree", "--quiet", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", &name])
            .output()
            .context("running cargo tree")?;
        if !out.status.success() {
            bail!("cargo tree -p {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        for line in tree.lines() {
            let package = line.split_whitespace().next().unwrap_or("");
            if BINARY_ONLY.contains(&package) {
                problems.push(format!("{name} depends on {package} without the `cli` feature"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    if !problems.is_empty() {
        bail!("libraries must build without their binaries' dependencies: {}", problems.join("; "));
    }
    Ok(())
}

/// Every `.rs` file under `dir`.
#[cfg(test)]
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The text of a file with its `#[cfg(test)]` module cut off (tests may print and name files).
#[cfg(test)]
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::workspace_root()
    }

    /// Library source files: `crates/*/src/**` outside `src/bin/`, and the binaries' shared
    /// `cli` module, which only binaries use.
    fn library_sources() -> Vec<PathBuf> {
        let root = root();
        let mut files = Vec::new();
        for name in library_crates(&root).unwrap() {
            for file in rust_files(&root.join("crates").join(&name).join("src")) {
                let relative = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                if !relative.contains("/src/bin/") && !relative.ends_with("run-state/src/cli.rs") {
                    files.push(file);
                }
            }
        }
        assert!(files.len() > 20, "found only {} library files: is the layout what tidy expects?", files.len());
        files
    }

    #[test]
    fn libraries_never_print() {
        let mut offenders = Vec::new();
        for file in library_sources() {
            let code = non_test_code(&file);
            for (number, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                if ["println!(", "eprintln!(", "print!(", "eprint!(", "dbg!("].iter().any(|m| line.contains(m)) {
                    offenders.push(format!("{}:{}", file.display(), number + 1));
                }
            }
        }
        assert!(offenders.is_empty(), "libraries return values and report events; they never print: {offenders:#?}");
    }

    #[test]
    fn run_folder_file_names_live_in_run_state_only() {
        let root = root();
        let mut files: Vec<PathBuf> = rust_files(&root.join("crates"))
            .into_iter()
            .filter(|f| !f.starts_with(root.join("crates/run-state")) && f.components().any(|c| c.as_os_str() == "src"))
            .collect();
        files.extend(rust_files(&root.join("xtask/src")));
        let names: Vec<String> = run_state::RunFile::ALL
            .iter()
            .map(|f| format!("\"{}\"", f.file_name()))
            .chain(["\"LATEST\"".to_string(), "\"runs/".to_string()])
            .collect();
        let mut offenders = Vec::new();
        for file in &files {
            for (number, line) in non_test_code(file).lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                if let Some(name) = names.iter().find(|n| line.contains(n.as_str())) {
                    offenders.push(format!("{}:{}: {name}", file.display(), number + 1));
                }
            }
        }
        assert!(offenders.is_empty(), "name run-folder files through run_state::RunFile: {offenders:#?}");
    }

    #[test]
    fn every_stage_binary_goes_through_the_stage_context() {
        let root = root();
        let mut binaries = Vec::new();
        for name in library_crates(&root).unwrap() {
            binaries.extend(rust_files(&root.join("crates").join(&name).join("src/bin")));
        }
        assert!(binaries.len() >= 5, "expected the five stage binaries, found {binaries:?}");
        for binary in binaries {
            let code = std::fs::read_to_string(&binary).unwrap();
            assert!(
                code.contains("StageArgs")
                    && (code.contains(".context()?") || code.contains(".context_on("))
                    && (code.contains("run_state::cli::main(") || code.contains("run_state::cli::main_with_code(")),
                "{} must take StageArgs, build the stage context and end through run_state::cli::main (or main_with_code)",
                binary.display()
            );
        }
    }

    #[test]
    fn every_crate_documents_its_public_items_and_uses_the_workspace_lints() {
        let root = root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("missing_docs = \"warn\""), "the workspace must warn on missing docs");
        let mut crates: Vec<PathBuf> =
            library_crates(&root).unwrap().iter().map(|n| root.join("crates").join(n)).collect();
        crates.push(root.join("crates/test-support"));
        crates.push(root.join("xtask"));
        for dir in crates {
            let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            assert!(
                text.contains("[lints]\nworkspace = true"),
                "{} must use the workspace lints (missing_docs, no print)",
                dir.display()
            );
            let lib = dir.join("src/lib.rs");
            if lib.is_file() && !dir.ends_with("test-support") {
                let code = std::fs::read_to_string(&lib).unwrap();
                assert!(code.starts_with("//!"), "{} must open with crate documentation", lib.display());
                assert!(code.contains("```"), "{} must hold a compiled doc example", lib.display());
            }
        }
    }
}
