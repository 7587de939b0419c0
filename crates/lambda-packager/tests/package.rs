//! The packager on real files with pip installing from a local wheelhouse (no network).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use base64::Engine;
use lambda_packager::{Error, Event, LambdaSettings, Manifest, Packager, Pip, archive};
use sha2::{Digest, Sha256};

/// Builds small wheels with Python's zipfile: a pure package, a fake boto3 the
/// packager must leave out, a native library built for arm64, and one that
/// ships a top-level `index.py`.
fn wheelhouse() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, zipfile, os
out = sys.argv[1]
def wheel(name, version, tag, files):
    dist = f"{name}-{version}.dist-info"
    files = dict(files)
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files[f"{dist}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"
    files[f"{dist}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(os.path.join(out, f"{name}-{version}-{tag}.whl"), "w") as z:
        for path, data in sorted(files.items()):
            z.writestr(path, data)
wheel("tinydep", "1.0", "py3-none-any", {"tinydep/__init__.py": "VALUE = 42\n", "tinydep/data.txt": "x" * 5000})
wheel("boto3", "9.9.9", "py3-none-any", {"boto3/__init__.py": "fake = True\n"})
arm_elf = b"\x7fELF\x02\x01\x01" + b"\x00" * 11 + (183).to_bytes(2, "little") + b"\x00" * 44
wheel("armlib", "1.0", "cp312-cp312-manylinux2014_x86_64", {"armlib/__init__.py": "", "armlib/_native.so": arm_elf})
wheel("collide", "1.0", "py3-none-any", {"index.py": "clash = 1\n"})
"#;
    let status =
        Command::new(test_support::python()).args(["-c", script]).arg(dir.path()).status().expect("python runs");
    assert!(status.success());
    dir
}

struct Sample {
    repo: test_support::GitRepo,
    wheels: tempfile::TempDir,
}

/// The sample monorepo with its requirements pointed at the local wheelhouse and its frontend built.
fn sample(requirements: &str) -> Sample {
    let repo = test_support::sample_monorepo();
    let wheels = wheelhouse();
    repo.write("lambda/requirements.txt", requirements);
    let status = Command::new("node").arg("frontend/build.mjs").current_dir(repo.path()).output().unwrap().status;
    assert!(status.success(), "the sample frontend builds");
    Sample { repo, wheels }
}

impl Sample {
    fn packager(&self, cache: &Path, out: &Path) -> Packager {
        Packager {
            repo: self.repo.path().to_path_buf(),
            cache_dir: cache.to_path_buf(),
            out_dir: out.to_path_buf(),
            pip: Pip {
                python: test_support::python(),
                extra_args: vec!["--no-index".into(), "--find-links".into(), self.wheels.path().display().to_string()],
            },
        }
    }

    fn functions(&self) -> Vec<lambda_packager::FunctionSpec> {
        LambdaSettings::load(&self.repo.path().join("pipeline.toml")).unwrap().1
    }

    fn build(&self, cache: &Path, out: &Path) -> Result<Manifest, Error> {
        self.packager(cache, out).build(&self.functions(), &|_| {})
    }
}

fn names(zip: &Path) -> Vec<String> {
    archive::list(zip).unwrap().into_iter().map(|(name, _)| name).collect()
}

#[test]
fn the_five_sample_functions_hold_exactly_their_files_and_shared_dependencies() {
    let sample = sample("tinydep==1.0\nboto3==9.9.9\n");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("packages");
    let manifest = sample.build(&work.path().join("cache"), &out).unwrap();
    let built: Vec<&str> = manifest.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(built, ["api-handler", "execution-finder", "execution-poller", "frontend-builder", "orchestration"]);

    let deps =
        ["tinydep-1.0.dist-info/METADATA", "tinydep-1.0.dist-info/WHEEL", "tinydep/__init__.py", "tinydep/data.txt"];
    let with_deps = |own: &[&str]| {
        let mut all: Vec<String> = own.iter().chain(deps.iter()).map(|s| s.to_string()).collect();
        all.sort();
        all
    };
    assert_eq!(names(&out.join("api-handler.zip")), with_deps(&["index.py", "rbac_middleware.py"]));
    assert_eq!(names(&out.join("execution-finder.zip")), with_deps(&["execution_finder.py"]));
    assert_eq!(names(&out.join("execution-poller.zip")), with_deps(&["execution_poller.py"]));
    assert_eq!(names(&out.join("orchestration.zip")), with_deps(&["index.py"]));
    let builder = names(&out.join("frontend-builder.zip"));
    assert!(builder.contains(&"build_and_deploy.py".to_string()));
    assert!(builder.contains(&"dist/index.html".to_string()));
    assert!(builder.iter().any(|n| n.starts_with("dist/assets/app.") && n.ends_with(".js")), "{builder:?}");
    // boto3 is the runtime's; RECORD and INSTALLER vary between installs.
    assert!(!builder.iter().any(|n| n.starts_with("boto3") || n.ends_with("/RECORD") || n.ends_with("/INSTALLER")));

    for package in &manifest.packages {
        let bytes = std::fs::read(&package.path).unwrap();
        assert_eq!(package.size, bytes.len() as u64);
        assert_eq!(package.code_sha256, base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes)));
        assert_eq!(package.files, names(&package.path).len());
    }
    assert_eq!(Manifest::read(&out.join("manifest.json")).unwrap(), manifest);
}

#[test]
fn the_same_inputs_give_the_same_bytes_after_a_fresh_checkout_and_new_mtimes() {
    let sample = sample("tinydep==1.0\n");
    let first = tempfile::tempdir().unwrap();
    let a = sample.build(&first.path().join("cache"), &first.path().join("out")).unwrap();

    // New modification times on every file, and a fresh cache: pip installs again.
    let status = Command::new("find")
        .arg(sample.repo.path())
        .args(["-type", "f", "-not", "-path", "*/.git/*", "-exec", "touch", "-d", "2031-05-05 12:00", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
    let second = tempfile::tempdir().unwrap();
    let b = sample.build(&second.path().join("cache"), &second.path().join("out")).unwrap();

    // A fresh checkout elsewhere.
    let clone = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["clone", "-q"])
        .arg(sample.repo.path())
        .arg(clone.path().join("repo"))
        .status()
        .unwrap();
    assert!(status.success());
    let fresh = Sample { repo: test_support::GitRepo::new(), wheels: wheelhouse() };
    test_support::copy_tree(&clone.path().join("repo"), fresh.repo.path());
    fresh.repo.write("lambda/requirements.txt", "tinydep==1.0\n");
    assert!(
        Command::new("node")
            .arg("frontend/build.mjs")
            .current_dir(fresh.repo.path())
            .output()
            .unwrap()
            .status
            .success()
    );
    let third = tempfile::tempdir().unwrap();
    let c = fresh.build(&third.path().join("cache"), &third.path().join("out")).unwrap();

    for ((a, b), c) in a.packages.iter().zip(&b.packages).zip(&c.packages) {
        assert!(!a.reused && !b.reused && !c.reused);
        let bytes = std::fs::read(&a.path).unwrap();
        assert_eq!(bytes, std::fs::read(&b.path).unwrap(), "{} differs after touching files", a.name);
        assert_eq!(bytes, std::fs::read(&c.path).unwrap(), "{} differs in a fresh checkout", a.name);
    }
}

#[test]
fn unchanged_inputs_are_neither_installed_nor_zipped_again() {
    let sample = sample("tinydep==1.0\n");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let events = Mutex::new(Vec::new());
    let record = |event: Event<'_>| {
        events.lock().unwrap().push(match event {
            Event::Installing { requirements } => format!("install {requirements}"),
            Event::Packaged(p) => format!("{} reused={}", p.name, p.reused),
            Event::NotPackaged { function, reason } => format!("{function} not packaged: {reason}"),
        })
    };
    let packager = sample.packager(&cache, &work.path().join("one"));
    packager.build(&sample.functions(), &record).unwrap();
    assert_eq!(
        events.lock().unwrap().iter().filter(|e| e.starts_with("install")).count(),
        1,
        "one install shared by five"
    );

    events.lock().unwrap().clear();
    sample.repo.write("lambda/api-handler/index.py", "# changed\n");
    let packager = sample.packager(&cache, &work.path().join("two"));
    let manifest = packager.build(&sample.functions(), &record).unwrap();
    let events = events.lock().unwrap().clone();
    assert!(!events.iter().any(|e| e.starts_with("install")), "{events:?}");
    assert!(events.contains(&"api-handler reused=false".to_string()), "{events:?}");
    assert!(events.contains(&"orchestration reused=true".to_string()), "{events:?}");
    assert!(manifest.packages.iter().all(|p| p.path.is_file()));
}

fn no_zip_left(out: &Path) {
    let zips: Vec<PathBuf> =
        std::fs::read_dir(out).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    assert!(zips.is_empty(), "left behind: {zips:?}");
}

#[test]
fn a_symlink_out_of_the_source_tree_is_refused() {
    let sample = sample("tinydep==1.0\n");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "do not ship").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        sample.repo.path().join("lambda/api-handler/link.txt"),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let error = sample.build(&work.path().join("cache"), &out).unwrap_err();
    assert!(matches!(error, Error::SymlinkOutside { .. }), "{error}");
    assert!(error.to_string().contains("outside the source tree"), "{error}");
    no_zip_left(&out);
}

#[test]
fn bad_inputs_are_clear_errors_and_leave_no_zip() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");

    let sample = sample("no-such-package==1.0\n");
    let error = sample.build(&work.path().join("c1"), &out).unwrap_err().to_string();
    // pip's own words, not a summary.
    assert!(error.starts_with("pip could not install"), "{error}");
    assert!(error.contains("No matching distribution found for no-such-package==1.0"), "{error}");
    no_zip_left(&out);

    let sample = self::sample("armlib==1.0\n");
    let error = sample.build(&work.path().join("c2"), &out).unwrap_err().to_string();
    assert_eq!(
        error,
        "armlib/_native.so is built for arm64, but the function runs on x86_64; pin a wheel for x86_64 or change `architecture`"
    );

    let sample = self::sample("collide==1.0\n");
    let error = sample.build(&work.path().join("c3"), &out).unwrap_err().to_string();
    assert!(
        error.ends_with("index.py collides with the installed dependency file `index.py`; rename the source file"),
        "{error}"
    );

    let sample = self::sample("tinydep==1.0\n");
    sample.repo.remove("lambda/poller/execution_finder.py");
    let error = sample.build(&work.path().join("c4"), &out).unwrap_err().to_string();
    assert_eq!(
        error,
        "function `execution-finder`: source `lambda/poller/execution_finder.py` does not exist; fix [lambda.functions.execution-finder] sources or include"
    );
    no_zip_left(&out);
}

#[test]
fn packages_over_lambdas_limits_fail_before_anything_is_published() {
    let sample = sample("tinydep==1.0\n");
    // 60 MB that does not compress: over the 50 MB zipped limit.
    let mut noise = vec![0u8; 60 * 1024 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in noise.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(sample.repo.path().join("lambda/api-handler/model.bin"), &noise).unwrap();
    // A sparse 260 MB file: over the 250 MB unzipped limit.
    let big = std::fs::File::create(sample.repo.path().join("lambda/orchestration-stepfunctions/big.dat")).unwrap();
    big.set_len(260 * 1024 * 1024).unwrap();

    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let error = sample.build(&work.path().join("cache"), &out).unwrap_err();
    let Error::OverBudget(problems) = &error else { panic!("expected a budget error, got {error}") };
    let summary: Vec<(&str, &str)> = problems.iter().map(|p| (p.function.as_str(), p.limit)).collect();
    assert_eq!(summary, [("api-handler", "zipped"), ("orchestration", "unzipped")]);
    assert_eq!(problems[0].largest[0].0, "model.bin");
    assert_eq!(problems[1].largest[0].0, "big.dat");
    let message = error.to_string();
    assert!(
        message.contains(
            "function `api-handler` is 60.0 MiB zipped (Lambda's limit: 50.0 MiB); largest: model.bin 60.0 MiB"
        ),
        "{message}"
    );
    no_zip_left(&out);
}

#[test]
fn the_sample_monorepos_handlers_are_checked_against_its_templates() {
    let sample = sample("tinydep==1.0\n");
    let template = std::fs::read_to_string(sample.repo.path().join("cfn/lambdas.yaml")).unwrap();
    sample
        .repo
        .write("cfn/lambdas.yaml", &template.replace("Handler: execution_poller.handler", "Handler: poller.handler"));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let error = sample.build(&work.path().join("cache"), &out).unwrap_err();
    // The handler's line in the template as it is (the error points at it).
    let line = template.lines().position(|l| l.trim() == "Handler: execution_poller.handler").unwrap() + 1;
    assert_eq!(
        error.to_string(),
        format!(
            "function `execution-poller`: handler `poller.handler` (ExecutionPollerFunction at cfn/lambdas.yaml:{line}) needs `poller.py` or `poller/__init__.py` at the zip's root, and the zip has neither; fix the handler, or the function's `sources` in [lambda.functions.execution-poller]"
        )
    );
    no_zip_left(&out);
}

/// Content compressed already (botocore's `.json.gz` models) and content deflate cannot shrink
/// are stored; text is deflated; every entry reads back as the file it came from, and the zip's
/// recorded size and hash are the file's.
#[test]
fn compressed_and_incompressible_files_are_stored_and_text_is_deflated() {
    let dir = tempfile::tempdir().unwrap();
    // A simple generator: bytes deflate cannot shrink, the same on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let files: [(&str, Vec<u8>); 4] = [
        ("data/service-2.json.gz", b"{\"version\": 2}".repeat(500)),
        ("data/noise.bin", noise),
        ("empty.py", Vec::new()),
        ("index.py", b"def handler(event, context):\n    return event\n".repeat(200)),
    ];
    let mut entries = Vec::new();
    for (name, bytes) in &files {
        let source = dir.path().join(name.replace('/', "_"));
        std::fs::write(&source, bytes).unwrap();
        entries.push(lambda_packager::Entry {
            zip_path: (*name).into(),
            source,
            mode: 0o644,
            size: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        });
    }
    entries.sort_by(|a, b| a.zip_path.cmp(&b.zip_path));
    let path = dir.path().join("f.zip");
    let written = archive::write_zip(&path, &entries, None).unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(written.size, on_disk.len() as u64);
    assert_eq!(written.sha256, <[u8; 32]>::from(Sha256::digest(&on_disk)));

    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(on_disk)).unwrap();
    for (name, bytes) in &files {
        let mut entry = zip.by_name(name).unwrap();
        let method = entry.compression();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        assert_eq!(&content, bytes, "{name} reads back as written");
        let expected =
            if *name == "index.py" { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        assert_eq!(method, expected, "{name}");
    }
}
