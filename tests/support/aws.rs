//! moto set-up for the Lambda tests: SDK clients pointed at a [`super::Moto`], buckets,
//! queues (with a dead-letter queue), the credentials secret, and an event-source-mapping
//! loop that feeds the work queue to the function as SQS events until it is empty.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use serde_json::{json, Value};

/// Runs the function's handler in process as one invocation with a minute left.
pub async fn invoke(
    state: &scim_bulk_provisioner::lambda::State,
    event: Value,
    request_id: &str,
) -> Result<Value, scim_bulk_provisioner::lambda::HandlerError> {
    let invocation =
        scim_bulk_provisioner::lambda::Invocation::new(request_id, Duration::from_secs(60));
    scim_bulk_provisioner::lambda::handle(state, event, &invocation).await
}

/// [`invoke`], with the invocation's counts.
pub async fn invoke_counted(
    state: &scim_bulk_provisioner::lambda::State,
    event: Value,
    request_id: &str,
) -> (
    Result<Value, scim_bulk_provisioner::lambda::HandlerError>,
    scim_bulk_provisioner::pipeline::Summary,
) {
    let invocation =
        scim_bulk_provisioner::lambda::Invocation::new(request_id, Duration::from_secs(60));
    scim_bulk_provisioner::lambda::handle_counted(state, event, &invocation).await
}

/// The message ids a partial batch response (`batchItemFailures`) lists, in its order.
pub fn batch_failures(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures in {response}"))
        .iter()
        .map(|f| {
            f["itemIdentifier"]
                .as_str()
                .expect("itemIdentifier")
                .to_string()
        })
        .collect()
}

/// An SDK configuration for moto: its endpoint, region us-east-1, dummy credentials.
pub async fn sdk_config(moto: &super::Moto) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&moto.endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .load()
        .await
}

/// An SDK configuration for another endpoint (e.g. an [`super::faults::AwsFaultProxy`] in
/// front of moto): as [`sdk_config`], with the SDK's standard retries (3 attempts) but a short
/// initial backoff, so that tests of AWS-side faults do not wait seconds per retry.
pub async fn sdk_config_at(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "moto",
        ))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_initial_backoff(Duration::from_millis(50)),
        )
        .load()
        .await
}

/// Path-style S3 client (moto has no virtual-host buckets on 127.0.0.1).
pub fn s3(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// SQS client.
pub fn sqs(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(sdk)
}

/// Creates a bucket.
pub async fn create_bucket(sdk: &SdkConfig, bucket: &str) {
    s3(sdk)
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
}

/// Uploads an object.
pub async fn put_object(sdk: &SdkConfig, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    s3(sdk)
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
}

/// Keys under a prefix.
pub async fn list_keys(sdk: &SdkConfig, bucket: &str, prefix: &str) -> Vec<String> {
    let out = s3(sdk)
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list objects");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}

/// An object's text.
pub async fn get_text(sdk: &SdkConfig, bucket: &str, key: &str) -> String {
    let out = s3(sdk)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("get object");
    let bytes = out.body.collect().await.expect("object body").into_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8 object")
}

/// Every report line under `reports/` of a bucket, parsed (run summaries, under
/// `reports/runs/`, are JSON documents, not report lines).
pub async fn report_lines(sdk: &SdkConfig, bucket: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    for key in list_keys(sdk, bucket, "reports/").await {
        if key.starts_with("reports/runs/") {
            continue;
        }
        for line in get_text(sdk, bucket, &key).await.lines() {
            lines.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{key}: not JSON Lines ({e}): {line}")),
            );
        }
    }
    lines
}

/// A work queue and its dead-letter queue (after `max_receives` deliveries).
pub struct Queues {
    pub url: String,
    pub arn: String,
    pub dlq_url: String,
}

/// Creates a standard queue with a redrive policy to a dead-letter queue.
pub async fn create_queues(sdk: &SdkConfig, name: &str, max_receives: u32) -> Queues {
    let client = sqs(sdk);
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("create DLQ")
        .queue_url
        .expect("DLQ url");
    let dlq_arn = queue_arn(&client, &dlq_url).await;
    let redrive =
        json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string()});
    let url = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let arn = queue_arn(&client, &url).await;
    Queues { url, arn, dlq_url }
}

async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> String {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .expect("QueueArn")
}

/// Messages waiting, in flight and delayed.
pub async fn queue_depth(sdk: &SdkConfig, url: &str) -> u64 {
    let out = sqs(sdk)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("queue attributes");
    let attributes = out.attributes().cloned().unwrap_or_default();
    attributes
        .values()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Sends one message body.
pub async fn send(sdk: &SdkConfig, url: &str, body: &str) -> String {
    sqs(sdk)
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .expect("send message")
        .message_id
        .expect("message id")
}

/// Receives up to 10 messages (waiting up to `wait`), hiding them for `visibility`.
pub async fn receive(
    sdk: &SdkConfig,
    url: &str,
    wait: Duration,
    visibility: Duration,
) -> Vec<Message> {
    sqs(sdk)
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait.as_secs() as i32)
        .visibility_timeout(visibility.as_secs() as i32)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive messages")
        .messages
        .unwrap_or_default()
}

/// The SQS event Lambda's event source mapping would build from `messages`.
pub fn sqs_event(messages: &[Message], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), json!(v)))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}

/// An S3 `ObjectCreated:Put` notification; `key` as S3 sends it (URL-encoded, `+` for spaces).
pub fn s3_put_event(bucket: &str, encoded_key: &str) -> Value {
    s3_put_event_seq(bucket, encoded_key, "0")
}

/// [`s3_put_event`] for the upload with this `sequencer` (S3 gives each write of a key its own;
/// the same notification delivered twice has the same).
pub fn s3_put_event_seq(bucket: &str, encoded_key: &str, sequencer: &str) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2025-03-04T08:15:30.123Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:TEST"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "TEST", "x-amz-id-2": "TEST"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "test",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "TEST"}, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {"key": encoded_key, "size": 1, "eTag": "0", "sequencer": sequencer}
        }
    }]})
}

/// What an event-source-mapping run did.
#[derive(Debug, Default)]
pub struct Pumped {
    /// Invocations made.
    pub invocations: usize,
    /// Messages handed to the function (redeliveries included).
    pub deliveries: usize,
    /// Message ids listed in `batchItemFailures` (each time).
    pub failures: Vec<String>,
    /// Invocations that returned an error.
    pub errors: Vec<String>,
    /// Distinct message ids seen.
    pub messages: HashSet<String>,
    /// The invocations' counts added up (in-process pumps only).
    pub summary: scim_bulk_provisioner::pipeline::Summary,
    /// The invocations' summed wall time, what Lambda bills (in-process pumps only).
    pub busy: Duration,
}

/// Lambda's event source mapping, in the test: receive a batch, invoke, delete every message
/// not listed in `batchItemFailures` (none after an error), until the queue stays empty.
/// Failed messages come back after `visibility`. Panics after `limit`.
pub async fn pump<F, Fut>(
    sdk: &SdkConfig,
    queues: &Queues,
    visibility: Duration,
    limit: Duration,
    mut invoke: F,
) -> Pumped
where
    F: FnMut(Value) -> Fut,
    Fut: Future<Output = Result<Value, String>>,
{
    let started = Instant::now();
    let mut pumped = Pumped::default();
    loop {
        assert!(
            started.elapsed() < limit,
            "the queue was not drained within {limit:?}: {pumped:?}, depth {}",
            queue_depth(sdk, &queues.url).await
        );
        let messages = receive(sdk, &queues.url, Duration::from_secs(1), visibility).await;
        if messages.is_empty() {
            if queue_depth(sdk, &queues.url).await == 0 {
                return pumped;
            }
            continue;
        }
        pumped.invocations += 1;
        pumped.deliveries += messages.len();
        pumped.messages.extend(
            messages
                .iter()
                .filter_map(|m| m.message_id().map(str::to_string)),
        );
        let failed: HashSet<String> = match invoke(sqs_event(&messages, &queues.arn)).await {
            Ok(response) => {
                let ids = batch_failures(&response);
                pumped.failures.extend(ids.iter().cloned());
                ids.into_iter().collect()
            }
            Err(error) => {
                pumped.errors.push(error);
                messages
                    .iter()
                    .filter_map(|m| m.message_id().map(str::to_string))
                    .collect()
            }
        };
        delete_all_but(sdk, &queues.url, &messages, &failed).await;
    }
}

/// [`pump`] with the function's handler run in process on `state`; request ids `pump-1`, ...
pub async fn pump_in_process(
    sdk: &SdkConfig,
    queues: &Queues,
    state: &scim_bulk_provisioner::lambda::State,
    visibility: Duration,
    limit: Duration,
) -> Pumped {
    let mut n = 0;
    let totals = std::sync::Mutex::new((
        scim_bulk_provisioner::pipeline::Summary::default(),
        Duration::ZERO,
    ));
    let mut pumped = pump(sdk, queues, visibility, limit, |event| {
        n += 1;
        let request_id = format!("pump-{n}");
        let totals = &totals;
        async move {
            let started = Instant::now();
            let (result, summary) = invoke_counted(state, event, &request_id).await;
            let mut totals = totals.lock().unwrap();
            totals.0.add(&summary);
            totals.1 += started.elapsed();
            result.map_err(|e| e.to_string())
        }
    })
    .await;
    (pumped.summary, pumped.busy) = totals.into_inner().unwrap();
    pumped
}

/// [`pump_in_process`] until the work queue is empty (within `limit`), checking that no
/// invocation failed (messages listed for redelivery are allowed: faults may cause them).
pub async fn run_queue(
    stack: &Stack,
    state: &scim_bulk_provisioner::lambda::State,
    limit: Duration,
) -> Pumped {
    let pumped = pump_in_process(
        &stack.sdk,
        &stack.queues,
        state,
        Duration::from_secs(2),
        limit,
    )
    .await;
    assert!(pumped.errors.is_empty(), "{:?}", pumped.errors);
    pumped
}

/// Puts `csv` at `key` of the upload bucket, runs its upload event (with this `sequencer`),
/// then the work queue until it is empty.
pub async fn upload_and_run(
    stack: &Stack,
    state: &scim_bulk_provisioner::lambda::State,
    key: &str,
    csv: String,
    sequencer: &str,
) {
    put_object(&stack.sdk, BUCKET, key, csv).await;
    invoke(state, s3_put_event_seq(BUCKET, key, sequencer), sequencer)
        .await
        .expect("the upload's invocation");
    run_queue(stack, state, Duration::from_secs(240)).await;
}

/// The EventBridge event approving a held run, as `approve` puts it (event id `id`).
pub fn approval_event(run_id: &str, id: &str) -> Value {
    json!({"id": id, "detail-type": "Approve Provisioning Run",
           "source": "scim-bulk-provisioner", "detail": {"approve_run": run_id}})
}

/// [`pump_in_process`] until the work queue is empty (within `limit`), checking that no
/// invocation failed and no message was listed for redelivery.
pub async fn drain(
    stack: &Stack,
    state: &scim_bulk_provisioner::lambda::State,
    limit: Duration,
) -> Pumped {
    let pumped = run_queue(stack, state, limit).await;
    assert!(pumped.failures.is_empty(), "{pumped:?}");
    pumped
}

/// Deletes the messages of a batch except those in `keep`, as the event source mapping does
/// with the ids a partial batch response lists.
pub async fn delete_all_but(sdk: &SdkConfig, url: &str, batch: &[Message], keep: &HashSet<String>) {
    let entries: Vec<DeleteMessageBatchRequestEntry> = batch
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.message_id().is_some_and(|id| keep.contains(id)))
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("d{i}"))
                .receipt_handle(m.receipt_handle().expect("receipt handle"))
                .build()
                .expect("delete entry")
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    let out = sqs(sdk)
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .expect("delete messages");
    assert!(out.failed().is_empty(), "delete failed: {:?}", out.failed());
}

/// Creates the credentials secret (SecretString).
pub async fn create_secret(sdk: &SdkConfig, name: &str, text: &str) {
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(name)
        .secret_string(text)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create secret {name}: {e:?}"));
}

/// A bearer-token credentials secret for a SCIM base URL.
pub fn bearer_secret(base_url: &str, token: &str) -> String {
    json!({"base_url": base_url, "auth_type": "bearer", "token": token}).to_string()
}

/// The upload bucket of the Lambda tests (the name events/ uses).
pub const BUCKET: &str = "scim-uploads";
/// The credentials secret's name.
pub const SECRET_ID: &str = "scim-credentials";

/// moto with the function's resources: the upload bucket, the work queue (and its DLQ after
/// 3 deliveries) and the credentials secret.
pub struct Stack {
    pub moto: super::Moto,
    pub sdk: SdkConfig,
    pub queues: Queues,
}

/// Starts moto and creates the resources; `secret` is the credentials secret's text.
pub async fn start_stack(secret: &str) -> Stack {
    let moto = super::start_moto().await;
    let sdk = sdk_config(&moto).await;
    create_bucket(&sdk, BUCKET).await;
    let queues = create_queues(&sdk, "scim-work", 3).await;
    create_secret(&sdk, SECRET_ID, secret).await;
    Stack { moto, sdk, queues }
}

impl Stack {
    /// One receive of the work queue (waiting up to a second, hidden 30 s), system attributes
    /// included, as the event source mapping gets a batch.
    pub async fn receive_batch(&self) -> Vec<Message> {
        receive(
            &self.sdk,
            &self.queues.url,
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
        .await
    }

    /// The function's environment: short retry delays for tests, then `extra` (which wins).
    pub fn function_env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("SCIM_SECRET_ID", SECRET_ID),
            ("WORK_QUEUE_URL", self.queues.url.as_str()),
            ("RETRY_BASE_SECONDS", "0"),
            ("RETRY_MAX_SECONDS", "2"),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("DEADLINE_MARGIN_SECONDS", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        env
    }

    /// The function's state with its AWS clients built from `sdk` (e.g. pointed at an
    /// [`super::faults::AwsFaultProxy`]), with [`Stack::function_env`].
    pub fn state_via(
        &self,
        sdk: &SdkConfig,
        extra: &[(&str, &str)],
    ) -> scim_bulk_provisioner::lambda::State {
        let env = self.function_env(extra);
        let config = scim_bulk_provisioner::lambda::config::FunctionConfig::from_lookup(|name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .expect("function config");
        scim_bulk_provisioner::lambda::State::new(config, sdk).expect("function state")
    }

    /// The function's state, in process, with [`Stack::function_env`].
    pub fn state(&self, extra: &[(&str, &str)]) -> scim_bulk_provisioner::lambda::State {
        let env = self.function_env(extra);
        let config = scim_bulk_provisioner::lambda::config::FunctionConfig::from_lookup(|name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .expect("function config");
        scim_bulk_provisioner::lambda::State::new(config, &self.sdk).expect("function state")
    }
}

/// Installs the function's log output when `RUST_LOG` is set (to debug a failing test).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        scim_bulk_provisioner::logging::init(false);
    }
}

/// A function state whose AWS clients point at a closed port: for tests that make no AWS call.
pub fn offline_state() -> scim_bulk_provisioner::lambda::State {
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let config =
        scim_bulk_provisioner::lambda::config::FunctionConfig::from_lookup(|name| match name {
            "SCIM_SECRET_ID" => Some("scim-credentials".into()),
            "WORK_QUEUE_URL" => Some("http://127.0.0.1:9/000000000000/scim-work".into()),
            _ => None,
        })
        .expect("function config");
    scim_bulk_provisioner::lambda::State::new(config, &sdk).expect("function state")
}

/// A DynamoDB client.
pub fn dynamodb(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(sdk)
}

/// Creates a ledger table as template.yaml does: `pk`/`sk` strings, on-demand.
pub async fn create_ledger_table(sdk: &SdkConfig, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition")
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema")
    };
    dynamodb(sdk)
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create ledger table");
}

/// A queue that receives every event the function puts on the default bus (a rule matching
/// `source` `scim-bulk-provisioner`, targeting the queue); returns its URL.
pub async fn capture_run_events(sdk: &SdkConfig) -> String {
    let sqs = sqs(sdk);
    let url = sqs
        .create_queue()
        .queue_name("run-events")
        .send()
        .await
        .expect("create the events queue")
        .queue_url
        .expect("queue url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue arn");
    let events = aws_sdk_eventbridge::Client::new(sdk);
    events
        .put_rule()
        .name("run-events")
        .event_pattern(r#"{"source": ["scim-bulk-provisioner"]}"#)
        .send()
        .await
        .expect("put rule");
    events
        .put_targets()
        .rule("run-events")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("put targets");
    url
}

/// Every event captured so far by [`capture_run_events`]'s queue (each taken off it).
pub async fn run_events(sdk: &SdkConfig, url: &str) -> Vec<Value> {
    let sqs = sqs(sdk);
    let mut events = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive events");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return events;
        }
        for m in messages {
            let body = m.body.clone().unwrap_or_default();
            events.push(serde_json::from_str(&body).expect("an event as JSON"));
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle.unwrap_or_default())
                .send()
                .await
                .expect("delete event");
        }
    }
}
