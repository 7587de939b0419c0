//! `stack-outputs.json`: what the deploy stage hands to the publish and E2E stages.
//!
//! One file per run, holding every environment the run deployed to and, in each, every
//! configured stack with its deployed name, region and outputs. The deploy stage writes
//! it ([`StackOutputs::merge_into`] keeps what other environments wrote); readers look an
//! output up by environment, stack and output name and get an error that names all three.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, RunDir, RunFile};

/// The stack outputs of a run, by environment (`dev`, `prod`) then configured stack name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackOutputs {
    /// Environment name to its stacks.
    pub environments: BTreeMap<String, BTreeMap<String, DeployedStack>>,
}

/// One stack as deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedStack {
    /// The CloudFormation stack name (after `{env}` was filled in).
    pub stack_name: String,
    /// The region it lives in.
    pub region: String,
    /// The stack's ARN, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    /// Output key to value.
    pub outputs: BTreeMap<String, String>,
}

/// An output a reader asked for that the run does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The run deployed nothing to this environment.
    #[error(
        "the run has no stack outputs for environment `{environment}`; run `stack-deployer --env {environment}` first"
    )]
    NoEnvironment {
        /// The environment.
        environment: String,
    },
    /// No such configured stack in that environment.
    #[error("the run's `{environment}` outputs have no stack `{stack}` (it has: {known})")]
    NoStack {
        /// The environment.
        environment: String,
        /// The configured stack name.
        stack: String,
        /// The stacks it has.
        known: String,
    },
    /// The stack has no such output.
    #[error(
        "stack `{stack_name}` (`{stack}` in `{environment}`) has no output `{output}`; add it to the template's Outputs or fix the name"
    )]
    NoOutput {
        /// The environment.
        environment: String,
        /// The configured stack name.
        stack: String,
        /// The CloudFormation stack name.
        stack_name: String,
        /// The output asked for.
        output: String,
    },
}

impl StackOutputs {
    /// Reads the run's file; [`Error::MissingInput`] names the deploy stage when it is missing.
    pub fn read(run: &RunDir) -> Result<StackOutputs, Error> {
        run.read_json(RunFile::StackOutputs)
    }

    /// Writes these environments into the run's file, keeping the environments it already
    /// holds that these do not replace.
    pub fn merge_into(&self, run: &RunDir) -> Result<(), Error> {
        let mut all =
            if run.file(RunFile::StackOutputs).exists() { StackOutputs::read(run)? } else { StackOutputs::default() };
        for (env, stacks) in &self.environments {
            all.environments.insert(env.clone(), stacks.clone());
        }
        let json = serde_json::to_vec_pretty(&all).map_err(|e| Error::BadRunFile {
            path: run.file(RunFile::StackOutputs),
            message: format!("cannot serialise the stack outputs ({e})"),
        })?;
        run.write(RunFile::StackOutputs, &json).map(drop)
    }

    /// One output's value.
    pub fn output(&self, environment: &str, stack: &str, output: &str) -> Result<&str, LookupError> {
        let stacks = self
            .environments
            .get(environment)
            .ok_or_else(|| LookupError::NoEnvironment { environment: environment.to_owned() })?;
        let deployed = stacks.get(stack).ok_or_else(|| LookupError::NoStack {
            environment: environment.to_owned(),
            stack: stack.to_owned(),
            known: stacks.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
        })?;
        deployed.outputs.get(output).map(String::as_str).ok_or_else(|| LookupError::NoOutput {
            environment: environment.to_owned(),
            stack: stack.to_owned(),
            stack_name: deployed.stack_name.clone(),
            output: output.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_merge_and_lookups_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path(), "run-1").unwrap();
        let stack = |name: &str| DeployedStack {
            stack_name: name.into(),
            region: "us-east-1".into(),
            stack_id: None,
            outputs: BTreeMap::from([("UserPoolId".to_owned(), "pool-1".to_owned())]),
        };
        let dev = StackOutputs {
            environments: BTreeMap::from([("dev".into(), BTreeMap::from([("app".into(), stack("app-dev"))]))]),
        };
        dev.merge_into(&run).unwrap();
        let prod = StackOutputs {
            environments: BTreeMap::from([("prod".into(), BTreeMap::from([("app".into(), stack("app-prod"))]))]),
        };
        prod.merge_into(&run).unwrap();
        let all = StackOutputs::read(&run).unwrap();
        assert_eq!(all.output("dev", "app", "UserPoolId").unwrap(), "pool-1");
        assert_eq!(all.environments["prod"]["app"].stack_name, "app-prod");
        assert_eq!(
            all.output("dev", "app", "ApiUrl").unwrap_err().to_string(),
            "stack `app-dev` (`app` in `dev`) has no output `ApiUrl`; add it to the template's Outputs or fix the name"
        );
        assert!(all.output("qa", "app", "x").unwrap_err().to_string().contains("stack-deployer --env qa"));
        assert!(all.output("dev", "web", "x").unwrap_err().to_string().contains("(it has: app)"));
    }
}
