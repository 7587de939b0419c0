//! The approval as CodePipeline holds it (`status-report approve --codepipeline`).
//!
//! Recorded AWS-shaped responses (aws-smithy-mocks) for `ListActionExecutions`: moto 5.2.5 has
//! CodePipeline's pipelines but not their action executions. What is checked is the decision
//! from CodePipeline's own record: the approver is the ARN CodePipeline names, a rejection or an
//! undecided action is no approval, and every page is read. Through the binary against moto,
//! where the call cannot be answered, nothing is approved.

use std::process::Command;

use aws_sdk_codepipeline::operation::list_action_executions::ListActionExecutionsOutput;
use aws_sdk_codepipeline::primitives::DateTime;
use aws_sdk_codepipeline::types::{
    ActionCategory, ActionExecutionDetail, ActionExecutionInput, ActionExecutionOutput, ActionExecutionResult,
    ActionExecutionStatus, ActionOwner, ActionTypeId,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use status_report::codepipeline::{PipelineApproval, approval_of};

fn action(
    stage: &str,
    name: &str,
    category: ActionCategory,
    status: ActionExecutionStatus,
    by: Option<&str>,
    summary: Option<&str>,
    at: i64,
) -> ActionExecutionDetail {
    let type_id = ActionTypeId::builder()
        .category(category)
        .owner(ActionOwner::Aws)
        .provider("Manual")
        .version("1")
        .build()
        .unwrap();
    let mut output = ActionExecutionOutput::builder();
    if let Some(summary) = summary {
        output = output.execution_result(ActionExecutionResult::builder().external_execution_summary(summary).build());
    }
    ActionExecutionDetail::builder()
        .pipeline_execution_id("exec-1")
        .stage_name(stage)
        .action_name(name)
        .status(status)
        .set_updated_by(by.map(str::to_string))
        .last_update_time(DateTime::from_secs(at))
        .input(ActionExecutionInput::builder().action_type_id(type_id).build())
        .output(output.build())
        .build()
}

fn build(stage: &str) -> ActionExecutionDetail {
    action(
        stage,
        stage,
        ActionCategory::Build,
        ActionExecutionStatus::Succeeded,
        Some("arn:aws:iam::1:role/cb"),
        None,
        1,
    )
}

async fn decide(pages: Vec<Vec<ActionExecutionDetail>>) -> (PipelineApproval, usize) {
    let count = pages.len();
    let rules: Vec<_> = pages
        .into_iter()
        .enumerate()
        .map(|(i, page)| {
            let token = format!("page-{i}");
            let next = (i + 1 < count).then(|| format!("page-{}", i + 1));
            mock!(aws_sdk_codepipeline::Client::list_action_executions)
                .match_requests(move |r| {
                    r.pipeline_name() == Some("app-pipeline")
                        && r.filter().and_then(|f| f.pipeline_execution_id()) == Some("exec-1")
                        && r.next_token().map(str::to_string) == (i > 0).then(|| token.clone())
                })
                .then_output(move || {
                    ListActionExecutionsOutput::builder()
                        .set_action_execution_details(Some(page.clone()))
                        .set_next_token(next.clone())
                        .build()
                })
        })
        .collect();
    let client = mock_client!(aws_sdk_codepipeline, RuleMode::MatchAny, rules.iter().collect::<Vec<_>>().as_slice());
    let found = approval_of(&client, "app-pipeline", "exec-1").await.unwrap();
    (found, rules.iter().map(|r| r.num_calls()).sum())
}

#[tokio::test]
async fn the_approver_is_the_one_codepipeline_names_and_every_page_is_read() {
    let approved = action(
        "Approval",
        "ApproveProduction",
        ActionCategory::Approval,
        ActionExecutionStatus::Succeeded,
        Some("arn:aws:iam::123456789012:user/alice"),
        Some("release 42 looks good"),
        5,
    );
    let (found, calls) = decide(vec![vec![build("Build"), build("Test")], vec![approved]]).await;
    assert_eq!(calls, 2, "both pages read");
    assert_eq!(
        found,
        PipelineApproval::Approved {
            action: "Approval.ApproveProduction".into(),
            by: "arn:aws:iam::123456789012:user/alice".into(),
            comment: Some("release 42 looks good".into()),
        }
    );
}

#[tokio::test]
async fn a_rejected_waiting_unnamed_or_missing_approval_is_no_approval() {
    let approval = |status, by: Option<&str>| {
        action("Approval", "ApproveProduction", ActionCategory::Approval, status, by, Some("no"), 5)
    };
    let (found, _) = decide(vec![vec![approval(ActionExecutionStatus::Failed, Some("arn:aws:iam::1:user/bob"))]]).await;
    assert!(matches!(found, PipelineApproval::Rejected { ref by, .. } if by == "arn:aws:iam::1:user/bob"), "{found:?}");
    let (found, _) = decide(vec![vec![approval(ActionExecutionStatus::InProgress, None)]]).await;
    assert_eq!(
        found,
        PipelineApproval::Undecided { action: "Approval.ApproveProduction".into(), status: "InProgress".into() }
    );
    let (found, _) = decide(vec![vec![approval(ActionExecutionStatus::Succeeded, None)]]).await;
    assert!(matches!(found, PipelineApproval::Undecided { .. }), "an approval naming nobody: {found:?}");
    let (found, _) = decide(vec![vec![build("Build"), build("DeployProd")]]).await;
    assert_eq!(found, PipelineApproval::NoApprovalAction);
    assert!(found.describe("app-pipeline", "exec-1").contains("nothing approved this execution"));
}

/// Through the binary: where CodePipeline cannot answer (moto has no action executions), the
/// approval is not recorded and production stays refused.
#[test]
fn the_binary_records_no_approval_codepipeline_cannot_vouch_for() {
    let moto = test_support::Moto::shared();
    let repo = tempfile::tempdir().unwrap();
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    use run_state::Store;
    store
        .record(&run_state::StepRecord::new(
            "r1",
            "abc",
            run_state::PIPELINE,
            run_state::Step::Diff,
            run_state::Status::Passed,
        ))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_status-report"))
        .args(["--repo"])
        .arg(repo.path())
        .args(["--endpoint-url", &moto.endpoint, "--region", "us-east-1"])
        .args(["approve", "--run", "r1", "--codepipeline", "app-pipeline", "--execution", "exec-1"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("CodePipeline `app-pipeline` execution `exec-1`"), "{said}");
    let records = store.run("r1").unwrap();
    assert!(
        matches!(status_report::approval::state(&records), status_report::approval::ApprovalState::NotRequested),
        "{records:?}"
    );
    // Naming an approver by hand cannot be mixed in.
    let out = Command::new(env!("CARGO_BIN_EXE_status-report"))
        .args(["--repo"])
        .arg(repo.path())
        .args(["approve", "--run", "r1", "--by", "mallory", "--codepipeline", "app-pipeline", "--execution", "exec-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
