//! `[validate.dependencies]`: pinned Python requirements and `package-lock.json` of changed
//! components checked against a local OSV advisory folder written here (no network).

use std::path::Path;
use std::process::{Command, Output};

use test_support::GitRepo;

const CONFIG: &str = r#"
[components.api]
paths = ["api/**"]

[components.web]
paths = ["web/**"]

[validate]
templates = []

[validate.dependencies]
advisories = "advisories"
"#;

const REQUIREMENTS: &str = "# pinned\nflask==3.0.3\nrequests==2.19.0  # old\nboto3>=1.34\n";

const LOCK: &str = r#"{
  "name": "web",
  "lockfileVersion": 3,
  "packages": {
    "": {
      "name": "web"
    },
    "node_modules/lodash": {
      "version": "4.17.20"
    },
    "node_modules/left-pad": {
      "version": "1.3.0"
    }
  }
}
"#;

const REQUESTS: &str = r#"{"id": "PYSEC-2018-28", "summary": "requests leaks credentials on redirect",
 "affected": [{"package": {"ecosystem": "PyPI", "name": "requests"},
   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.20.0"}]}]}],
 "database_specific": {"severity": "HIGH"}}"#;

const LODASH: &str = r#"{"id": "GHSA-35jh-r3h4-6jhm", "summary": "Command injection in lodash",
 "affected": [{"package": {"ecosystem": "npm", "name": "lodash"},
   "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}]}],
 "database_specific": {"severity": "MODERATE"}}"#;

/// An advisory of a version the repository does not use.
const FLASK_OLD: &str = r#"{"id": "GHSA-m2qf-hxjv-5gpq", "summary": "old flask",
 "affected": [{"package": {"ecosystem": "PyPI", "name": "Flask"},
   "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.2.5"}]}]}]}"#;

fn repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_files(
        "init",
        &[
            ("pipeline.toml", CONFIG),
            ("api/requirements.txt", REQUIREMENTS),
            ("web/package-lock.json", LOCK),
            ("advisories/pypi/PYSEC-2018-28.json", REQUESTS),
            ("advisories/npm/GHSA-35jh-r3h4-6jhm.json", LODASH),
            ("advisories/pypi/GHSA-m2qf-hxjv-5gpq.json", FLASK_OLD),
            (".gitignore", ".pipeline/\n"),
        ],
    );
    repo
}

fn validate(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_validate")).arg("--repo").arg(repo).args(args).output().unwrap()
}

#[test]
fn vulnerable_pins_are_findings_with_the_advisory_and_the_fix_in_every_format() {
    let repo = repo();
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{human}{}", String::from_utf8_lossy(&out.stderr));
    let d001: Vec<&str> = human.lines().filter(|l| l.contains(" D001 ")).collect();
    assert_eq!(
        d001,
        [
            "api/requirements.txt:3:1: D001 error: requests 2.19.0 is vulnerable: PYSEC-2018-28 (requests leaks credentials on redirect); upgrade to 2.20.0 or later",
            "web/package-lock.json:8:1: D001 warning: lodash 4.17.20 is vulnerable: GHSA-35jh-r3h4-6jhm (Command injection in lodash); upgrade to 4.17.21 or later",
        ],
        "{human}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&validate(repo.path(), &["--all", "--no-tools", "--format", "json"]).stdout).unwrap();
    let rules: Vec<&str> = json["findings"].as_array().unwrap().iter().filter_map(|f| f["rule"].as_str()).collect();
    assert_eq!(rules.iter().filter(|r| **r == "D001").count(), 2, "{json:#}");
    let sarif = String::from_utf8(validate(repo.path(), &["--all", "--no-tools", "--format", "sarif"]).stdout).unwrap();
    assert!(sarif.contains("GHSA-35jh-r3h4-6jhm") && sarif.contains("\"ruleId\": \"D001\""), "{sarif}");
    let junit = String::from_utf8(validate(repo.path(), &["--all", "--no-tools", "--format", "junit"]).stdout).unwrap();
    assert!(junit.contains("PYSEC-2018-28"), "{junit}");
    let plan = String::from_utf8(validate(repo.path(), &["--all", "--dry-run"]).stdout).unwrap();
    assert!(plan.contains("2 dependency file(s) to check for vulnerabilities"), "{plan}");
}

#[test]
fn a_broken_advisory_is_an_error_naming_it() {
    let repo = repo();
    repo.commit_files("broken", &[("advisories/npm/bad.json", "{not json")]);
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.json is not an OSV advisory"), "{stderr}");
}

/// The advisory database as OSV publishes it, one zip per ecosystem: the same findings as
/// from a folder; a zip that is not one is an error naming it.
#[test]
fn a_zip_of_advisories_gives_the_same_findings_and_a_broken_zip_is_named() {
    use std::io::Write;
    let repo = repo();
    let zip_path = repo.path().join("all.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    for (name, body) in [("PYSEC-2018-28.json", REQUESTS), ("GHSA-35jh-r3h4-6jhm.json", LODASH)] {
        zip.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
    let config = CONFIG.replace("advisories = \"advisories\"", "advisories = \"all.zip\"");
    repo.commit_files("zip", &[("pipeline.toml", &config)]);
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{human}{}", String::from_utf8_lossy(&out.stderr));
    let d001: Vec<&str> = human.lines().filter(|l| l.contains(" D001 ")).collect();
    assert_eq!(d001.len(), 2, "{human}");
    assert!(d001[0].contains("PYSEC-2018-28") && d001[1].contains("GHSA-35jh-r3h4-6jhm"), "{human}");

    std::fs::write(&zip_path, "not a zip").unwrap();
    let out = validate(repo.path(), &["--all", "--no-tools"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("all.zip is not a readable zip of OSV advisories"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
