//! The [`Store`] on DynamoDB (feature `dynamodb`), so CodeBuild actions share one state.
//!
//! One table with a string partition key `pk`, a string sort key `sk` and the TTL attribute
//! `expires_at` (the `StatusTable` of `cfn/pipeline.yaml`):
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | a step | `run#RUN` | `step#STEP#COMPONENT` | `record` (the record's JSON), `status`, `finished` |
//! | a run in the run list | `runs` | `run#RUN` | `created` (ms since the epoch, set once) |
//! | a success | `success#ENV` | `AT_MS#RUN` (zero-padded) | `record` (the mark's JSON) |
//! | a release | `release#ENV` | `RELEASE_ID` | `record` (the release's JSON, [`crate::release`]) |
//! | a lock | `lock#NAME` | `lock` | `holder`, `since` (ms), `ttl_secs`, `expires_ms`, `expires_at` (s, the TTL) |
//!
//! Every read is a `Query` on one partition or a `GetItem` (strongly consistent), never a scan;
//! the calls used are those the pipeline's role allows (`GetItem`, `PutItem`, `UpdateItem`,
//! `DeleteItem`, `Query`).
//!
//! Invariants, held by conditional writes rather than by the writers' good timing:
//! - **A finished step is never overwritten**: a step is written only when it does not exist, is
//!   not finished, or was skipped. A late `running` or a second result loses with
//!   [`Error::StepFinished`](crate::Error::StepFinished) (a retry of the very same write is
//!   not an error). A skip recorded after a result is weaker ([`crate::supersede`], the rule
//!   the file store reads with): the result stays and the skip's reason is kept in its note.
//! - **A lock has one holder**: it is put only when absent, expired (`expires_ms` in the past;
//!   DynamoDB's TTL removes it later, lazily) or already the caller's; it is deleted only by
//!   its holder.
//!
//! The trait is synchronous and the SDK asynchronous: the store owns a one-worker runtime and
//! runs each call on it, from a scoped thread when the caller is itself on a runtime's worker
//! (stack-deployer's apply), so it never blocks a runtime on its own worker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_target::ErrorKind;

use crate::record::{Status, Step, StepRecord, Supersede, merge_later, supersede};
use crate::store::{SuccessMark, check_success};
use crate::{Error, Store, redact};

type Item = HashMap<String, AttributeValue>;

/// The status store on a DynamoDB table (see the module docs for its layout and invariants).
pub struct DynamoStore {
    client: Client,
    table: String,
    runtime: Option<tokio::runtime::Runtime>,
    /// Runs this store already put in the run list (one write per run, not per record).
    listed: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore").field("table", &self.table).finish_non_exhaustive()
    }
}

impl Drop for DynamoStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics on another runtime's worker: let it go instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn text<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    item.get(key).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn number(item: &Item, key: &str) -> Option<u64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(error, SdkError::ServiceError(e) if e.err().code() == Some("ConditionalCheckFailedException"))
}

impl DynamoStore {
    /// The store on `table`, with a client made from `config` (with a connection pool of its own,
    /// see [`aws_target::own_http_client`]). Nothing is sent until the first call; [`check`](Self::check)
    /// asks whether the table is there.
    pub fn new(config: &aws_config::SdkConfig, table: &str) -> Result<DynamoStore, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dynamo-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Remote { what: format!("DynamoDB table `{table}`"), source: e.into() })?;
        // A record must not be lost to a flaky network: each call is tried up to ATTEMPTS
        // times with the SDK's backoff before the stage fails (a retried conditional write
        // that had reached the table is told apart from a late writer, see `record`).
        let retry = aws_config::retry::RetryConfig::standard().with_max_attempts(Self::ATTEMPTS);
        let config = aws_target::own_http_client(config).to_builder().retry_config(retry).build();
        let client = aws_target::dynamodb(&config, None);
        Ok(DynamoStore { client, table: table.into(), runtime: Some(runtime), listed: Mutex::default() })
    }

    /// How many times a call to the table is tried (throttling, a 5xx, a cut connection).
    pub const ATTEMPTS: u32 = 8;

    /// The store on `table` in the account and region `target` reaches (its SDK config loaded on the
    /// store's own runtime), checked to exist.
    pub fn connect(target: &aws_target::Target, table: &str) -> Result<DynamoStore, Error> {
        let remote =
            |e: aws_target::Error| Error::Remote { what: format!("DynamoDB table `{table}`"), source: e.into() };
        let loader = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Remote { what: format!("DynamoDB table `{table}`"), source: e.into() })?;
        let target = target.clone();
        let config = std::thread::scope(|scope| {
            scope.spawn(|| loader.block_on(aws_target::load(&target))).join().expect("loading the AWS config panicked")
        })
        .map_err(remote)?;
        let store = DynamoStore::new(&config, table)?;
        store.check()?;
        Ok(store)
    }

    /// Creates a status table as `cfn/pipeline.yaml`'s `StatusTable` is (string keys `pk` and
    /// `sk`, pay per request, TTL on `expires_at`): for the emulator and tests, where no stack
    /// made it. `Ok(false)` when it is already there.
    pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<bool, Error> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
        };
        let remote = |e: Box<dyn std::error::Error + Send + Sync>| Error::Remote {
            what: format!("creating DynamoDB table `{table}`"),
            source: e,
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(|e| remote(e.into()))
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| remote(e.into()))
        };
        let created = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .send()
            .await;
        match created {
            Ok(_) => {
                let ttl = TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(|e| remote(e.into()))?;
                client
                    .update_time_to_live()
                    .table_name(table)
                    .time_to_live_specification(ttl)
                    .send()
                    .await
                    .map_err(|e| remote(e.into()))?;
                Ok(true)
            }
            Err(error) if error.code() == Some("ResourceInUseException") => Ok(false),
            Err(error) => Err(remote(error.into())),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether the table answers: [`Error::NoTable`] when it does not exist.
    pub fn check(&self) -> Result<(), Error> {
        self.block(async {
            self.client
                .get_item()
                .table_name(&self.table)
                .key("pk", s("check"))
                .key("sk", s("check"))
                .send()
                .await
                .map_err(|e| self.error(e))
        })
        .map(drop)
    }

    /// Runs `work` on the store's runtime; from a scoped thread when this thread is a runtime's.
    fn block<T: Send>(&self, work: impl Future<Output = T> + Send) -> T {
        let runtime = self.runtime.as_ref().expect("the runtime lives as long as the store");
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|scope| scope.spawn(|| runtime.block_on(work)).join().expect("a store call panicked"))
        } else {
            runtime.block_on(work)
        }
    }

    fn error<E, R>(&self, error: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let kind = ErrorKind::of(&error);
        if matches!(&error, SdkError::ServiceError(e) if e.err().code() == Some("ResourceNotFoundException")) {
            return Error::NoTable { table: self.table.clone() };
        }
        Error::Remote { what: format!("DynamoDB table `{}` ({kind})", self.table), source: error.into() }
    }

    fn corrupt(&self, message: String) -> Error {
        Error::Corrupt { path: format!("dynamodb://{}", self.table).into(), message, source: None }
    }

    /// [`corrupt`](Self::corrupt) with the JSON error that says why.
    fn corrupt_json(&self, what: String, cause: serde_json::Error) -> Error {
        Error::corrupt(format!("dynamodb://{}", self.table), what, cause)
    }

    /// Every item of a partition, following pages, strongly consistent.
    async fn query(&self, pk: &str, newest_first_one: bool) -> Result<Vec<Item>, Error> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if newest_first_one {
                query = query.scan_index_forward(false).limit(1);
            }
            let out = query.send().await.map_err(|e| self.error(e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !newest_first_one && !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, Error> {
        let mut latest: BTreeMap<(Step, String), StepRecord> = BTreeMap::new();
        for item in self.query(&format!("run#{run_id}"), false).await? {
            let json =
                text(&item, "record").ok_or_else(|| self.corrupt(format!("a step of run `{run_id}` has no record")))?;
            let record: StepRecord =
                serde_json::from_str(json).map_err(|e| self.corrupt_json(format!("a step of run `{run_id}`"), e))?;
            latest.insert((record.step, record.component.clone()), record);
        }
        Ok(latest.into_values().map(StepRecord::with_dead_runner_failed).collect())
    }

    /// Deletes old runs' items (see [`crate::Prune`]; a run's age is when it was first
    /// recorded, `created`), keeping the run of each of `environments`' latest success and any
    /// run with a step still running. A run's steps go first and its entry in the run list
    /// last, so a prune cut short leaves the run listed, and the next prune finishes it.
    pub fn prune(&self, rule: crate::Prune, now: SystemTime, environments: &[String]) -> Result<crate::Pruned, Error> {
        let mut protected_runs = BTreeMap::new();
        for env in environments {
            if let Some(mark) = self.last_success(env)? {
                protected_runs.insert(mark.run_id, "the latest success of an environment");
            }
        }
        self.block(async {
            let mut runs: Vec<(u64, String)> = self
                .query("runs", false)
                .await?
                .iter()
                .filter_map(|item| {
                    Some((number(item, "created")?, text(item, "sk")?.strip_prefix("run#")?.to_string()))
                })
                .collect();
            runs.sort();
            let cutoff = rule.older_than.and_then(|age| now.checked_sub(age)).map(millis);
            let first_kept = rule.keep_runs.map(|n| runs.len().saturating_sub(n));
            let mut pruned = crate::Pruned::default();
            for (index, (created, run_id)) in runs.iter().enumerate() {
                let by_count = first_kept.is_some_and(|first| index < first);
                let by_age = cutoff.is_some_and(|cutoff| *created < cutoff);
                if !(by_count || by_age) {
                    continue;
                }
                if let Some(why) = protected_runs.get(run_id) {
                    pruned.protected.push((run_id.clone(), why.to_string()));
                    continue;
                }
                if self.steps(run_id).await?.iter().any(|r| !r.status.is_final()) {
                    pruned.protected.push((run_id.clone(), "a step is still running".into()));
                    continue;
                }
                for item in self.query(&format!("run#{run_id}"), false).await? {
                    let (Some(pk), Some(sk)) = (item.get("pk").cloned(), item.get("sk").cloned()) else { continue };
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .key("pk", pk)
                        .key("sk", sk)
                        .send()
                        .await
                        .map_err(|e| self.error(e))?;
                }
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s("runs"))
                    .key("sk", s(format!("run#{run_id}")))
                    .send()
                    .await
                    .map_err(|e| self.error(e))?;
                pruned.removed.push(run_id.clone());
            }
            pruned.kept = runs.len() - pruned.removed.len();
            Ok(pruned)
        })
    }

    async fn list_run(&self, run_id: &str) -> Result<(), Error> {
        if self.listed.lock().unwrap_or_else(|e| e.into_inner()).contains(run_id) {
            return Ok(());
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s("runs"))
            .key("sk", s(format!("run#{run_id}")))
            .update_expression("SET created = if_not_exists(created, :now)")
            .expression_attribute_values(":now", AttributeValue::N(millis(SystemTime::now()).to_string()))
            .send()
            .await
            .map_err(|e| self.error(e))?;
        self.listed.lock().unwrap_or_else(|e| e.into_inner()).insert(run_id.to_string());
        Ok(())
    }

    /// A write refused because the step holds a result: the same write again is no conflict; a
    /// later skip is kept beside the result ([`merge_later`], written only over the record it
    /// read); anything else is a late writer ([`Error::StepFinished`]).
    async fn record_after_result(&self, record: &StepRecord, json: &str, pk: &str, sk: &str) -> Result<(), Error> {
        let mut last = Status::Passed;
        for _ in 0..3 {
            let current = self.get(pk, sk).await?;
            let current_json = current.as_ref().and_then(|item| text(item, "record"));
            if current_json == Some(json) {
                return Ok(());
            }
            let current_record = current_json.and_then(|j| serde_json::from_str::<StepRecord>(j).ok());
            let finished = |status: Status| Error::StepFinished {
                run_id: record.run_id.clone(),
                component: record.component.clone(),
                step: record.step,
                status,
            };
            let Some(current_record) = current_record else {
                let status = current
                    .as_ref()
                    .and_then(|item| text(item, "status"))
                    .and_then(|s| s.parse::<Status>().ok())
                    .unwrap_or(Status::Passed);
                return Err(finished(status));
            };
            let status = current_record.status;
            last = status;
            if record.status != Status::Skipped || supersede(&current_record, record) != Supersede::Keep {
                return Err(finished(status));
            }
            let merged = merge_later(current_record, record.clone());
            let merged_json = serde_json::to_string(&merged)
                .map_err(|e| self.corrupt_json("a record that cannot be written as JSON".into(), e))?;
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .item("record", s(&merged_json))
                .item("status", s(merged.status.as_str()))
                .item("finished", AttributeValue::Bool(merged.status.is_final()))
                .condition_expression("#record = :current")
                .expression_attribute_names("#record", "record")
                .expression_attribute_values(":current", s(current_json.unwrap_or_default()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(()),
                // Changed meanwhile: read it again.
                Err(e) if is_condition_failed(&e) => continue,
                Err(e) => return Err(self.error(e)),
            }
        }
        Err(Error::StepFinished {
            run_id: record.run_id.clone(),
            component: record.component.clone(),
            step: record.step,
            status: last,
        })
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(e))?;
        Ok(out.item)
    }
}

impl Store for DynamoStore {
    fn record(&self, record: &StepRecord) -> Result<(), Error> {
        let mut record = record.clone();
        record.details = redact::details(record.details);
        let json = serde_json::to_string(&record)
            .map_err(|e| self.corrupt_json("a record that cannot be written as JSON".into(), e))?;
        let (pk, sk) = (format!("run#{}", record.run_id), format!("step#{}#{}", record.step, record.component));
        self.block(async {
            self.list_run(&record.run_id).await?;
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(&pk))
                .item("sk", s(&sk))
                .item("record", s(&json))
                .item("status", s(record.status.as_str()))
                .item("finished", AttributeValue::Bool(record.status.is_final()))
                .condition_expression("attribute_not_exists(pk) OR finished = :no OR #status = :skipped")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .expression_attribute_values(":skipped", s(Status::Skipped.as_str()))
                .send()
                .await;
            match put {
                Ok(_) => Ok(()),
                Err(e) if is_condition_failed(&e) => self.record_after_result(&record, &json, &pk, &sk).await,
                Err(e) => Err(self.error(e)),
            }
        })
    }

    fn run(&self, run_id: &str) -> Result<Vec<StepRecord>, Error> {
        self.block(self.steps(run_id))
    }

    fn run_ids(&self) -> Result<Vec<String>, Error> {
        let items = self.block(self.query("runs", false))?;
        let mut runs: Vec<(u64, String)> = items
            .iter()
            .filter_map(|item| Some((number(item, "created")?, text(item, "sk")?.strip_prefix("run#")?.to_string())))
            .collect();
        runs.sort();
        Ok(runs.into_iter().map(|(_, id)| id).collect())
    }

    fn mark_success_for(&self, run_id: &str, env: &str, deploy_step: Step) -> Result<SuccessMark, Error> {
        crate::check_name("environment", env)?;
        self.block(async {
            let records = self.steps(run_id).await?;
            check_success(run_id, deploy_step, &records)?;
            let now = SystemTime::now();
            let mark = SuccessMark {
                run_id: run_id.into(),
                env: env.into(),
                commit: records[0].commit.clone(),
                at: Some(now),
            };
            let json = serde_json::to_string(&mark)
                .map_err(|e| self.corrupt_json("a record that cannot be written as JSON".into(), e))?;
            let (pk, sk) = (format!("success#{env}"), format!("{:015}#{run_id}", millis(now)));
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(&pk))
                .item("sk", s(&sk))
                .item("record", s(json))
                .send()
                .await
                .map_err(|e| self.error(e))?;
            // A failure recorded while the mark was written: take the mark back, so the base never
            // moves to a run that failed.
            if let Err(refused) = check_success(run_id, deploy_step, &self.steps(run_id).await?) {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(&pk))
                    .key("sk", s(&sk))
                    .send()
                    .await
                    .map_err(|e| self.error(e))?;
                return Err(refused);
            }
            Ok(mark)
        })
    }

    fn last_success(&self, env: &str) -> Result<Option<SuccessMark>, Error> {
        let items = self.block(self.query(&format!("success#{env}"), true))?;
        items
            .first()
            .map(|item| {
                let json =
                    text(item, "record").ok_or_else(|| self.corrupt(format!("a success of `{env}` has no record")))?;
                serde_json::from_str(json).map_err(|e| self.corrupt_json(format!("a success of `{env}`"), e))
            })
            .transpose()
    }

    fn acquire_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<(), Error> {
        let pk = format!("lock#{name}");
        let (process, identity) = crate::this_process().unzip();
        self.block(async {
            // A holder found dead: (its holder, its since), taken over only if still that lock.
            let mut dead: Option<(String, String)> = None;
            for _ in 0..3 {
                let now = SystemTime::now();
                let ttl_secs = ttl.as_secs().max(1);
                let expires_ms = millis(now) + ttl_secs * 1000;
                let mut put = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(&pk))
                    .item("sk", s("lock"))
                    .item("holder", s(holder))
                    .item("since", AttributeValue::N(millis(now).to_string()))
                    .item("ttl_secs", AttributeValue::N(ttl_secs.to_string()))
                    // Seconds for DynamoDB's TTL (which deletes late and lazily); milliseconds for the check.
                    .item("expires_at", AttributeValue::N(expires_ms.div_ceil(1000).to_string()))
                    .item("expires_ms", AttributeValue::N(expires_ms.to_string()))
                    .expression_attribute_values(":now", AttributeValue::N(millis(now).to_string()))
                    .expression_attribute_values(":holder", s(holder));
                if let (Some(process), Some(identity)) = (&process, &identity) {
                    put = put.item("process", s(process)).item("process_identity", s(identity));
                }
                put = match &dead {
                    None => put.condition_expression("attribute_not_exists(pk) OR expires_ms < :now OR holder = :holder"),
                    Some((old, since)) => put
                        .condition_expression(
                            "attribute_not_exists(pk) OR expires_ms < :now OR holder = :holder OR (holder = :old AND since = :since)",
                        )
                        .expression_attribute_values(":old", s(old))
                        .expression_attribute_values(":since", AttributeValue::N(since.clone())),
                };
                match put.send().await {
                    Ok(_) => return Ok(()),
                    Err(e) if is_condition_failed(&e) => {
                        // Held by someone else: taken over when its process is provably dead,
                        // else say who; gone meanwhile: try again.
                        if let Some(item) = self.get(&pk, "lock").await? {
                            let died = text(&item, "process")
                                .zip(text(&item, "process_identity"))
                                .and_then(|(p, i)| crate::process_died(p, i));
                            let since = match item.get("since") {
                                Some(AttributeValue::N(since)) => Some(since.clone()),
                                _ => None,
                            };
                            if let (Some(_), Some(since), Some(old)) = (died, since, text(&item, "holder")) {
                                dead = Some((old.to_string(), since));
                                continue;
                            }
                            return Err(Error::Locked {
                                name: name.into(),
                                holder: text(&item, "holder").unwrap_or("an unknown holder").into(),
                                since: number(&item, "since").map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                            });
                        }
                    }
                    Err(e) => return Err(self.error(e)),
                }
            }
            Err(Error::Locked { name: name.into(), holder: "another holder, changing fast".into(), since: None })
        })
    }

    fn release_lock(&self, name: &str, holder: &str) -> Result<(), Error> {
        self.block(async {
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(format!("lock#{name}")))
                .key("sk", s("lock"))
                .condition_expression("holder = :holder")
                .expression_attribute_values(":holder", s(holder))
                .send()
                .await;
            match deleted {
                // Someone else's (taken over when stale) or already gone: left alone.
                Err(e) if is_condition_failed(&e) => Ok(()),
                Err(e) => Err(self.error(e)),
                Ok(_) => Ok(()),
            }
        })
    }
}

/// Releases: one item per release, `release#ENV` / `RELEASE_ID` (run ids sort by time), its
/// JSON in `record`; written whole (a run's later part replaces its earlier one).
impl crate::release::ReleaseStore for DynamoStore {
    fn put_release(&self, release: &crate::Release) -> Result<(), Error> {
        crate::check_name("environment", &release.env)?;
        let json = serde_json::to_string(release)
            .map_err(|e| self.corrupt_json("a record that cannot be written as JSON".into(), e))?;
        self.block(async {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("release#{}", release.env)))
                .item("sk", s(&release.id))
                .item("record", s(json))
                .send()
                .await
                .map_err(|e| self.error(e))
        })
        .map(drop)
    }

    fn releases(&self, env: &str) -> Result<Vec<crate::Release>, Error> {
        let items = self.block(self.query(&format!("release#{env}"), false))?;
        items
            .iter()
            .map(|item| {
                let json =
                    text(item, "record").ok_or_else(|| self.corrupt(format!("a release of `{env}` has no record")))?;
                serde_json::from_str(json).map_err(|e| self.corrupt_json(format!("a release of `{env}`"), e))
            })
            .collect()
    }
}
