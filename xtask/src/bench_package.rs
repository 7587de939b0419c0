//! `cargo xtask bench package`: the packager against the seed's packaging loop, as users run
//! each: the `lambda-packager` release binary, one process per run, beside the `zip -r` loop.
//!
//! The seed zipped each function with `zip -r`, then zipped the same installed `package/`
//! folder again into each of the five zips. Both sides get the same sources and the same
//! dependency folder, and neither runs pip, so the comparison is the packaging itself. The
//! dependency folder is a real Lambda's: boto3, botocore, s3transfer, requests, PyYAML and
//! their friends, copied from the tools' own site-packages (about 2,400 files, 32 MB), minus
//! pip's per-install records and bytecode.
//!
//! Two configurations: the default one (boto3, botocore and s3transfer left out, as Lambda's
//! runtime has them: our zips hold less) and the like-for-like one (`keep_packages` lists
//! them: both sides ship the same entries, checked). Cold means a fresh cache and fresh output
//! folders for every run (removed before the clock starts, for both sides). Every round
//! alternates which side goes first; both sides get one untimed warm-up run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{Spread, machine, print_header, print_row};

/// Each function's sources as (folder to run `zip` in, what to add from there): the zip
/// holds the handler at its root, as Lambda needs, and the built frontend under `dist/`.
const FUNCTIONS: &[(&str, &[(&str, &str)])] = &[
    ("api-handler", &[("lambda/api-handler", ".")]),
    ("orchestration", &[("lambda/orchestration-stepfunctions", ".")]),
    ("execution-finder", &[("lambda/poller", "execution_finder.py")]),
    ("execution-poller", &[("lambda/poller", "execution_poller.py")]),
    ("frontend-builder", &[("lambda/frontend-builder", "."), ("frontend", "dist")]),
];

/// The dependency folder: these projects' top-level entries (packages, modules, `.dist-info`
/// folders) from the venv's site-packages, by normalised name. A Lambda's usual set (the AWS
/// SDK with its dependencies, requests with its, PyYAML) plus a JSON-schema validator and
/// `regex`, which bring the folder to about 2,400 files and 32 MB.
const DEPENDENCIES: &[&str] = &[
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "python_dateutil",
    "six",
    "urllib3",
    "requests",
    "idna",
    "certifi",
    "charset_normalizer",
    "yaml",
    "_yaml",
    "pyyaml",
    "regex",
    "jsonschema",
    "jsonschema_specifications",
    "referencing",
    "rpds",
    "rpds_py",
    "attr",
    "attrs",
    "typing_extensions",
];

/// pip's per-install files, which the packager drops (they change on every install).
const VOLATILE_METADATA: &[&str] = &["RECORD", "INSTALLER", "REQUESTED", "direct_url.json"];

/// What the packager leaves out by default and the like-for-like case keeps.
const RUNTIME_PACKAGES: &str = r#"["boto3", "botocore", "s3transfer"]"#;

/// The configurations the binary is run with.
const DEFAULT_CONFIG: &str = "pipeline.toml";
const LIKE_CONFIG: &str = "pipeline-like-for-like.toml";

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let python_bin = crate::python::ensure(&root)?;
    let work = root.join("target/bench-package");
    let repo = prepare(&root, &python_bin, &work)?;
    let deps = repo.join("lambda/package");
    let (deps_files, deps_size) = folder_counts(&deps)?;
    let rounds = rounds.max(1);
    crate::say("building the lambda-packager release binary (when out of date)");
    let packager = crate::bench::release_binary(&root, "lambda-packager")?;
    let sides = Sides {
        seed_out: work.join("seed-out"),
        ours_out: work.join("ours-out"),
        cold_state: work.join("state-cold"),
        warm_state: work.join("state-warm"),
        repo,
        deps,
        packager,
        python: python_bin.join("python"),
    };
    let shipped = sides.warm_up()?;
    let timings = sides.measure(rounds)?;
    println!(
        "bench package: 5 functions, dependency folder {deps_files} files, {:.1} MB (boto3, botocore, s3transfer, requests, PyYAML …), {rounds} rounds, cold (fresh cache and output folders per run), both sides warmed once, order alternating",
        deps_size as f64 / 1e6,
    );
    println!("  {}", machine());
    println!("  ours: {} (release, one process per run)", sides.packager.display());
    shipped.print();
    timings.print();
    Ok(())
}

/// The two sides' inputs and output folders.
struct Sides {
    repo: PathBuf,
    deps: PathBuf,
    packager: PathBuf,
    python: PathBuf,
    seed_out: PathBuf,
    ours_out: PathBuf,
    /// The packager's state for cold runs (removed before each).
    cold_state: PathBuf,
    /// The packager's state for the cache-hit case (filled once).
    warm_state: PathBuf,
}

/// The entries and bytes each side ships, from the warm-up.
struct Shipped {
    seed_entries: BTreeSet<(String, String)>,
    seed_bytes: u64,
    like_entries: BTreeSet<(String, String)>,
    like_bytes: u64,
    default_entries: BTreeSet<(String, String)>,
    default_bytes: u64,
}

/// The timings of each case, one a round.
#[derive(Default)]
struct Timings {
    seed_five: Vec<Duration>,
    default_five: Vec<Duration>,
    like_five: Vec<Duration>,
    seed_one: Vec<Duration>,
    like_one: Vec<Duration>,
    cache_hit: Vec<Duration>,
}

/// Removes these folders when they exist.
fn fresh(dirs: &[&Path]) -> anyhow::Result<()> {
    for dir in dirs {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Times `f` into `into`, after `prepare` (untimed).
fn time(
    prepare: &dyn Fn() -> anyhow::Result<()>,
    f: &dyn Fn() -> anyhow::Result<()>,
    into: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    prepare()?;
    let start = Instant::now();
    f()?;
    into.push(start.elapsed());
    Ok(())
}

impl Sides {
    /// The seed's loop: `zip -r` of each function's sources, then of the dependency folder into each zip.
    fn seed(&self, only: Option<&str>) -> anyhow::Result<()> {
        for (name, sources) in FUNCTIONS.iter().filter(|(n, _)| only.is_none_or(|o| o == *n)) {
            let zip = self.seed_out.join(format!("{name}.zip"));
            for (dir, what) in *sources {
                crate::run(
                    Command::new("zip").args(["-r", "-q"]).arg(&zip).arg(what).current_dir(self.repo.join(dir)),
                )?;
            }
            crate::run(Command::new("zip").args(["-r", "-q"]).arg(&zip).arg(".").current_dir(&self.deps))?;
        }
        Ok(())
    }

    /// One CLI call, as a user runs it: `lambda-packager --repo R --config C --state-dir S --out O`.
    fn ours(&self, config: &str, only: Option<&str>, state: &Path) -> anyhow::Result<()> {
        let mut command = Command::new(&self.packager);
        command
            .arg("--repo")
            .arg(&self.repo)
            .arg("--config")
            .arg(self.repo.join(config))
            .arg("--state-dir")
            .arg(state)
            .arg("--out")
            .arg(&self.ours_out)
            .arg("--python")
            .arg(&self.python)
            .stdout(Stdio::null());
        if let Some(only) = only {
            command.args(["--only", only]);
        }
        let out = command.output().with_context(|| format!("starting {}", self.packager.display()))?;
        if !out.status.success() {
            bail!("lambda-packager --config {config} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    fn fresh_seed(&self) -> anyhow::Result<()> {
        fresh(&[&self.seed_out])?;
        Ok(std::fs::create_dir_all(&self.seed_out)?)
    }

    fn fresh_ours(&self) -> anyhow::Result<()> {
        fresh(&[&self.ours_out, &self.cold_state])
    }

    /// Warm-up, untimed, both sides; the entries each side ships, checked. The cache-hit case's
    /// cache filled.
    fn warm_up(&self) -> anyhow::Result<Shipped> {
        self.fresh_seed()?;
        self.seed(None)?;
        let seed_entries = zip_entries(&self.seed_out)?;
        let seed_bytes = zip_bytes(&self.seed_out)?;
        self.fresh_ours()?;
        self.ours(LIKE_CONFIG, None, &self.cold_state)?;
        let like_entries = zip_entries(&self.ours_out)?;
        let like_bytes = zip_bytes(&self.ours_out)?;
        if like_entries != seed_entries {
            bail!("like for like, the zips differ:\n{}", entry_difference(&seed_entries, &like_entries));
        }
        self.fresh_ours()?;
        self.ours(DEFAULT_CONFIG, None, &self.cold_state)?;
        let default_entries = zip_entries(&self.ours_out)?;
        let default_bytes = zip_bytes(&self.ours_out)?;
        if !default_entries.is_subset(&seed_entries) {
            bail!(
                "the default zips hold entries the seed's do not:\n{}",
                entry_difference(&seed_entries, &default_entries)
            );
        }
        // The cache-hit case starts from a filled cache.
        fresh(&[&self.warm_state])?;
        self.ours(DEFAULT_CONFIG, None, &self.warm_state)?;
        Ok(Shipped { seed_entries, seed_bytes, like_entries, like_bytes, default_entries, default_bytes })
    }

    /// Every case, `rounds` times, which side goes first alternating. Only the run itself is
    /// timed: the folders are made fresh before the clock starts.
    fn measure(&self, rounds: usize) -> anyhow::Result<Timings> {
        let mut t = Timings::default();
        let fresh_seed = || self.fresh_seed();
        let fresh_ours = || self.fresh_ours();
        for round in 0..rounds {
            crate::say(&format!("round {} of {rounds}", round + 1));
            let seed_all = || self.seed(None);
            let default_all = || self.ours(DEFAULT_CONFIG, None, &self.cold_state);
            let like_all = || self.ours(LIKE_CONFIG, None, &self.cold_state);
            let seed_api = || self.seed(Some("api-handler"));
            let like_api = || self.ours(LIKE_CONFIG, Some("api-handler"), &self.cold_state);
            if round % 2 == 0 {
                time(&fresh_seed, &seed_all, &mut t.seed_five)?;
                time(&fresh_ours, &like_all, &mut t.like_five)?;
                time(&fresh_ours, &default_all, &mut t.default_five)?;
                time(&fresh_seed, &seed_api, &mut t.seed_one)?;
                time(&fresh_ours, &like_api, &mut t.like_one)?;
            } else {
                time(&fresh_ours, &like_all, &mut t.like_five)?;
                time(&fresh_seed, &seed_all, &mut t.seed_five)?;
                time(&fresh_ours, &default_all, &mut t.default_five)?;
                time(&fresh_ours, &like_api, &mut t.like_one)?;
                time(&fresh_seed, &seed_api, &mut t.seed_one)?;
            }
            time(&|| Ok(()), &|| self.ours(DEFAULT_CONFIG, None, &self.warm_state), &mut t.cache_hit)?;
        }
        Ok(t)
    }
}

impl Shipped {
    fn print(&self) {
        let left_out: BTreeSet<&str> = self
            .seed_entries
            .difference(&self.default_entries)
            .map(|(_, entry)| entry.split('/').next().unwrap_or(entry))
            .collect();
        println!(
            "  entries: seed {} (zip -r, files only); like for like {} (the same names, checked); default {} (left out: {})",
            self.seed_entries.len(),
            self.like_entries.len(),
            self.default_entries.len(),
            left_out.iter().copied().collect::<Vec<_>>().join(", ")
        );
        println!(
            "  zip bytes, five zips: seed {:.1} MB; like for like {:.1} MB ({:+.1}% against the seed); default {:.1} MB",
            self.seed_bytes as f64 / 1e6,
            self.like_bytes as f64 / 1e6,
            (self.like_bytes as f64 / self.seed_bytes as f64 - 1.0) * 100.0,
            self.default_bytes as f64 / 1e6,
        );
    }
}

impl Timings {
    fn print(&self) {
        let width = 66;
        print_header("ms per run", width);
        print_row("seed loop, five zips (zip -r per function + package/ again)", width, &self.seed_five);
        print_row("lambda-packager, five zips, like for like (keep_packages boto3…)", width, &self.like_five);
        print_row("lambda-packager, five zips, default (boto3… left out)", width, &self.default_five);
        print_row("one function (api-handler): zip -r", width, &self.seed_one);
        print_row("one function (api-handler): lambda-packager, like for like", width, &self.like_one);
        print_row("lambda-packager re-run, nothing changed (cache hit: no zip built)", width, &self.cache_hit);
        println!("  speed-up per round (seed / lambda-packager, the same round):");
        print_header("", width);
        ratio_row("five zips, cold, like for like (goal: at least 5x)", width, &self.seed_five, &self.like_five);
        ratio_row("five zips, cold, default (smaller zips)", width, &self.seed_five, &self.default_five);
        ratio_row("one function, cold, like for like (goal: above 1x)", width, &self.seed_one, &self.like_one);
        println!("  (the cache hit has no seed counterpart: the seed loop rebuilds every zip every time)");
    }
}

/// One row of ratios, `seed[i] / ours[i]` for each round: min, median, max.
fn ratio_row(name: &str, width: usize, seed: &[Duration], ours: &[Duration]) {
    // Spread sorts durations; a ratio is kept as one (seconds), printed as a plain number.
    let ratios: Vec<Duration> =
        seed.iter().zip(ours).map(|(s, o)| Duration::from_secs_f64(s.as_secs_f64() / o.as_secs_f64())).collect();
    let spread = Spread::of(&ratios);
    let x = |d: Duration| format!("{:.2}x", d.as_secs_f64());
    println!("  {name:<width$} {:>9} {:>9} {:>9}", x(spread.min), x(spread.median), x(spread.max));
}

/// Every file entry of every zip in a folder, as (zip name, entry name); folder entries
/// (`zip -r` writes them, the packager does not) are left aside.
fn zip_entries(dir: &Path) -> anyhow::Result<BTreeSet<(String, String)>> {
    let mut entries = BTreeSet::new();
    for path in zips_in(dir)? {
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
    Ok(entries)
}

/// The total size of the zips in a folder.
fn zip_bytes(dir: &Path) -> anyhow::Result<u64> {
    zips_in(dir)?.iter().map(|path| Ok(std::fs::metadata(path)?.len())).sum()
}

/// The zips in a folder: one per function, or an error.
fn zips_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut zips = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "zip") {
            zips.push(path);
        }
    }
    if zips.len() != FUNCTIONS.len() {
        bail!("{} holds {} zips, not {}", dir.display(), zips.len(), FUNCTIONS.len());
    }
    zips.sort();
    Ok(zips)
}

/// The first few entries only one side has.
fn entry_difference(seed: &BTreeSet<(String, String)>, ours: &BTreeSet<(String, String)>) -> String {
    let only = |a: &BTreeSet<(String, String)>, b: &BTreeSet<(String, String)>| {
        let diff: Vec<String> = a.difference(b).map(|(zip, entry)| format!("{zip}: {entry}")).collect();
        format!("{} entries, first: {:?}", diff.len(), diff.iter().take(10).collect::<Vec<_>>())
    };
    format!("  only the seed's: {}\n  only ours: {}", only(seed, ours), only(ours, seed))
}

/// The normalised project name of a site-packages entry: `PyYAML-6.0.3.dist-info` → `pyyaml`,
/// `six.py` → `six`, `_yaml` → `_yaml`.
fn project_of(entry: &str) -> String {
    let stem = entry.strip_suffix(".py").unwrap_or(entry);
    let project = stem.split_once('-').map_or(stem, |(name, _)| name);
    project.to_ascii_lowercase().replace(['-', '.'], "_")
}

/// The bench monorepo (a git work tree, as a user's is): the sample's Lambda sources, its built
/// frontend, and the dependency folder.
fn prepare(root: &Path, python_bin: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    if Command::new("zip").arg("-v").output().is_err() {
        bail!("`zip` is not installed; the seed's loop needs it (apt-get install zip)");
    }
    let repo = work.join("repo");
    // (`-v3`: a Lambda's dependency set rather than all of the tools' site-packages.)
    let done = repo.join(".ready-v3");
    if done.exists() {
        return Ok(repo);
    }
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(repo.join("lambda"))?;
    // Its own work tree: the binary finds the monorepo's root by `.git`, which must not be ours.
    crate::run(Command::new("git").args(["init", "-q"]).arg(&repo))?;
    crate::run(Command::new("cp").arg("-R").arg(root.join("fixtures/monorepo/lambda/.")).arg(repo.join("lambda")))?;
    crate::run(Command::new("cp").arg("-R").arg(root.join("fixtures/monorepo/frontend")).arg(&repo))?;
    let built = Command::new("node").arg("frontend/build.mjs").current_dir(&repo).output().context("running node")?;
    if !built.status.success() {
        bail!("building the sample frontend failed: {}", String::from_utf8_lossy(&built.stderr));
    }
    let site = python_site_packages(python_bin)?;
    let package = repo.join("lambda/package");
    std::fs::create_dir_all(&package)?;
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&site)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let project = project_of(&name);
        if DEPENDENCIES.contains(&project.as_str()) {
            found.insert(project);
            crate::run(Command::new("cp").arg("-R").arg(entry.path()).arg(&package))?;
        }
    }
    let missing: Vec<&str> = DEPENDENCIES.iter().copied().filter(|d| !found.contains(*d)).collect();
    if !missing.is_empty() {
        bail!("{} lacks {}; run `cargo xtask setup` to install the Python tools", site.display(), missing.join(", "));
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
    for (file, keep) in [(DEFAULT_CONFIG, None), (LIKE_CONFIG, Some(RUNTIME_PACKAGES))] {
        let mut config = format!("[lambda]\narchitecture = \"{architecture}\"\nruntime = \"{runtime}\"\n");
        config.push_str("dependencies_dir = \"lambda/package\"\n");
        if let Some(keep) = keep {
            config.push_str(&format!("keep_packages = {keep}\n"));
        }
        for (name, sources) in FUNCTIONS {
            let (own, include) = sources.split_at(1);
            let (dir, what) = own[0];
            let source = if what == "." { dir.to_string() } else { format!("{dir}/{what}") };
            config.push_str(&format!("\n[lambda.functions.{name}]\nsources = [\"{source}\"]\n"));
            for (dir, what) in include {
                config.push_str(&format!("include = [{{ from = \"{dir}/{what}\", to = \"{what}\" }}]\n"));
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

/// Files and bytes under a folder (regular files, links not followed).
fn folder_counts(dir: &Path) -> anyhow::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry?;
        if entry.file_type().is_file() {
            files += 1;
            bytes += entry.metadata()?.len();
        }
    }
    Ok((files, bytes))
}
