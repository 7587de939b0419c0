//! External linters: run for changed components only, in parallel, each with a
//! timeout; their machine formats parsed into the same findings.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use process_pool::{Job, Outcome, Runner};
use serde_json::Value as Json;

use crate::config::{ToolFormat, ToolSettings};
use crate::{Error, Finding, Pos, Severity};

/// A tool to run, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolRun {
    /// Its name under `[validate.tools]`.
    pub name: String,
    /// Its settings.
    pub settings: ToolSettings,
    /// The changed components that call for it.
    pub because_of: Vec<String>,
}

/// Runs the tools at once (at most `parallelism`, with `path_prefix` in front of `PATH`), keeps
/// each log in `log_dir`, and parses their reports. A tool that is not installed is an error
/// naming it and how to install it.
pub fn run(
    repo: &Path,
    tools: &[ToolRun],
    parallelism: usize,
    path_prefix: &[std::path::PathBuf],
    log_dir: &Path,
    cancel: &AtomicBool,
) -> Result<Vec<Finding>, Error> {
    std::fs::create_dir_all(log_dir).map_err(|e| Error::io(log_dir, e))?;
    let jobs: Vec<Job> = tools
        .iter()
        .map(|tool| Job {
            component: tool.name.clone(),
            command: tool.settings.run.clone(),
            timeout: tool.settings.timeout.unwrap_or(process_pool::DEFAULT_TIMEOUT),
            log_path: log_dir.join(format!("validate-{}.log", tool.name)),
            config_key: format!("validate.tools.{}", tool.name),
            stdout_path: Some(log_dir.join(format!("validate-{}.out", tool.name))),
            env: Vec::new(),
        })
        .collect();
    let runner = Runner { workdir: repo.to_path_buf(), parallelism, path_prefix: path_prefix.to_vec(), cancel };
    let results = runner.run(jobs, &|_| {});
    let mut findings = Vec::new();
    for (tool, result) in tools.iter().zip(results) {
        let stdout =
            result.job.stdout_path.as_deref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
        match &result.outcome {
            Outcome::NotFound { program, .. } => {
                return Err(Error::ToolMissing {
                    tool: tool.name.clone(),
                    program: program.clone(),
                    install: tool.settings.install.clone().unwrap_or_else(|| "install it and put it on PATH".into()),
                });
            }
            Outcome::TimedOut(after) => findings.push(tool_finding(
                tool,
                format!(
                    "{} timed out after {}s; raise validate.tools.{}.timeout",
                    tool.name,
                    after.as_secs(),
                    tool.name
                ),
            )),
            Outcome::Cancelled => return Err(Error::Cancelled),
            Outcome::Passed | Outcome::Failed(_) => {
                // A tool quotes the template (a password in a property, say): its words never
                // reach a finding, a report or validate.json unredacted.
                let parsed = parse(tool.settings.format, &stdout, repo).map(|found| {
                    found.into_iter().map(|f| Finding { message: redact_message(&f.message), ..f }).collect::<Vec<_>>()
                });
                match parsed {
                    Some(mut parsed) => findings.append(&mut parsed),
                    None if result.outcome != Outcome::Passed => findings.push(tool_finding(
                        tool,
                        format!("{} failed ({}); see {}", tool.name, result.outcome, result.job.log_path.display()),
                    )),
                    None => {}
                }
            }
        }
    }
    Ok(findings)
}

/// A tool's message with secrets hidden: what the redactor knows (`password=…`, key ids), and
/// quoted values that could be secrets (a linter quoting a password that sits in `Port`).
pub fn redact_message(message: &str) -> String {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"'([^'\s]+)'|"([^"\s]+)"|`([^`\s]+)`"#).expect("the quoted-value pattern is valid")
    });
    let redacted = run_state::redact::redact(message);
    QUOTED
        .replace_all(&redacted, |caps: &regex::Captures<'_>| {
            let whole = &caps[0];
            let value = &whole[1..whole.len() - 1];
            if crate::secrets::could_be_secret(value) {
                format!("{}[REDACTED]{}", &whole[..1], &whole[whole.len() - 1..])
            } else {
                whole.to_string()
            }
        })
        .into_owned()
}

fn tool_finding(tool: &ToolRun, message: String) -> Finding {
    Finding {
        path: String::new(),
        pos: Pos { line: 1, column: 1 },
        rule: tool.name.clone(),
        severity: Severity::Error,
        message,
        check: None,
    }
}

/// Parses a tool's stdout; `None` when it is not in the expected format (the text format, or garbage).
pub fn parse(format: ToolFormat, stdout: &str, repo: &Path) -> Option<Vec<Finding>> {
    let json: Json = match format {
        ToolFormat::Text => return None,
        _ => serde_json::from_str(stdout.trim()).ok()?,
    };
    let relative = |file: &str| {
        let path = Path::new(file);
        path.strip_prefix(repo).unwrap_or(path).to_string_lossy().replace('\\', "/")
    };
    let mut findings = Vec::new();
    match format {
        ToolFormat::CfnLint => cfn_lint(&json, &relative, &mut findings)?,
        ToolFormat::Ruff => ruff(&json, &relative, &mut findings)?,
        ToolFormat::Eslint => eslint(&json, &relative, &mut findings)?,
        ToolFormat::PipAudit => pip_audit(&json, &mut findings)?,
        ToolFormat::NpmAudit => npm_audit(&json, &mut findings)?,
        ToolFormat::Text => return None,
    }
    Some(findings)
}

/// A 1-based line or column, 1 when missing.
fn number(v: &Json) -> u32 {
    v.as_u64().unwrap_or(1).max(1) as u32
}

/// `cfn-lint -f json`.
fn cfn_lint(json: &Json, relative: &dyn Fn(&str) -> String, findings: &mut Vec<Finding>) -> Option<()> {
    for item in json.as_array()? {
        let start = &item["Location"]["Start"];
        findings.push(Finding {
            path: relative(item["Filename"].as_str().unwrap_or("")),
            pos: Pos { line: number(&start["LineNumber"]), column: number(&start["ColumnNumber"]) },
            rule: item["Rule"]["Id"].as_str().unwrap_or("cfn-lint").to_string(),
            severity: match item["Level"].as_str() {
                Some("Error") => Severity::Error,
                Some("Warning") => Severity::Warning,
                _ => Severity::Info,
            },
            message: item["Message"].as_str().unwrap_or("").to_string(),
            check: None,
        });
    }
    Some(())
}

/// `ruff check --output-format json`.
fn ruff(json: &Json, relative: &dyn Fn(&str) -> String, findings: &mut Vec<Finding>) -> Option<()> {
    for item in json.as_array()? {
        findings.push(Finding {
            path: relative(item["filename"].as_str().unwrap_or("")),
            pos: Pos { line: number(&item["location"]["row"]), column: number(&item["location"]["column"]) },
            rule: item["code"].as_str().unwrap_or("ruff").to_string(),
            severity: Severity::Error,
            message: item["message"].as_str().unwrap_or("").to_string(),
            check: None,
        });
    }
    Some(())
}

/// `eslint -f json`.
fn eslint(json: &Json, relative: &dyn Fn(&str) -> String, findings: &mut Vec<Finding>) -> Option<()> {
    for file in json.as_array()? {
        let path = relative(file["filePath"].as_str().unwrap_or(""));
        for message in file["messages"].as_array().into_iter().flatten() {
            findings.push(Finding {
                path: path.clone(),
                pos: Pos { line: number(&message["line"]), column: number(&message["column"]) },
                rule: message["ruleId"].as_str().unwrap_or("eslint").to_string(),
                severity: if message["severity"].as_u64() == Some(2) { Severity::Error } else { Severity::Warning },
                message: message["message"].as_str().unwrap_or("").to_string(),
                check: None,
            });
        }
    }
    Some(())
}

/// `pip-audit -f json`.
fn pip_audit(json: &Json, findings: &mut Vec<Finding>) -> Option<()> {
    // `{"dependencies": [...]}` (pip-audit 2.5 and later) or the list itself.
    let dependencies = json.get("dependencies").unwrap_or(json).as_array()?;
    for dependency in dependencies {
        let (name, version) = (dependency["name"].as_str().unwrap_or(""), dependency["version"].as_str().unwrap_or(""));
        for vuln in dependency["vulns"].as_array().into_iter().flatten() {
            let fixes: Vec<&str> =
                vuln["fix_versions"].as_array().into_iter().flatten().filter_map(Json::as_str).collect();
            let fix = match fixes.first() {
                Some(fixed) => format!("upgrade to {fixed} or later"),
                None => "no fixed version is known".to_string(),
            };
            findings.push(Finding {
                path: String::new(),
                pos: Pos { line: 1, column: 1 },
                rule: crate::dependencies::VULNERABLE.to_string(),
                severity: Severity::Error,
                message: format!(
                    "{name} {version} is vulnerable: {} (pip-audit); {fix}",
                    vuln["id"].as_str().unwrap_or("an advisory")
                ),
                check: None,
            });
        }
    }
    Some(())
}

/// `npm audit --json`.
fn npm_audit(json: &Json, findings: &mut Vec<Finding>) -> Option<()> {
    for (name, vuln) in json.get("vulnerabilities")?.as_object()? {
        let advisories: Vec<String> = vuln["via"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|via| {
                let url = via["url"].as_str()?;
                let id = url.rsplit('/').next().unwrap_or(url);
                Some(format!("{id} ({})", via["title"].as_str().unwrap_or("")))
            })
            .collect();
        if advisories.is_empty() {
            continue; // vulnerable only through another package, reported under it
        }
        let severity = match vuln["severity"].as_str() {
            Some("low" | "info") => Severity::Info,
            Some("moderate") => Severity::Warning,
            _ => Severity::Error,
        };
        let fix = match &vuln["fixAvailable"] {
            Json::Bool(false) => "no fix is available".to_string(),
            Json::Object(fix) => format!(
                "fixed by {} {}",
                fix.get("name").and_then(Json::as_str).unwrap_or(name),
                fix.get("version").and_then(Json::as_str).unwrap_or("")
            ),
            _ => "`npm audit fix` fixes it".to_string(),
        };
        findings.push(Finding {
            path: String::new(),
            pos: Pos { line: 1, column: 1 },
            rule: crate::dependencies::VULNERABLE.to_string(),
            severity,
            message: format!(
                "{name} ({}) is vulnerable: {}; {fix}",
                vuln["range"].as_str().unwrap_or("some versions"),
                advisories.join(", ")
            ),
            check: None,
        });
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_audit_and_npm_audit_reports_become_d001_findings() {
        let repo = Path::new("/repo");
        let pip = r#"{"dependencies": [{"name": "requests", "version": "2.19.0", "vulns": [{"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"]}]},
            {"name": "flask", "version": "3.0.3", "vulns": []}], "fixes": []}"#;
        let found = parse(ToolFormat::PipAudit, pip, repo).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, "D001");
        assert_eq!(
            found[0].message,
            "requests 2.19.0 is vulnerable: PYSEC-2018-28 (pip-audit); upgrade to 2.20.0 or later"
        );
        let npm = r#"{"auditReportVersion": 2, "vulnerabilities": {
            "lodash": {"name": "lodash", "severity": "moderate", "range": "<4.17.21", "fixAvailable": true,
                       "via": [{"source": 1, "title": "Command injection", "url": "https://github.com/advisories/GHSA-35jh-r3h4-6jhm", "severity": "high"}]},
            "wrapper": {"name": "wrapper", "severity": "moderate", "range": "*", "fixAvailable": true, "via": ["lodash"]}}}"#;
        let found = parse(ToolFormat::NpmAudit, npm, repo).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Warning);
        assert_eq!(
            found[0].message,
            "lodash (<4.17.21) is vulnerable: GHSA-35jh-r3h4-6jhm (Command injection); `npm audit fix` fixes it"
        );
    }

    #[test]
    fn ruff_and_eslint_reports_become_findings() {
        let repo = Path::new("/repo");
        let ruff = r#"[{"code": "F401", "message": "`os` imported but unused", "filename": "/repo/lambda/a.py",
                        "location": {"row": 3, "column": 8}, "end_location": {"row": 3, "column": 10}}]"#;
        let found = parse(ToolFormat::Ruff, ruff, repo).unwrap();
        assert_eq!(found[0].path, "lambda/a.py");
        assert_eq!((found[0].pos.line, found[0].pos.column), (3, 8));
        assert_eq!(found[0].rule, "F401");

        let eslint = r#"[{"filePath": "/repo/frontend/src/app.js", "messages": [
            {"ruleId": "no-unused-vars", "severity": 2, "message": "'x' is defined but never used.", "line": 4, "column": 7},
            {"ruleId": "eqeqeq", "severity": 1, "message": "Expected '==='.", "line": 9, "column": 11}]}]"#;
        let found = parse(ToolFormat::Eslint, eslint, repo).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].severity, Severity::Error);
        assert_eq!(found[1].severity, Severity::Warning);
        assert_eq!(found[1].path, "frontend/src/app.js");
    }

    #[test]
    fn quoted_values_that_could_be_secrets_are_hidden_and_names_are_kept() {
        let message = redact_message(
            "'Sup3rS3cretPassw0rd' is not of type 'integer' in 'AWS::RDS::DBInstance' for 'MasterUserPassword' (`MyBucketPolicy2`)",
        );
        assert!(!message.contains("Sup3rS3cretPassw0rd"), "{message}");
        assert!(message.starts_with("'[REDACTED]' is not of type 'integer'"), "{message}");
        for kept in ["'AWS::RDS::DBInstance'", "'MasterUserPassword'", "`MyBucketPolicy2`"] {
            assert!(message.contains(kept), "{kept} hidden: {message}");
        }
    }

    #[test]
    fn output_that_is_not_the_expected_json_is_not_findings() {
        assert_eq!(parse(ToolFormat::CfnLint, "Traceback (most recent call last):", Path::new("/")), None);
        assert_eq!(parse(ToolFormat::Text, "[]", Path::new("/")), None);
    }
}
