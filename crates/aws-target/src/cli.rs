//! The flags every AWS-facing binary takes (`#[command(flatten)]`).

use crate::Target;

/// Where to send AWS calls.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Send every AWS call to this endpoint (the emulator) [env: AWS_ENDPOINT_URL].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// The AWS region [default: AWS_REGION or the profile's].
    #[arg(long)]
    pub region: Option<String>,
    /// The AWS profile [default: AWS_PROFILE or `default`].
    #[arg(long)]
    pub profile: Option<String>,
    /// The external id to assume the environment's role with, replacing
    /// [deploy.environments.NAME] external_id (CodeBuild reads it from Parameter Store).
    #[arg(long, value_name = "ID")]
    pub external_id: Option<String>,
}

impl TargetArgs {
    /// The target these flags describe.
    pub fn target(&self) -> Target {
        Target {
            endpoint_url: self.endpoint_url.clone(),
            region: self.region.clone(),
            profile: self.profile.clone(),
            assume_role: None,
            external_id: self.external_id.clone(),
        }
    }
}
