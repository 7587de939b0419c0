//! One way to reach an environment's account: `[deploy.environments.NAME]`'s `region`,
//! `role_arn` and `external_id` read once ([`Account::from_config`]) and turned into the
//! [`Target`] every stage of that environment uses ([`Target::for_environment`]).
//!
//! stack-deployer owns `[deploy]`; these three keys are read here too because every stage that
//! talks to an environment's account (the stack deploy, the publish, the site check, the
//! pipeline) must reach it the same way: its region, its role assumed. Only these keys are read;
//! the rest of the section is stack-deployer's to check.

use std::collections::BTreeMap;

use pipeline_config::{ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

use crate::{AssumeRole, Error, Target, is_region_name};

/// The account an environment lives in, as its config names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// Its region; otherwise the caller's (`--region`, `AWS_REGION`, the profile).
    pub region: Option<String>,
    /// The role to assume to reach it; otherwise the caller's own credentials.
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DeployAccounts {
    #[serde(default)]
    environments: BTreeMap<String, AccountSpec>,
}

// Not `deny_unknown_fields`: the other keys are stack-deployer's.
#[derive(Debug, Default, Deserialize)]
struct AccountSpec {
    region: Option<Spanned<String>>,
    role_arn: Option<Spanned<String>>,
    external_id: Option<Spanned<String>>,
}

/// The section the environments live in.
pub const SECTION: &str = "deploy";

impl Account {
    /// The account of `environment` in `[deploy.environments]`, checked: a region name, a role
    /// ARN (`arn:PARTITION:iam::ACCOUNT:role/NAME`), an external id only with a role. An
    /// environment the section does not name is an error when it names any (a typo must not
    /// reach the pipeline's own account); with none, the caller's account.
    pub fn from_config(config: &ConfigFile, environment: &str) -> Result<Account, ConfigError> {
        let section: DeployAccounts = config.section(SECTION)?;
        let Some(spec) = section.environments.get(environment) else {
            if section.environments.is_empty() {
                return Ok(Account::default());
            }
            return Err(ConfigError::file(
                &config.path,
                format!(
                    "deploy.environments: no environment `{environment}`; add [deploy.environments.{environment}] or use one of: {}",
                    section.environments.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        let key = |name: &str| format!("deploy.environments.{environment}.{name}");
        let at = |value: &Spanned<String>, name: &str, message: String| {
            ConfigError::at(&config.path, &config.text, value.span(), key(name), message)
        };
        if let Some(region) = &spec.region
            && !is_region_name(region.get_ref())
        {
            return Err(at(
                region,
                "region",
                format!("`{}` is not a region name (like `us-east-1`)", region.get_ref()),
            ));
        }
        if let Some(role) = &spec.role_arn
            && role_account(role.get_ref()).is_none()
        {
            return Err(at(
                role,
                "role_arn",
                format!("`{}` is not a role ARN (like `arn:aws:iam::111111111111:role/deploy`)", role.get_ref()),
            ));
        }
        if let Some(id) = &spec.external_id {
            if spec.role_arn.is_none() {
                return Err(at(id, "external_id", "set without role_arn; add role_arn".into()));
            }
            let valid = (2..=1224).contains(&id.get_ref().len())
                && id.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c));
            if !valid {
                return Err(at(
                    id,
                    "external_id",
                    "must be 2 to 1224 letters, digits and `+=,.@:/-_`, as STS takes it".into(),
                ));
            }
        }
        Ok(Account {
            region: spec.region.as_ref().map(|r| r.get_ref().clone()),
            role_arn: spec.role_arn.as_ref().map(|r| r.get_ref().clone()),
            external_id: spec.external_id.as_ref().map(|r| r.get_ref().clone()),
        })
    }

    /// The 12-digit account its role lives in; `None` for the caller's own account.
    pub fn account_id(&self) -> Option<&str> {
        self.role_arn.as_deref().and_then(role_account)
    }
}

/// The account of a role ARN (`arn:PARTITION:iam::ACCOUNT:role/NAME`), when it is one.
pub fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let name = resource.strip_prefix("role/")?;
    let ok = !partition.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name.rsplit('/').next().is_some_and(|n| !n.is_empty());
    ok.then_some(account)
}

/// The session name CloudTrail shows for `who` (`stack-deployer`) reaching `environment`:
/// `who-environment`, cut to STS's 64 characters.
pub fn session_name(who: &str, environment: &str) -> String {
    let mut name: String = format!("{who}-{environment}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) { c } else { '-' })
        .collect();
    name.truncate(64);
    name
}

impl Target {
    /// This target (the caller's: `--endpoint-url`, `--region`, `--profile`) aimed at an
    /// environment's account: the environment's region unless the caller named one (a different
    /// one is an error: the environment's stacks and buckets are in its own), and its role
    /// assumed with the session name `who-environment`.
    ///
    /// Every stage that talks to an environment builds its clients from this: the stack
    /// deployer, the publisher (publish and check) and the pipeline.
    pub fn for_environment(&self, environment: &str, account: &Account, who: &str) -> Result<Target, Error> {
        let mut target = self.clone();
        match (&self.region, &account.region) {
            (Some(given), Some(own)) if given != own => {
                return Err(Error::RegionConflict {
                    environment: environment.to_owned(),
                    given: given.clone(),
                    own: own.clone(),
                });
            }
            (None, Some(own)) => target.region = Some(own.clone()),
            _ => {}
        }
        target.assume_role = account.role_arn.as_ref().map(|role_arn| AssumeRole {
            role_arn: role_arn.clone(),
            external_id: self.external_id.clone().or_else(|| account.external_id.clone()),
            session_name: session_name(who, environment),
        });
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ConfigFile {
        ConfigFile::from_text("pipeline.toml".as_ref(), text)
    }

    const TEXT: &str = "[deploy]\nartifact_bucket = \"a\"\n[deploy.environments.dev]\nregion = \"us-east-1\"\n\
        [deploy.environments.prod]\nregion = \"eu-west-1\"\nrole_arn = \"arn:aws:iam::111111111111:role/deploy\"\n\
        external_id = \"ext-1\"\n[deploy.environments.prod.stacks.api]\nstack_name = \"x\"\n";

    #[test]
    fn an_environment_is_its_region_and_role() {
        let prod = Account::from_config(&config(TEXT), "prod").unwrap();
        assert_eq!(prod.region.as_deref(), Some("eu-west-1"));
        assert_eq!(prod.account_id(), Some("111111111111"));
        let base = Target { endpoint_url: Some("http://127.0.0.1:1".into()), ..Target::default() };
        let target = base.for_environment("prod", &prod, "frontend-publisher").unwrap();
        assert_eq!(target.region.as_deref(), Some("eu-west-1"));
        assert_eq!(target.endpoint_url, base.endpoint_url);
        let role = target.assume_role.unwrap();
        assert_eq!(role.role_arn, "arn:aws:iam::111111111111:role/deploy");
        assert_eq!(role.external_id.as_deref(), Some("ext-1"));
        assert_eq!(role.session_name, "frontend-publisher-prod");

        // An external id handed over by the caller (from a secret store) replaces the config's.
        let given = Target { external_id: Some("from-ssm".into()), ..base.clone() };
        let role = given.for_environment("prod", &prod, "x").unwrap().assume_role.unwrap();
        assert_eq!(role.external_id.as_deref(), Some("from-ssm"));

        let dev = Account::from_config(&config(TEXT), "dev").unwrap();
        let target = base.for_environment("dev", &dev, "x").unwrap();
        assert_eq!((target.region.as_deref(), target.assume_role), (Some("us-east-1"), None));

        // The caller's region must agree with the environment's.
        let same = Target { region: Some("eu-west-1".into()), ..Target::default() };
        assert!(same.for_environment("prod", &prod, "x").is_ok());
        let other = Target { region: Some("us-east-1".into()), ..Target::default() };
        let err = other.for_environment("prod", &prod, "x").unwrap_err().to_string();
        assert!(err.contains("`prod` lives in eu-west-1") && err.contains("us-east-1"), "{err}");

        // No [deploy] at all: the caller's account.
        assert_eq!(Account::from_config(&config("[publish]\n"), "prod").unwrap(), Account::default());
    }

    #[test]
    fn mistakes_name_the_key_and_line() {
        let err = Account::from_config(&config(TEXT), "qa").unwrap_err().to_string();
        assert!(err.contains("no environment `qa`") && err.contains("dev, prod"), "{err}");
        let err = Account::from_config(&config(&TEXT.replace("eu-west-1", "eu-west1")), "prod").unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(6), "deploy.environments.prod.region"), "{err}");
        let err = Account::from_config(&config(&TEXT.replace("arn:aws:iam::", "arn:aws:s3::")), "prod").unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(7), "deploy.environments.prod.role_arn"), "{err}");
        let text = TEXT.replace("role_arn = \"arn:aws:iam::111111111111:role/deploy\"\n", "");
        let err = Account::from_config(&config(&text), "prod").unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(7), "deploy.environments.prod.external_id"), "{err}");
    }

    #[test]
    fn role_arns_and_session_names() {
        assert_eq!(role_account("arn:aws:iam::123456789012:role/a/b"), Some("123456789012"));
        assert_eq!(role_account("arn:aws-cn:iam::123456789012:role/deploy"), Some("123456789012"));
        for bad in ["arn:aws:iam::12345:role/x", "arn:aws:iam::123456789012:user/x", "arn:aws:iam::123456789012:role/"]
        {
            assert_eq!(role_account(bad), None, "{bad}");
        }
        assert_eq!(session_name("stack-deployer", "prod"), "stack-deployer-prod");
        assert_eq!(session_name("x", &"e".repeat(100)).len(), 64);
    }
}
