//! The approval as CodePipeline recorded it: in CodeBuild, DeployProd does not take an approver
//! from an environment variable any step could set; it reads the manual-approval action of its
//! own pipeline execution through the CodePipeline API (`ListActionExecutions`), and records
//! that action's result, approver (the ARN CodePipeline names) and comment.
//!
//! [`verdict`] is pure (the action executions in, the decision out); [`approval_of`] asks
//! CodePipeline for them.

use aws_sdk_codepipeline::types::{ActionCategory, ActionExecutionDetail, ActionExecutionStatus};

/// What CodePipeline says of the manual approval of one pipeline execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipelineApproval {
    /// Every manual-approval action of the execution succeeded; the last one's approver.
    Approved {
        /// The approval action (`Approval.ApproveProduction`).
        action: String,
        /// Who approved, as CodePipeline names them (an IAM ARN).
        by: String,
        /// Their comment.
        comment: Option<String>,
    },
    /// A manual-approval action was rejected.
    Rejected {
        /// The approval action.
        action: String,
        /// Who rejected it.
        by: String,
        /// Their comment.
        comment: Option<String>,
    },
    /// A manual-approval action is still waiting (or ended otherwise, with its status).
    Undecided {
        /// The approval action.
        action: String,
        /// Its status.
        status: String,
    },
    /// The execution has no manual-approval action at all.
    NoApprovalAction,
}

impl PipelineApproval {
    /// One line for a record or an error.
    pub fn describe(&self, pipeline: &str, execution: &str) -> String {
        match self {
            PipelineApproval::Approved { action, by, .. } => {
                format!("approved by {by} (CodePipeline {pipeline}, execution {execution}, action {action})")
            }
            PipelineApproval::Rejected { action, by, .. } => {
                format!("rejected by {by} (CodePipeline {pipeline}, execution {execution}, action {action})")
            }
            PipelineApproval::Undecided { action, status } => format!(
                "the approval action {action} of CodePipeline {pipeline} execution {execution} is {status}, not approved"
            ),
            PipelineApproval::NoApprovalAction => format!(
                "CodePipeline {pipeline} execution {execution} has no manual-approval action: nothing approved this execution"
            ),
        }
    }
}

/// The approval of one execution from its action executions (pure): every manual-approval
/// action must have succeeded, with CodePipeline naming who approved; a rejected one refuses.
pub fn verdict(details: &[ActionExecutionDetail]) -> PipelineApproval {
    let approvals: Vec<&ActionExecutionDetail> = details
        .iter()
        .filter(|d| d.input().and_then(|i| i.action_type_id()).map(|t| t.category()) == Some(&ActionCategory::Approval))
        .collect();
    let Some(last) = approvals.iter().max_by_key(|d| d.last_update_time().map(|t| (t.secs(), t.subsec_nanos()))) else {
        return PipelineApproval::NoApprovalAction;
    };
    let name = |d: &ActionExecutionDetail| {
        format!("{}.{}", d.stage_name().unwrap_or_default(), d.action_name().unwrap_or_default())
    };
    let comment = |d: &ActionExecutionDetail| {
        d.output()
            .and_then(|o| o.execution_result())
            .and_then(|r| r.external_execution_summary())
            .map(str::to_string)
            .filter(|c| !c.trim().is_empty())
    };
    let by = |d: &ActionExecutionDetail| d.updated_by().unwrap_or_default().to_string();
    if let Some(rejected) = approvals.iter().find(|d| d.status() == Some(&ActionExecutionStatus::Failed)) {
        return PipelineApproval::Rejected { action: name(rejected), by: by(rejected), comment: comment(rejected) };
    }
    if let Some(open) = approvals.iter().find(|d| d.status() != Some(&ActionExecutionStatus::Succeeded)) {
        let status = open.status().map_or("without a status".to_string(), |s| s.as_str().to_string());
        return PipelineApproval::Undecided { action: name(open), status };
    }
    if by(last).trim().is_empty() {
        return PipelineApproval::Undecided { action: name(last), status: "Succeeded naming no approver".into() };
    }
    PipelineApproval::Approved { action: name(last), by: by(last), comment: comment(last) }
}

/// CodePipeline could not be asked.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read the action executions of CodePipeline `{pipeline}` execution `{execution}` ({kind}); check the names and the role's codepipeline:ListActionExecutions on the pipeline"
)]
pub struct Error {
    /// The pipeline.
    pub pipeline: String,
    /// The execution.
    pub execution: String,
    /// What kind of failure.
    pub kind: aws_target::ErrorKind,
    /// The SDK's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Asks CodePipeline for the action executions of `execution` of `pipeline` (every page) and
/// decides its approval.
pub async fn approval_of(
    client: &aws_sdk_codepipeline::Client,
    pipeline: &str,
    execution: &str,
) -> Result<PipelineApproval, Error> {
    let filter = aws_sdk_codepipeline::types::ActionExecutionFilter::builder().pipeline_execution_id(execution).build();
    let mut details = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_action_executions()
            .pipeline_name(pipeline)
            .filter(filter.clone())
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| Error {
                pipeline: pipeline.into(),
                execution: execution.into(),
                kind: aws_target::ErrorKind::of(&e),
                source: e.into(),
            })?;
        details.extend(page.action_execution_details().iter().cloned());
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => break,
        }
    }
    Ok(verdict(&details))
}
