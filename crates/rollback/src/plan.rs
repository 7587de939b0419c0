//! Planning, pure: an environment's releases and what to go back to in, what changes out.

use std::fmt::Write as _;

use run_state::Release;
use run_state::release::{FunctionRelease, Parameter, StackRelease};

use crate::Error;

/// Which release to go back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A release by id (`--to`).
    To(String),
    /// The release N before the one running now (`--steps N`, 1 by default).
    Steps(usize),
}

/// The release running now and the one to go back to (pure). An unknown id or too many steps is
/// an error naming the releases there are.
pub fn choose<'a>(env: &str, releases: &'a [Release], target: &Target) -> Result<(&'a Release, &'a Release), Error> {
    let Some(current) = releases.last() else { return Err(Error::NoRelease { env: env.into() }) };
    let known = || releases.iter().rev().take(5).map(|r| r.id.clone()).collect::<Vec<_>>().join(", ");
    let to = match target {
        Target::To(id) => releases.iter().find(|r| &r.id == id).ok_or_else(|| Error::UnknownRelease {
            env: env.into(),
            id: id.clone(),
            known: known(),
        })?,
        Target::Steps(steps) => {
            let index = releases.len().checked_sub(1 + steps).ok_or_else(|| Error::TooFewReleases {
                env: env.into(),
                steps: *steps,
                count: releases.len(),
            })?;
            &releases[index]
        }
    };
    if to.id == current.id {
        return Err(Error::AlreadyRunning { env: env.into(), id: to.id.clone() });
    }
    Ok((current, to))
}

/// What happens to one stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StackStep {
    /// One change set back to the release's template and parameters.
    Restore(Box<StackRelease>),
    /// Already as the release has it.
    Stays(String),
}

/// What happens to one function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionStep {
    /// `UpdateFunctionCode` from the release's zip, verified by its `CodeSha256`.
    Restore(FunctionRelease),
    /// Already as the release has it, or not in it.
    Stays(String),
}

/// What a rollback does (pure: [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RollbackPlan {
    /// The environment.
    pub env: String,
    /// The release running now.
    pub from: Release,
    /// The release to go back to.
    pub to: Release,
    /// Per stack, by name.
    pub stacks: Vec<(String, StackStep)>,
    /// Per function, by name.
    pub functions: Vec<(String, FunctionStep)>,
    /// The site: whether it goes back (and to which publisher release), or why it stays.
    pub site: Option<Result<String, String>>,
}

/// Plans going from `from` back to `to` (pure): a stack goes back when its template or
/// parameters differ, a function when its `CodeSha256` differs, the site when its release
/// differs; what `to` does not know stays as it is.
pub fn plan(env: &str, from: &Release, to: &Release) -> RollbackPlan {
    let mut stacks = Vec::new();
    for (name, earlier) in &to.stacks {
        let step = match from.stacks.get(name) {
            Some(now) if now.template_sha256 == earlier.template_sha256 && now.parameters == earlier.parameters => {
                StackStep::Stays("template and parameters as in the release".into())
            }
            _ => StackStep::Restore(Box::new(earlier.clone())),
        };
        stacks.push((name.clone(), step));
    }
    for name in from.stacks.keys().filter(|n| !to.stacks.contains_key(*n)) {
        stacks.push((name.clone(), StackStep::Stays(format!("not in release {}: left as it is", to.id))));
    }
    let mut functions = Vec::new();
    for (name, earlier) in &to.functions {
        let step = match from.functions.get(name) {
            Some(now) if now.code_sha256 == earlier.code_sha256 => FunctionStep::Stays("code as in the release".into()),
            _ => FunctionStep::Restore(earlier.clone()),
        };
        functions.push((name.clone(), step));
    }
    for name in from.functions.keys().filter(|n| !to.functions.contains_key(*n)) {
        functions.push((name.clone(), FunctionStep::Stays(format!("not in release {}: left as it is", to.id))));
    }
    let site = match (&from.site, &to.site) {
        (_, None) => from.site.as_ref().map(|_| Err(format!("not in release {}: left as it is", to.id))),
        (Some(now), Some(earlier)) if now.release_id == earlier.release_id => {
            Some(Err("the release's files are live".into()))
        }
        (_, Some(earlier)) => Some(Ok(earlier.release_id.clone())),
    };
    RollbackPlan { env: env.into(), from: from.clone(), to: to.clone(), stacks, functions, site }
}

impl RollbackPlan {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.stacks.iter().all(|(_, s)| matches!(s, StackStep::Stays(_)))
            && self.functions.iter().all(|(_, f)| matches!(f, FunctionStep::Stays(_)))
            && !matches!(self.site, Some(Ok(_)))
    }

    /// The components the rollback deploys (recorded under the environment's deploy step).
    pub fn components(&self) -> Vec<String> {
        let mut components: Vec<String> = self
            .to
            .stacks
            .values()
            .flat_map(|s| {
                if s.components.is_empty() { vec![run_state::PIPELINE.to_string()] } else { s.components.clone() }
            })
            .chain(self.to.functions.values().map(|f| f.component.clone()))
            .chain(self.to.site.iter().map(|s| s.component.clone()))
            .collect();
        if components.is_empty() {
            components.push(run_state::PIPELINE.to_string());
        }
        components.sort();
        components.dedup();
        components
    }

    /// The plan as printed before anything changes ([`run_state::StagePlan::describe`]).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rollback `{}` from release {} (commit {}) to release {} (commit {})",
            self.env,
            self.from.id,
            run_state::prefix(&self.from.commit, 12),
            self.to.id,
            run_state::prefix(&self.to.commit, 12)
        );
        for (name, step) in &self.stacks {
            match step {
                StackStep::Restore(stack) => {
                    let parameters: Vec<String> = stack
                        .parameters
                        .iter()
                        .map(|(k, v)| match v {
                            Parameter::Value(value) => format!("{k}={value}"),
                            Parameter::UsePreviousValue => format!("{k}=(previous value)"),
                        })
                        .collect();
                    let _ = writeln!(
                        out,
                        "  stack {name} ({}): back to {} with {}",
                        stack.stack_name,
                        stack.template_url,
                        if parameters.is_empty() { "no parameters".into() } else { parameters.join(", ") }
                    );
                }
                StackStep::Stays(why) => {
                    let _ = writeln!(out, "  stack {name}: stays ({why})");
                }
            }
        }
        for (name, step) in &self.functions {
            match step {
                FunctionStep::Restore(f) => {
                    let _ = writeln!(
                        out,
                        "  function {name} ({}): code back to s3://{}/{} (CodeSha256 {})",
                        f.function_name, f.bucket, f.key, f.code_sha256
                    );
                }
                FunctionStep::Stays(why) => {
                    let _ = writeln!(out, "  function {name}: stays ({why})");
                }
            }
        }
        match &self.site {
            Some(Ok(release)) => {
                let _ = writeln!(
                    out,
                    "  site: back to its release {release} (HTML, runtime config, manifest; one invalidation)"
                );
            }
            Some(Err(why)) => {
                let _ = writeln!(out, "  site: stays ({why})");
            }
            None => {}
        }
        if self.is_empty() {
            out.push_str("  nothing differs: the environment already runs what the release ran\n");
        }
        out
    }
}

impl run_state::StagePlan for RollbackPlan {
    fn describe(&self) -> String {
        RollbackPlan::describe(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn release(id: &str, template: &str, code: &str, site: &str) -> Release {
        let stack = StackRelease {
            stack_name: "app-dev".into(),
            region: "us-east-1".into(),
            template_key: format!("templates/app-{template}.json"),
            template_url: format!("https://b.s3.amazonaws.com/templates/app-{template}.json"),
            template_sha256: template.into(),
            parameters: BTreeMap::from([
                ("Stage".into(), Parameter::Value("dev".into())),
                ("Password".into(), Parameter::UsePreviousValue),
            ]),
            capabilities: Vec::new(),
            tags: BTreeMap::new(),
            components: vec!["infra".into()],
            fixed_templates: BTreeMap::new(),
            run_id: id.into(),
        };
        let function = FunctionRelease {
            component: "api".into(),
            stack: "app".into(),
            path: vec!["Api".into()],
            function_name: "api-fn".into(),
            bucket: "b".into(),
            key: format!("lambda/api-{code}.zip"),
            code_sha256: code.into(),
            run_id: id.into(),
        };
        let site = run_state::release::SiteRelease {
            component: "web".into(),
            bucket: "site".into(),
            prefix: String::new(),
            release_id: site.into(),
            manifest_key: format!(".publish/kept/releases/{site}.json"),
            distribution: None,
            run_id: id.into(),
        };
        Release {
            id: id.into(),
            env: "dev".into(),
            commit: format!("commit-{id}"),
            at: None,
            rollback: None,
            artifact_bucket: Some("b".into()),
            stacks: BTreeMap::from([("app".into(), stack)]),
            functions: BTreeMap::from([("api".into(), function)]),
            site: Some(site),
        }
    }

    #[test]
    fn the_earlier_release_is_chosen_by_id_or_steps_and_a_wrong_one_names_those_there_are() {
        let releases = vec![release("r1", "t1", "c1", "s1"), release("r2", "t2", "c2", "s2")];
        let (from, to) = choose("dev", &releases, &Target::Steps(1)).unwrap();
        assert_eq!((from.id.as_str(), to.id.as_str()), ("r2", "r1"));
        let (_, to) = choose("dev", &releases, &Target::To("r1".into())).unwrap();
        assert_eq!(to.id, "r1");
        let unknown = choose("dev", &releases, &Target::To("r9".into())).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "`dev` has no release `r9`; its latest are r2, r1 (`status-report releases --env dev`)"
        );
        assert!(matches!(choose("dev", &releases, &Target::Steps(2)), Err(Error::TooFewReleases { count: 2, .. })));
        assert!(matches!(choose("dev", &releases, &Target::To("r2".into())), Err(Error::AlreadyRunning { .. })));
        assert!(matches!(choose("dev", &[], &Target::Steps(1)), Err(Error::NoRelease { .. })));
    }

    #[test]
    fn what_differs_goes_back_and_what_is_the_same_stays() {
        let (r1, r2) = (release("r1", "t1", "c1", "s1"), release("r2", "t2", "c1", "s2"));
        let plan = plan("dev", &r2, &r1);
        assert!(matches!(&plan.stacks[0].1, StackStep::Restore(s) if s.template_sha256 == "t1"));
        assert!(matches!(&plan.functions[0].1, FunctionStep::Stays(_)), "same code: {plan:?}");
        assert_eq!(plan.site, Some(Ok("s1".into())));
        assert_eq!(plan.components(), ["api", "infra", "web"]);
        let text = plan.describe();
        assert!(text.contains("stack app (app-dev): back to https://b.s3.amazonaws.com/templates/app-t1.json with Password=(previous value), Stage=dev"), "{text}");
        assert!(text.contains("function api: stays (code as in the release)"), "{text}");
        assert!(text.contains("site: back to its release s1"), "{text}");
        assert!(super::plan("dev", &r1, &r1.clone()).is_empty());
    }
}
