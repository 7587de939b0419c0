//! The call log: every AWS operation a process sends, as the IAM action it is authorized as and
//! the resource ARN it touches, so a test can hold each stage's calls against its role's policy.
//!
//! Off unless `PIPELINE_CALL_LOG=FILE` is set; then every client this crate builds (and
//! [`crate::identity`], and the role [`crate::load`] assumes) appends one JSON line per call
//! ([`Call`]) to FILE, tagged with `PIPELINE_CALL_STAGE` (default: the executable's name). Lines
//! are appended whole (one `write` on a file opened for appending), so the stage binaries of one
//! rehearsal can share a file. The resource is read from the request as sent: the S3 bucket and
//! key (path-style or virtual-host), CloudFormation's `StackName` (a change set ARN is mapped to
//! its stack from the answers of this process), Lambda's function, DynamoDB's table (the key
//! values in `keys`), SNS's topic, CloudFront's distribution. What IAM checks besides the call
//! itself is logged as calls of their own: `iam:PassRole` of a change set's `RoleARN`,
//! `s3:GetObject` of a `TemplateURL` or of a Lambda code update's zip, `s3:GetObject` of a copy's
//! source. A call this module cannot place gets the resource `?`, which no policy allows: the
//! log never passes over a call in silence. Secrets are not logged (an external id is logged as
//! present, not by value).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::{Deserialize, Serialize};

/// The variable naming the file calls are appended to.
pub const LOG_VAR: &str = "PIPELINE_CALL_LOG";
/// The variable naming the stage the calls are logged under.
pub const STAGE_VAR: &str = "PIPELINE_CALL_STAGE";

/// One authorized action of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The stage (`PIPELINE_CALL_STAGE`).
    pub stage: String,
    /// The service, lower case (`s3`, `cloudformation`).
    pub service: String,
    /// The IAM action (`s3:GetObject`).
    pub action: String,
    /// The resource ARN (`arn:aws:s3:::bucket/key`); `*` for actions without one, `?` when unknown.
    pub resource: String,
    /// Who signed the call: the assumed role's ARN, or the caller's own ARN (STS's answer); `?`
    /// when not learnt.
    #[serde(default)]
    pub signer: String,
    /// Condition keys the request sets (`iam:PassedToService`, `cloudwatch:namespace`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// DynamoDB: the item's key attributes and their values (the template's key schema says which
    /// is the partition key, `dynamodb:LeadingKeys`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, String>,
}

/// Reads a call log: one [`Call`] per line.
pub fn read_log(text: &str) -> Result<Vec<Call>, serde_json::Error> {
    text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect()
}

/// Access key id → (account, principal ARN), for the credentials this process resolved (the
/// account part of an ARN is the signer's account).
static SIGNERS: Mutex<BTreeMap<String, (String, String)>> = Mutex::new(BTreeMap::new());

pub(crate) fn remember_signer(access_key_id: &str, account: &str, principal: &str) {
    SIGNERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(access_key_id.to_owned(), (account.to_owned(), principal.to_owned()));
}

fn signer_of(access_key_id: &str) -> Option<(String, String)> {
    SIGNERS.lock().unwrap_or_else(|e| e.into_inner()).get(access_key_id).cloned()
}

/// Where calls go: the file and the stage, when `PIPELINE_CALL_LOG` is set.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    path: std::path::PathBuf,
    stage: String,
}

impl Sink {
    pub(crate) fn from_env() -> Option<Sink> {
        let path = std::env::var_os(LOG_VAR).filter(|p| !p.is_empty())?;
        let stage = std::env::var(STAGE_VAR).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "unknown".into())
        });
        Some(Sink { path: path.into(), stage })
    }

    pub(crate) fn write(&self, calls: Vec<Call>) -> Result<(), BoxError> {
        let mut text = String::new();
        for mut call in calls {
            call.stage.clone_from(&self.stage);
            text.push_str(&serde_json::to_string(&call)?);
            text.push('\n');
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .map_err(|source| crate::Error::CallLog { path: self.path.clone(), source }.into())
    }
}

/// The interceptor that logs calls; one per client, built by the client builders when the log
/// is on.
#[derive(Debug, Clone)]
pub struct CallLog {
    sink: Sink,
    partition: String,
    region: String,
    state: Arc<Mutex<State>>,
}

/// What earlier answers taught: change set ARN → stack ARN, table → key attribute names.
#[derive(Debug, Default)]
struct State {
    change_sets: BTreeMap<String, String>,
    table_keys: BTreeMap<String, Vec<String>>,
}

impl CallLog {
    /// The interceptor for clients made from `config`, when `PIPELINE_CALL_LOG` is set.
    pub fn from_env(config: &SdkConfig) -> Option<CallLog> {
        let sink = Sink::from_env()?;
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        Some(CallLog { sink, partition: partition(&region).to_owned(), region, state: Arc::default() })
    }

    fn arn(&self, service: &str, account: &str, resource: &str) -> String {
        format!("arn:{}:{service}:{}:{account}:{resource}", self.partition, self.region)
    }

    /// The calls one request stands for.
    fn calls(&self, service: &str, operation: &str, request: &HttpRequest) -> Vec<Call> {
        let (account, signer) =
            access_key_id(request).and_then(|k| signer_of(&k)).unwrap_or_else(|| ("?".into(), "?".into()));
        let action = crate::iam_action(service, operation);
        let call = |resource: String| Call {
            stage: String::new(),
            service: service.to_owned(),
            action: action.clone(),
            resource,
            signer: signer.clone(),
            context: BTreeMap::new(),
            keys: BTreeMap::new(),
        };
        match service {
            "s3" => self.s3_calls(operation, request, call),
            "cloudformation" => self.cloudformation_calls(&account, request, call),
            "lambda" => self.lambda_calls(&account, request, call),
            "dynamodb" => self.dynamodb_calls(&account, operation, request, call),
            "sns" => vec![call(form(request).remove("TopicArn").unwrap_or_else(|| "*".into()))],
            "cloudwatch" => vec![call("*".into())],
            "cloudfront" => {
                let path = path_segments(request);
                let resource = match path.iter().position(|s| s == "distribution") {
                    Some(i) if i + 1 < path.len() => {
                        format!("arn:{}:cloudfront::{account}:distribution/{}", self.partition, path[i + 1])
                    }
                    _ => "*".into(),
                };
                vec![call(resource)]
            }
            "sts" => match operation {
                "GetCallerIdentity" => vec![call("*".into())],
                _ => vec![call(form(request).remove("RoleArn").unwrap_or_else(|| "?".into()))],
            },
            _ => vec![call("?".into())],
        }
    }

    fn s3_calls(&self, operation: &str, request: &HttpRequest, call: impl Fn(String) -> Call) -> Vec<Call> {
        let Some((bucket, key)) = s3_location(request) else { return vec![call("?".into())] };
        let arn = |key: &str| match key {
            "" => format!("arn:{}:s3:::{bucket}", self.partition),
            key => format!("arn:{}:s3:::{bucket}/{key}", self.partition),
        };
        let mut calls = match operation {
            "DeleteObjects" => {
                let body = std::str::from_utf8(request.body().bytes().unwrap_or_default()).unwrap_or_default();
                xml_values(body, "Key").iter().map(|k| call(arn(k))).collect()
            }
            _ => vec![call(arn(&key))],
        };
        if let Some(source) = request.headers().get("x-amz-copy-source") {
            let source = decode(source.split('?').next().unwrap_or_default());
            let mut read = call(format!("arn:{}:s3:::{}", self.partition, source.trim_start_matches('/')));
            read.action = "s3:GetObject".into();
            calls.push(read);
        }
        if calls.is_empty() {
            calls.push(call("?".into()));
        }
        calls
    }

    fn cloudformation_calls(&self, account: &str, request: &HttpRequest, call: impl Fn(String) -> Call) -> Vec<Call> {
        let params = form(request);
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stack = match (params.get("StackName"), params.get("ChangeSetName")) {
            (Some(stack), _) if stack.starts_with("arn:") => stack.clone(),
            (Some(name), _) => self.arn("cloudformation", account, &format!("stack/{name}/*")),
            (None, Some(change_set)) if change_set.starts_with("arn:") => {
                state.change_sets.get(change_set).cloned().unwrap_or_else(|| change_set.clone())
            }
            _ => "*".into(),
        };
        drop(state);
        let mut calls = vec![call(stack)];
        if let Some(role) = params.get("RoleARN") {
            let mut pass = call(role.clone());
            pass.service = "iam".into();
            pass.action = "iam:PassRole".into();
            pass.context.insert("iam:PassedToService".into(), "cloudformation.amazonaws.com".into());
            calls.push(pass);
        }
        if let Some(url) = params.get("TemplateURL") {
            let mut read = call(s3_url_arn(&self.partition, url));
            read.service = "s3".into();
            read.action = "s3:GetObject".into();
            calls.push(read);
        }
        calls
    }

    fn lambda_calls(&self, account: &str, request: &HttpRequest, call: impl Fn(String) -> Call) -> Vec<Call> {
        let path = path_segments(request);
        let resource = match path.iter().position(|s| s == "functions") {
            Some(i) if i + 1 < path.len() => {
                let name = &path[i + 1];
                if name.starts_with("arn:") {
                    name.split(':').take(7).collect::<Vec<_>>().join(":")
                } else {
                    self.arn("lambda", account, &format!("function:{}", name.split(':').next().unwrap_or_default()))
                }
            }
            _ => "*".into(),
        };
        let mut calls = vec![call(resource)];
        let body: serde_json::Value =
            serde_json::from_slice(request.body().bytes().unwrap_or_default()).unwrap_or_default();
        if let (Some(bucket), Some(key)) = (body["S3Bucket"].as_str(), body["S3Key"].as_str()) {
            let mut read = call(format!("arn:{}:s3:::{bucket}/{key}", self.partition));
            read.service = "s3".into();
            read.action = "s3:GetObject".into();
            calls.push(read);
        }
        calls
    }

    fn dynamodb_calls(
        &self,
        account: &str,
        operation: &str,
        request: &HttpRequest,
        call: impl Fn(String) -> Call,
    ) -> Vec<Call> {
        let body: serde_json::Value =
            serde_json::from_slice(request.body().bytes().unwrap_or_default()).unwrap_or_default();
        let Some(table) = body["TableName"].as_str() else { return vec![call("?".into())] };
        let mut call = call(self.arn("dynamodb", account, &format!("table/{table}")));
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = body["Key"].as_object() {
            call.keys = key.iter().map(|(k, v)| (k.clone(), scalar(v))).collect();
            state.table_keys.insert(table.to_owned(), key.keys().cloned().collect());
        } else if let Some(item) = body["Item"].as_object() {
            // The item's key attributes, as earlier calls on the table named them.
            match state.table_keys.get(table) {
                Some(names) => {
                    call.keys = names.iter().map(|n| (n.clone(), item.get(n).map(scalar).unwrap_or_default())).collect()
                }
                None => {
                    call.keys.insert("?".into(), "no earlier call on the table named its key".into());
                }
            }
        } else if operation == "Query" {
            call.keys = query_keys(&body);
        }
        vec![call]
    }
}

/// A DynamoDB attribute value as text (`{"S": "run#1"}` → `run#1`).
fn scalar(value: &serde_json::Value) -> String {
    value.as_object().and_then(|o| o.values().next()).and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

/// The equalities of a Query's key condition (`pk = :pk`, names through `#n`).
fn query_keys(body: &serde_json::Value) -> BTreeMap<String, String> {
    let expression = body["KeyConditionExpression"].as_str().unwrap_or_default();
    let mut keys = BTreeMap::new();
    for part in expression.split(" AND ").chain(expression.split(" and ")) {
        let Some((name, value)) = part.split_once('=') else { continue };
        let (name, value) = (name.trim(), value.trim());
        let name = body["ExpressionAttributeNames"][name].as_str().unwrap_or(name);
        if let Some(value) = body["ExpressionAttributeValues"].get(value) {
            keys.insert(name.to_owned(), scalar(value));
        }
    }
    keys
}

/// The partition of a region.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The access key id of a signed request (`Credential=AKID/...` of its Authorization header).
fn access_key_id(request: &HttpRequest) -> Option<String> {
    let auth = request.headers().get("authorization")?;
    let credential = auth.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_owned())
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// The request's path, split and decoded.
fn path_segments(request: &HttpRequest) -> Vec<String> {
    let uri = request.uri();
    let path = uri.split("://").nth(1).map_or(uri, |rest| rest.find('/').map_or("", |i| &rest[i..]));
    let path = path.split('?').next().unwrap_or_default();
    path.split('/').filter(|s| !s.is_empty()).map(decode).collect()
}

/// An S3 request's bucket and key: virtual-host (`bucket.s3.REGION.amazonaws.com/key`) or
/// path-style (`host/bucket/key`).
fn s3_location(request: &HttpRequest) -> Option<(String, String)> {
    let uri = request.uri();
    let rest = uri.split("://").nth(1)?;
    let host = rest.split(['/', '?']).next()?.split(':').next()?;
    let path = rest[host.len()..].trim_start_matches(|c: char| c == ':' || c.is_ascii_digit());
    let path = decode(path.split('?').next().unwrap_or_default().trim_start_matches('/'));
    if let Some(i) = host.find(".s3.").or_else(|| host.find(".s3-")) {
        return Some((host[..i].to_owned(), path));
    }
    let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
    (!bucket.is_empty()).then(|| (bucket.to_owned(), key.to_owned()))
}

/// The object an S3 URL names (`https://bucket.s3.amazonaws.com/key` or path-style).
fn s3_url_arn(partition: &str, url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = decode(path);
    match host.find(".s3.").or_else(|| host.find(".s3-")) {
        Some(i) => format!("arn:{partition}:s3:::{}/{path}", &host[..i]),
        None => format!("arn:{partition}:s3:::{path}"),
    }
}

/// Every `<tag>value</tag>` of an XML text, unescaped.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .map(|v| quick_xml::escape::unescape(v).map_or_else(|_| v.to_owned(), |u| u.into_owned()))
        .collect()
}

/// A form-encoded body (the query protocol: CloudFormation, SNS, STS) as parameters.
fn form(request: &HttpRequest) -> BTreeMap<String, String> {
    let body = std::str::from_utf8(request.body().bytes().unwrap_or_default()).unwrap_or_default();
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(&k.replace('+', " ")), decode(&v.replace('+', " "))))
        .collect()
}

/// The namespace of a `PutMetricData` call, from its input to its request.
#[derive(Debug, Clone)]
struct Namespace(String);

impl aws_smithy_types::config_bag::Storable for Namespace {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

fn service_and_operation(cfg: &ConfigBag) -> (String, String) {
    cfg.load::<Metadata>()
        .map(|m| (m.service().to_ascii_lowercase(), m.name().to_owned()))
        .unwrap_or_else(|| ("unknown".into(), "unknown".into()))
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    // CloudWatch's body is CBOR: its namespace is read from the typed input, kept for the
    // request's own hook.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        #[cfg(feature = "cloudwatch")]
        if let Some(input) =
            _context.input().downcast_ref::<aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataInput>()
        {
            let namespace = Namespace(input.namespace().unwrap_or_default().to_owned());
            _cfg.interceptor_state().store_put(namespace);
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = service_and_operation(cfg);
        let mut calls = self.calls(&service, &operation, context.request());
        if let Some(Namespace(namespace)) = cfg.load::<Namespace>() {
            calls.iter_mut().for_each(|c| _ = c.context.insert("cloudwatch:namespace".into(), namespace.clone()));
        }
        self.sink.write(calls)
    }

    // A change set is named by its ARN after it is created: its stack is learnt from the answers.
    fn read_after_deserialization(
        &self,
        _context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        #[cfg(feature = "cloudformation")]
        if let Ok(output) = _context.output_or_error() {
            use aws_sdk_cloudformation::operation as op;
            let mut pairs: Vec<(Option<&str>, Option<&str>)> = Vec::new();
            if let Some(out) = output.downcast_ref::<op::create_change_set::CreateChangeSetOutput>() {
                pairs.push((out.id(), out.stack_id()));
            } else if let Some(out) = output.downcast_ref::<op::describe_change_set::DescribeChangeSetOutput>() {
                pairs.push((out.change_set_id(), out.stack_id()));
                for change in out.changes() {
                    if let Some(resource) = change.resource_change() {
                        pairs.push((resource.change_set_id(), resource.physical_resource_id()));
                    }
                }
            } else if let Some(out) = output.downcast_ref::<op::list_change_sets::ListChangeSetsOutput>() {
                pairs.extend(out.summaries().iter().map(|s| (s.change_set_id(), s.stack_id())));
            }
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for (change_set, stack) in pairs {
                if let (Some(change_set), Some(stack)) = (change_set, stack)
                    && stack.starts_with("arn:")
                {
                    state.change_sets.insert(change_set.to_owned(), stack.to_owned());
                }
            }
        }
        Ok(())
    }
}

/// Learns who `config`'s own credentials are (STS `GetCallerIdentity`, which needs no
/// permission and is not logged), so the calls they sign name their signer and its account. Best effort: an account not learnt shows as `?` in the log.
pub(crate) async fn learn_account(config: &SdkConfig) {
    use aws_credential_types::provider::ProvideCredentials;
    let Some(provider) = config.credentials_provider() else { return };
    let Ok(credentials) = provider.provide_credentials().await else { return };
    let Ok(identity) = crate::identity_from(&aws_sdk_sts::Client::new(config), config).await else { return };
    remember_signer(credentials.access_key_id(), &identity.account, &identity.arn);
}

/// The role a target assumes, logged as the `sts:AssumeRole` call it is each time credentials are
/// fetched, and the keys STS issues remembered as the role's account.
pub(crate) fn assumed_role(
    sink: Sink,
    inner: aws_credential_types::provider::SharedCredentialsProvider,
    role: &crate::AssumeRole,
) -> aws_credential_types::provider::SharedCredentialsProvider {
    aws_credential_types::provider::SharedCredentialsProvider::new(AssumedRole {
        sink,
        inner,
        role_arn: role.role_arn.clone(),
        external_id: role.external_id.is_some(),
    })
}

#[derive(Debug)]
struct AssumedRole {
    sink: Sink,
    inner: aws_credential_types::provider::SharedCredentialsProvider,
    role_arn: String,
    external_id: bool,
}

impl aws_credential_types::provider::ProvideCredentials for AssumedRole {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        use aws_credential_types::provider::error::CredentialsError;
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let mut context = BTreeMap::new();
            if self.external_id {
                // Present, not its value: the log holds no secret.
                context.insert("sts:ExternalId".into(), "(set)".into());
            }
            let call = Call {
                stage: String::new(),
                service: "sts".into(),
                action: "sts:AssumeRole".into(),
                resource: self.role_arn.clone(),
                signer: String::new(),
                context,
                keys: BTreeMap::new(),
            };
            self.sink.write(vec![call]).map_err(CredentialsError::provider_error)?;
            let credentials = self.inner.provide_credentials().await?;
            if let Some(account) = crate::role_account(&self.role_arn) {
                remember_signer(credentials.access_key_id(), account, &self.role_arn);
            }
            Ok(credentials)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::body::SdkBody;

    fn request(uri: &str, body: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let mut request = HttpRequest::new(SdkBody::from(body.to_owned()));
        *request.uri_mut() = uri.try_into().unwrap();
        for (k, v) in headers {
            request.headers_mut().insert(k.to_string(), v.to_string());
        }
        request
    }

    fn log() -> CallLog {
        CallLog {
            sink: Sink { path: "/dev/null".into(), stage: "test".into() },
            partition: "aws".into(),
            region: "us-east-1".into(),
            state: Arc::default(),
        }
    }

    const SIGNED: (&str, &str) = (
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDCALLS/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
    );

    fn resources(calls: &[Call]) -> Vec<(&str, &str)> {
        calls.iter().map(|c| (c.action.as_str(), c.resource.as_str())).collect()
    }

    #[test]
    fn s3_objects_and_buckets_path_style_and_virtual_host() {
        let log = log();
        let put = request("http://127.0.0.1:5000/site-dev/assets/a%20b.js?x-id=PutObject", "", &[]);
        assert_eq!(
            resources(&log.calls("s3", "PutObject", &put)),
            [("s3:PutObject", "arn:aws:s3:::site-dev/assets/a b.js")]
        );
        let list = request("https://site-dev.s3.us-east-1.amazonaws.com/?list-type=2", "", &[]);
        assert_eq!(resources(&log.calls("s3", "ListObjectsV2", &list)), [("s3:ListBucket", "arn:aws:s3:::site-dev")]);
        let delete = request(
            "http://127.0.0.1:5000/site-dev?delete",
            "<Delete><Object><Key>old.js</Key></Object><Object><Key>a&amp;b</Key></Object></Delete>",
            &[],
        );
        assert_eq!(
            resources(&log.calls("s3", "DeleteObjects", &delete)),
            [("s3:DeleteObject", "arn:aws:s3:::site-dev/old.js"), ("s3:DeleteObject", "arn:aws:s3:::site-dev/a&b")]
        );
        let copy = request("http://127.0.0.1:5000/b/k", "", &[("x-amz-copy-source", "b/k%2B1?versionId=1")]);
        assert_eq!(
            resources(&log.calls("s3", "CopyObject", &copy)),
            [("s3:PutObject", "arn:aws:s3:::b/k"), ("s3:GetObject", "arn:aws:s3:::b/k+1")]
        );
    }

    #[test]
    fn cloudformation_names_the_stack_the_role_it_passes_and_the_template_it_reads() {
        let log = log();
        remember_signer("AKIDCALLS", "123456789012", "arn:aws:iam::123456789012:role/stage");
        let create = request(
            "https://cloudformation.us-east-1.amazonaws.com/",
            "Action=CreateChangeSet&StackName=app-dev&ChangeSetName=cs-1&RoleARN=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fcfn\
             &TemplateURL=https%3A%2F%2Fart.s3.amazonaws.com%2Ft%2Fabc.json",
            &[SIGNED],
        );
        let calls = log.calls("cloudformation", "CreateChangeSet", &create);
        assert_eq!(
            resources(&calls),
            [
                ("cloudformation:CreateChangeSet", "arn:aws:cloudformation:us-east-1:123456789012:stack/app-dev/*"),
                ("iam:PassRole", "arn:aws:iam::123456789012:role/cfn"),
                ("s3:GetObject", "arn:aws:s3:::art/t/abc.json"),
            ]
        );
        assert_eq!(calls[1].context["iam:PassedToService"], "cloudformation.amazonaws.com");
        // A change set by ARN: its stack once an answer named it, else the change set itself.
        let by_arn = request(
            "https://cloudformation.us-east-1.amazonaws.com/",
            "Action=ExecuteChangeSet&ChangeSetName=arn%3Aaws%3Acloudformation%3Aus-east-1%3A1%3AchangeSet%2Fcs-1%2Fid",
            &[SIGNED],
        );
        let unknown = log.calls("cloudformation", "ExecuteChangeSet", &by_arn);
        assert_eq!(unknown[0].resource, "arn:aws:cloudformation:us-east-1:1:changeSet/cs-1/id");
        log.state.lock().unwrap().change_sets.insert(unknown[0].resource.clone(), "arn:stack".into());
        assert_eq!(log.calls("cloudformation", "ExecuteChangeSet", &by_arn)[0].resource, "arn:stack");
    }

    #[test]
    fn dynamodb_keys_lambda_functions_and_the_unknown() {
        let log = log();
        remember_signer("AKIDCALLS", "123456789012", "arn:aws:iam::123456789012:role/stage");
        let get =
            request("https://dynamodb/", r#"{"TableName":"t","Key":{"pk":{"S":"run#1"},"sk":{"S":"x"}}}"#, &[SIGNED]);
        let calls = log.calls("dynamodb", "GetItem", &get);
        assert_eq!(calls[0].resource, "arn:aws:dynamodb:us-east-1:123456789012:table/t");
        assert_eq!(calls[0].keys["pk"], "run#1");
        let put = request(
            "https://dynamodb/",
            r#"{"TableName":"t","Item":{"pk":{"S":"lock#a"},"sk":{"S":"lock"},"record":{"S":"{}"}}}"#,
            &[SIGNED],
        );
        let calls = log.calls("dynamodb", "PutItem", &put);
        assert_eq!(calls[0].keys.keys().collect::<Vec<_>>(), ["pk", "sk"], "only the key attributes");
        let query = request(
            "https://dynamodb/",
            r##"{"TableName":"t","KeyConditionExpression":"#p = :p","ExpressionAttributeNames":{"#p":"pk"},"ExpressionAttributeValues":{":p":{"S":"runs"}}}"##,
            &[SIGNED],
        );
        assert_eq!(log.calls("dynamodb", "Query", &query)[0].keys["pk"], "runs");
        let put_new = request("https://dynamodb/", r#"{"TableName":"other","Item":{"pk":{"S":"a"}}}"#, &[SIGNED]);
        assert!(log.calls("dynamodb", "PutItem", &put_new)[0].keys.contains_key("?"));

        let code = request(
            "https://lambda/2015-03-31/functions/app-dev-api/code",
            r#"{"S3Bucket":"art","S3Key":"c/1.zip"}"#,
            &[SIGNED],
        );
        assert_eq!(
            resources(&log.calls("lambda", "UpdateFunctionCode", &code)),
            [
                ("lambda:UpdateFunctionCode", "arn:aws:lambda:us-east-1:123456789012:function:app-dev-api"),
                ("s3:GetObject", "arn:aws:s3:::art/c/1.zip")
            ]
        );
        let unsigned = request("https://lambda/2015-03-31/functions/f/configuration", "", &[]);
        assert_eq!(
            log.calls("lambda", "GetFunctionConfiguration", &unsigned)[0].resource,
            "arn:aws:lambda:us-east-1:?:function:f"
        );
        assert_eq!(log.calls("ec2", "RunInstances", &unsigned)[0].resource, "?");
    }

    #[test]
    fn lines_are_appended_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("calls-{}", std::process::id()));
        let sink = Sink { path: dir.clone(), stage: "diff".into() };
        let call = Call {
            stage: String::new(),
            service: "sns".into(),
            action: "sns:Publish".into(),
            resource: "arn:aws:sns:us-east-1:1:t".into(),
            signer: String::new(),
            context: BTreeMap::new(),
            keys: BTreeMap::new(),
        };
        sink.write(vec![call.clone(), call.clone()]).unwrap();
        sink.write(vec![call.clone()]).unwrap();
        let read = read_log(&std::fs::read_to_string(&dir).unwrap()).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(read.len(), 3);
        assert!(read.iter().all(|c| c.stage == "diff" && c.resource == call.resource));
    }
}
