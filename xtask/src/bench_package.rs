//! `cargo xtask bench package`: the packager against the seed's packaging loop.
//!
//! The seed zipped each function with `zip -r`, then zipped the same installed
//! `package/` folder again into each of the five zips. Both sides get the same
//! sources and the same dependency folder (a copy of the tools' own
//! site-packages, tens of MB, minus what Lambda's runtime already has), and
//! neither runs pip, so the comparison is the packaging itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lambda_packager::{LambdaSettings, Packager, Pip};

const FUNCTIONS: &[(&str, &[&str])] = &[
    ("api-handler", &["lambda/api-handler"]),
    ("orchestration", &["lambda/orchestration-stepfunctions"]),
    ("execution-finder", &["lambda/poller/execution_finder.py"]),
    ("execution-poller", &["lambda/poller/execution_poller.py"]),
    ("frontend-builder", &["lambda/frontend-builder", "frontend/dist"]),
];

/// Left out of the dependency folder: what the runtime has, and the biggest tools that no Lambda would ship.
const NOT_DEPENDENCIES: &[&str] = &[
    "pip",
    "setuptools",
    "_distutils_hack",
    "pkg_resources",
    "boto3",
    "botocore",
    "s3transfer",
    "sympy",
    "moto",
    "cfnlint",
    "mpmath",
];

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bin = crate::python::ensure(&root)?;
    let work = root.join("target/bench-package");
    let repo = prepare(&root, &bin, &work)?;
    let (_, functions) = LambdaSettings::load(&repo.join("pipeline.toml"))?;
    let deps_size = folder_size(&repo.join("lambda/package"));

    let seed = |only: Option<&str>| -> anyhow::Result<()> {
        let out = work.join("seed-out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;
        for (name, sources) in FUNCTIONS.iter().filter(|(n, _)| only.is_none_or(|o| o == *n)) {
            let zip = out.join(format!("{name}.zip"));
            crate::run(Command::new("zip").args(["-r", "-q"]).arg(&zip).args(*sources).current_dir(&repo))?;
            crate::run(
                Command::new("zip").args(["-r", "-q"]).arg(&zip).arg(".").current_dir(repo.join("lambda/package")),
            )?;
        }
        Ok(())
    };
    let ours = |only: Option<&str>, cache: &Path| -> anyhow::Result<()> {
        let selected: Vec<_> = functions.iter().filter(|f| only.is_none_or(|o| o == f.name)).cloned().collect();
        let packager = Packager {
            repo: repo.clone(),
            cache_dir: cache.to_path_buf(),
            out_dir: work.join("ours-out"),
            pip: Pip { python: bin.join("python"), extra_args: Vec::new() },
        };
        packager.build(&selected, &|_| {})?;
        Ok(())
    };
    let cold_cache = work.join("cache-cold");
    let warm_cache = work.join("cache-warm");
    let _ = std::fs::remove_dir_all(&warm_cache);
    ours(None, &warm_cache)?;

    let mut times: [Vec<Duration>; 5] = Default::default();
    let time = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<Duration> {
        let start = Instant::now();
        f()?;
        Ok(start.elapsed())
    };
    for round in 0..rounds.max(1) {
        let mut seed_all = || seed(None);
        let mut ours_all = || {
            let _ = std::fs::remove_dir_all(&cold_cache);
            ours(None, &cold_cache)
        };
        if round % 2 == 0 {
            times[0].push(time(&mut seed_all)?);
            times[1].push(time(&mut ours_all)?);
        } else {
            times[1].push(time(&mut ours_all)?);
            times[0].push(time(&mut seed_all)?);
        }
        times[2].push(time(&mut || ours(None, &warm_cache))?);
        times[3].push(time(&mut || seed(Some("api-handler")))?);
        times[4].push(time(&mut || {
            let _ = std::fs::remove_dir_all(&cold_cache);
            ours(Some("api-handler"), &cold_cache)
        })?);
    }
    let [seed_five, ours_five, ours_warm, seed_one, ours_one] = times.map(|mut t| {
        t.sort();
        t[t.len() / 2]
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench package: 5 functions, dependency folder {:.1} MB, {} rounds, median, {} cores",
        deps_size as f64 / 1e6,
        rounds.max(1),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("  seed loop (zip -r per function + package/ again)   {:>8.0} ms", ms(seed_five));
    println!("  lambda-packager, cold cache                        {:>8.0} ms", ms(ours_five));
    println!("  lambda-packager, nothing changed                   {:>8.0} ms", ms(ours_warm));
    println!("  one function: zip -r -q                            {:>8.0} ms", ms(seed_one));
    println!("  one function: lambda-packager, cold cache          {:>8.0} ms", ms(ours_one));
    println!(
        "  speed-up, five zips (seed / packager, cold): {:.1}x (goal: at least 5x)",
        ms(seed_five) / ms(ours_five)
    );
    println!("  speed-up, five zips, unchanged inputs:       {:.1}x", ms(seed_five) / ms(ours_warm));
    println!("  speed-up, one function (zip -r / packager):  {:.2}x (goal: above 1x)", ms(seed_one) / ms(ours_one));
    Ok(())
}

/// The bench monorepo: the sample's Lambda sources, its built frontend, and a dependency folder.
fn prepare(root: &Path, python_bin: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    if Command::new("zip").arg("-v").output().is_err() {
        bail!("`zip` is not installed; the seed's loop needs it (apt-get install zip)");
    }
    let repo = work.join("repo");
    // (`-runtime`: the config names the runtime of the copied site-packages.)
    let done = repo.join(".ready-runtime");
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
    let architecture = if std::env::consts::ARCH == "aarch64" { "arm64" } else { "x86_64" };
    // The copied site-packages are the venv's Python's: the packager checks every `.so` and wheel
    // tag against the runtime, so the runtime is that Python.
    let version = Command::new(python_bin.join("python"))
        .args(["-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"])
        .output()?;
    let runtime = String::from_utf8(version.stdout)?.trim().to_string();
    let mut config = format!("[lambda]\narchitecture = \"{architecture}\"\nruntime = \"{runtime}\"\n");
    for (name, sources) in FUNCTIONS {
        let (own, include) = sources.split_at(1);
        config.push_str(&format!(
            "\n[lambda.functions.{name}]\nsources = [\"{}\"]\ndependencies_dir = \"lambda/package\"\n",
            own[0]
        ));
        for extra in include {
            config.push_str(&format!("include = [{{ from = \"{extra}\", to = \"dist\" }}]\n"));
        }
    }
    std::fs::write(repo.join("pipeline.toml"), config)?;
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
