//! `cargo xtask bench package`: the packager against the seed's packaging loop.
//!
//! The seed zipped each function with `zip -r`, then zipped the same installed
//! `package/` folder again into each of the five zips. Both sides get the same
//! sources and the same dependency folder (a copy of the tools' own
//! site-packages, tens of MB, boto3 included, minus the biggest tools no Lambda
//! would ship, pip's per-install records and bytecode), and neither runs pip, so
//! the comparison is the packaging itself.
//!
//! Two configurations: the default one (boto3, botocore and s3transfer left out, as Lambda's
//! runtime has them: our zips hold less) and the like-for-like one (`keep_packages` lists
//! them: both sides ship the same entries, checked). Every pair alternates which side goes
//! first; both sides get one untimed warm-up run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lambda_packager::{FunctionSpec, LambdaSettings, Packager, Pip};

use crate::bench::{machine, print_header, print_row};

/// Each function's sources as (folder to run `zip` in, what to add from there): the zip
/// holds the handler at its root, as Lambda needs, and the built frontend under `dist/`.
const FUNCTIONS: &[(&str, &[(&str, &str)])] = &[
    ("api-handler", &[("lambda/api-handler", ".")]),
    ("orchestration", &[("lambda/orchestration-stepfunctions", ".")]),
    ("execution-finder", &[("lambda/poller", "execution_finder.py")]),
    ("execution-poller", &[("lambda/poller", "execution_poller.py")]),
    ("frontend-builder", &[("lambda/frontend-builder", "."), ("frontend", "dist")]),
];

/// Left out of the dependency folder: what pip itself is, and the biggest tools that no Lambda would ship.
const NOT_DEPENDENCIES: &[&str] =
    &["pip", "setuptools", "_distutils_hack", "pkg_resources", "sympy", "moto", "cfnlint", "mpmath"];

/// pip's per-install files, which the packager drops (they change on every install).
const VOLATILE_METADATA: &[&str] = &["RECORD", "INSTALLER", "REQUESTED", "direct_url.json"];

/// What the packager leaves out by default and the like-for-like case keeps.
const RUNTIME_PACKAGES: &str = r#"["boto3", "botocore", "s3transfer"]"#;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bin = crate::python::ensure(&root)?;
    let work = root.join("target/bench-package");
    let repo = prepare(&root, &bin, &work)?;
    let (_, default_functions) = LambdaSettings::load(&repo.join("pipeline.toml"))?;
    let (_, like_functions) = LambdaSettings::load(&repo.join("pipeline-like-for-like.toml"))?;
    let deps_size = folder_size(&repo.join("lambda/package"));
    let rounds = rounds.max(1);

    let seed_out = work.join("seed-out");
    let seed = |only: Option<&str>| -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(&seed_out);
        std::fs::create_dir_all(&seed_out)?;
        for (name, sources) in FUNCTIONS.iter().filter(|(n, _)| only.is_none_or(|o| o == *n)) {
            let zip = seed_out.join(format!("{name}.zip"));
            for (dir, what) in *sources {
                crate::run(Command::new("zip").args(["-r", "-q"]).arg(&zip).arg(what).current_dir(repo.join(dir)))?;
            }
            crate::run(
                Command::new("zip").args(["-r", "-q"]).arg(&zip).arg(".").current_dir(repo.join("lambda/package")),
            )?;
        }
        Ok(())
    };
    let ours_out = work.join("ours-out");
    let ours = |functions: &[FunctionSpec], only: Option<&str>, cache: &Path| -> anyhow::Result<()> {
        let selected: Vec<_> = functions.iter().filter(|f| only.is_none_or(|o| o == f.name)).cloned().collect();
        let packager = Packager {
            repo: repo.clone(),
            cache_dir: cache.to_path_buf(),
            out_dir: ours_out.clone(),
            pip: Pip { python: bin.join("python"), extra_args: Vec::new() },
        };
        packager.build(&selected, &|_| {})?;
        Ok(())
    };
    let cold_cache = work.join("cache-cold");
    let cold = |functions: &[FunctionSpec], only: Option<&str>| -> anyhow::Result<()> {
        let _ = std::fs::remove_dir_all(&cold_cache);
        ours(functions, only, &cold_cache)
    };

    // Warm-up, untimed, both sides; the entries each side ships, checked.
    seed(None)?;
    let seed_entries = zip_entries(&seed_out)?;
    cold(&like_functions, None)?;
    let like_entries = zip_entries(&ours_out)?;
    if like_entries != seed_entries {
        bail!("like for like, the zips differ:\n{}", entry_difference(&seed_entries, &like_entries));
    }
    cold(&default_functions, None)?;
    let default_entries = zip_entries(&ours_out)?;
    let left_out: BTreeSet<&str> =
        seed_entries.difference(&default_entries).map(|(_, entry)| entry.split('/').next().unwrap_or(entry)).collect();
    if !default_entries.is_subset(&seed_entries) {
        bail!(
            "the default zips hold entries the seed's do not:\n{}",
            entry_difference(&seed_entries, &default_entries)
        );
    }
    // The cache-hit case starts from a filled cache.
    let warm_cache = work.join("cache-warm");
    let _ = std::fs::remove_dir_all(&warm_cache);
    ours(&default_functions, None, &warm_cache)?;

    let mut seed_five = Vec::new();
    let mut default_five = Vec::new();
    let mut like_five = Vec::new();
    let mut seed_one = Vec::new();
    let mut like_one = Vec::new();
    let mut cache_hit = Vec::new();
    let time = |f: &dyn Fn() -> anyhow::Result<()>, into: &mut Vec<Duration>| -> anyhow::Result<()> {
        let start = Instant::now();
        f()?;
        into.push(start.elapsed());
        Ok(())
    };
    for round in 0..rounds {
        let seed_all = || seed(None);
        let default_all = || cold(&default_functions, None);
        let like_all = || cold(&like_functions, None);
        let seed_api = || seed(Some("api-handler"));
        let like_api = || cold(&like_functions, Some("api-handler"));
        if round % 2 == 0 {
            time(&seed_all, &mut seed_five)?;
            time(&default_all, &mut default_five)?;
            time(&like_all, &mut like_five)?;
            time(&seed_api, &mut seed_one)?;
            time(&like_api, &mut like_one)?;
        } else {
            time(&like_all, &mut like_five)?;
            time(&default_all, &mut default_five)?;
            time(&seed_all, &mut seed_five)?;
            time(&like_api, &mut like_one)?;
            time(&seed_api, &mut seed_one)?;
        }
        time(&|| ours(&default_functions, None, &warm_cache), &mut cache_hit)?;
    }

    println!(
        "bench package: 5 functions, dependency folder {:.1} MB (boto3 included), {rounds} rounds, both sides warmed once, pairs alternating",
        deps_size as f64 / 1e6,
    );
    println!("  {}", machine());
    println!(
        "  entries: seed {} (zip -r, files only); like for like {} (the same names, checked); default {} (left out: {})",
        seed_entries.len(),
        like_entries.len(),
        default_entries.len(),
        left_out.iter().copied().collect::<Vec<_>>().join(", ")
    );
    let width = 66;
    print_header("ms per run", width);
    let seed_median = print_row("seed loop, five zips (zip -r per function + package/ again)", width, &seed_five);
    let like_median = print_row("lambda-packager, five zips, like for like (keep_packages boto3…)", width, &like_five);
    let default_median = print_row("lambda-packager, five zips, default (boto3… left out)", width, &default_five);
    let seed_one_median = print_row("one function (api-handler): zip -r", width, &seed_one);
    let like_one_median = print_row("one function (api-handler): lambda-packager, like for like", width, &like_one);
    print_row("lambda-packager re-run, nothing changed (cache hit: no zip built)", width, &cache_hit);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "  speed-up, five zips, like for like (seed / packager): {:.1}x (goal: at least 5x)",
        ratio(seed_median, like_median)
    );
    println!("  speed-up, five zips, default (smaller zips):          {:.1}x", ratio(seed_median, default_median));
    println!(
        "  speed-up, one function, like for like:                {:.2}x (goal: above 1x)",
        ratio(seed_one_median, like_one_median)
    );
    println!("  (the cache hit has no seed counterpart: the seed loop rebuilds every zip every time)");
    Ok(())
}

/// Every file entry of every zip in a folder, as (zip name, entry name); folder entries
/// (`zip -r` writes them, the packager does not) are left aside.
fn zip_entries(dir: &Path) -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut entries = BTreeSet::new();
    let mut zips = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "zip") {
            continue;
        }
        zips += 1;
        let name = path.file_name().context("a file name")?.to_string_lossy().to_string();
        let archive =
            zip::ZipArchive::new(std::fs::File::open(&path)?).with_context(|| format!("reading {}", path.display()))?;
        for entry in archive.file_names() {
            let entry = entry.with_context(|| format!("an entry name in {}", path.display()))?;
            if !entry.ends_with('/') {
                entries.insert((name.clone(), entry.to_string()));
            }
        }
    }
    if zips != FUNCTIONS.len() {
        bail!("{} holds {zips} zips, not {}", dir.display(), FUNCTIONS.len());
    }
    Ok(entries)
}

/// The first few entries only one side has.
fn entry_difference(seed: &BTreeSet<(String, String)>, ours: &BTreeSet<(String, String)>) -> String {
    let only = |a: &BTreeSet<(String, String)>, b: &BTreeSet<(String, String)>| {
        let diff: Vec<String> = a.difference(b).map(|(zip, entry)| format!("{zip}: {entry}")).collect();
        format!("{} entries, first: {:?}", diff.len(), diff.iter().take(10).collect::<Vec<_>>())
    };
    format!("  only the seed's: {}\n  only ours: {}", only(seed, ours), only(ours, seed))
}

/// The bench monorepo: the sample's Lambda sources, its built frontend, and a dependency folder.
fn prepare(root: &Path, python_bin: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    if Command::new("zip").arg("-v").output().is_err() {
        bail!("`zip` is not installed; the seed's loop needs it (apt-get install zip)");
    }
    let repo = work.join("repo");
    // (`-runtime`: the config names the runtime of the copied site-packages.)
    let done = repo.join(".ready-v2-runtime");
    if done.exists() {
        return Ok(repo);
    }
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(repo.join("lambda"))?;
    crate::run(Command::new("cp").arg("-R").arg(root.join("fixtures/monorepo/lambda/.")).arg(repo.join("lambda")))?;
    crate::run(Command::new("cp").arg("-R").arg(root.join("fixtures/monorepo/frontend")).arg(&repo))?;
    let built = Command::new("node").arg("frontend/build.mjs").current_dir(&repo).output().context("running node")?;
    if !built.status.success() {
        bail!("building the sample frontend failed: {}", String::from_utf8_lossy(&built.stderr));
    }
    let site = python_site_packages(python_bin)?;
    let package = repo.join("lambda/package");
    crate::run(Command::new("cp").arg("-R").arg(site.join(".")).arg(&package))?;
    for entry in std::fs::read_dir(&package)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let project = name.split(['-', '.']).next().unwrap_or("").to_ascii_lowercase();
        if NOT_DEPENDENCIES.contains(&project.as_str()) || name == "__pycache__" || name.ends_with(".pth") {
            let path = entry.path();
            if path.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
        }
    }
    crate::run(Command::new("find").arg(&package).args([
        "-name",
        "__pycache__",
        "-prune",
        "-exec",
        "rm",
        "-rf",
        "{}",
        "+",
    ]))?;
    crate::run(Command::new("find").arg(&package).args(["-name", "*.pyc", "-delete"]))?;
    for name in VOLATILE_METADATA {
        crate::run(Command::new("find").arg(&package).args(["-path", "*.dist-info/*", "-name", name, "-delete"]))?;
    }
    let architecture = if std::env::consts::ARCH == "aarch64" { "arm64" } else { "x86_64" };
    // The copied site-packages are the venv's Python's: the packager checks every `.so` and wheel
    // tag against the runtime, so the runtime is that Python.
    let version = Command::new(python_bin.join("python"))
        .args(["-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"])
        .output()?;
    let runtime = String::from_utf8(version.stdout)?.trim().to_string();
    for (file, keep) in [("pipeline.toml", None), ("pipeline-like-for-like.toml", Some(RUNTIME_PACKAGES))] {
        let mut config = format!("[lambda]\narchitecture = \"{architecture}\"\nruntime = \"{runtime}\"\n");
        for (name, sources) in FUNCTIONS {
            let (own, include) = sources.split_at(1);
            let (dir, what) = own[0];
            let source = if what == "." { dir.to_string() } else { format!("{dir}/{what}") };
            config.push_str(&format!(
                "\n[lambda.functions.{name}]\nsources = [\"{source}\"]\ndependencies_dir = \"lambda/package\"\n"
            ));
            for (dir, what) in include {
                config.push_str(&format!("include = [{{ from = \"{dir}/{what}\", to = \"{what}\" }}]\n"));
            }
            if let Some(keep) = keep {
                config.push_str(&format!("keep_packages = {keep}\n"));
            }
        }
        std::fs::write(repo.join(file), config)?;
    }
    std::fs::write(&done, "")?;
    Ok(repo)
}

fn python_site_packages(python_bin: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(python_bin.join("python"))
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        .output()?;
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn folder_size(dir: &Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(dir).output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
