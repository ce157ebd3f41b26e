//! The function against its invocation's deadline, in process against moto and scim2-server: a
//! stalling token endpoint or secret read ends the cycle by the deadline with the work deferred,
//! and a file too large for one invocation is continued, through the work queue, until every
//! row is provisioned exactly once. Each invocation is stopped at its deadline as Lambda would.

mod support;

use std::time::Duration;

use scim_bulk_provisioner::lambda::{handle, HandlerError, Invocation, State};
use serde_json::{json, Value};
use support::aws::{
    bearer_secret, delete_all_but, receive, sdk_config_at, send, sqs_event, start_stack, Stack,
};
use support::faults::{AwsCall, AwsFault, AwsFaultProxy, Fault, FaultProxy, OAUTH_TOKEN_PATH};
use support::{start_scim2_server, ScimOptions};

/// Runs one invocation with `remaining` time, stopped there as Lambda stops a function
/// ("Task timed out"): `None` when it did not end in time.
async fn invoke_within(
    state: &State,
    event: Value,
    request_id: &str,
    remaining: Duration,
) -> Option<Result<Value, HandlerError>> {
    let invocation = Invocation::new(request_id, remaining);
    tokio::time::timeout(remaining, handle(state, event, &invocation))
        .await
        .ok()
}

/// Sends one producer message and hands it to the function as the event source mapping would
/// (deleting it unless listed as failed); returns the response.
async fn one_message(stack: &Stack, state: &State, remaining: Duration) -> Value {
    let body = json!({"users": [
        {"email": "late@example.com", "first_name": "Late", "last_name": "Comer"}
    ]});
    send(&stack.sdk, &stack.queues.url, &body.to_string()).await;
    let messages = receive(
        &stack.sdk,
        &stack.queues.url,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(messages.len(), 1);
    let event = sqs_event(&messages, &stack.queues.arn);
    let response = invoke_within(state, event, "r1", remaining)
        .await
        .expect("the invocation ends by its deadline")
        .expect("handled");
    let failed = support::aws::batch_failures(&response)
        .into_iter()
        .collect();
    delete_all_but(&stack.sdk, &stack.queues.url, &messages, &failed).await;
    response
}

/// The operations the function put back on the queue (waiting out their delay).
async fn requeued(stack: &Stack) -> Vec<Value> {
    let messages = receive(
        &stack.sdk,
        &stack.queues.url,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await;
    messages
        .iter()
        .flat_map(|m| {
            let body: Value = serde_json::from_str(m.body().expect("body")).expect("JSON body");
            body["operations"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

/// The work comes back unsent: deferred, not retried (its attempt is not counted).
fn assert_deferred(operations: &[Value]) {
    assert_eq!(operations.len(), 1, "{operations:?}");
    let op = &operations[0];
    assert_eq!(op["user"]["user_name"], "late@example.com", "{op}");
    assert_eq!(op["attempt"], 0, "deferred, not a failed attempt: {op}");
    assert!(op.get("last_error").is_none(), "{op}");
}

#[tokio::test]
async fn a_stalling_token_endpoint_is_given_up_at_the_deadline_and_the_work_deferred() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let proxy = FaultProxy::in_front_of(&scim);
    let secret = json!({
        "base_url": proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": proxy.oauth_token_url(), "client_id": "test-client",
        "client_secret": "test-client-secret",
    });
    let stack = start_stack(&secret.to_string()).await;
    let state = stack.state(&[("DEADLINE_MARGIN_SECONDS", "2")]);
    // The token endpoint answers only after two minutes; the token request's own timeout is
    // 30 s, the invocation has 10 s (8 s before the margin).
    proxy.inject_always(
        "POST",
        OAUTH_TOKEN_PATH,
        Fault::Delay(Duration::from_secs(120)),
    );
    let response = one_message(&stack, &state, Duration::from_secs(10)).await;
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    assert_deferred(&requeued(&stack).await);
    assert_eq!(proxy.hits_for("POST", "/Bulk"), 0);
    assert!(scim.users().await.is_empty());
}

#[tokio::test]
async fn a_stalling_secret_read_is_given_up_at_the_deadline_and_the_work_deferred() {
    support::aws::init_logs();
    let scim = start_scim2_server(ScimOptions::default()).await;
    let stack = start_stack(&bearer_secret(&scim.base_url, &scim.token)).await;
    let aws = AwsFaultProxy::start(&stack.moto.endpoint);
    aws.inject_always(
        AwsCall::target("GetSecretValue"),
        AwsFault::Delay(Duration::from_secs(120)),
    );
    let sdk = sdk_config_at(&aws.url).await;
    let state = stack.state_via(&sdk, &[("DEADLINE_MARGIN_SECONDS", "2")]);
    let response = one_message(&stack, &state, Duration::from_secs(10)).await;
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    assert_deferred(&requeued(&stack).await);
    assert!(scim.users().await.is_empty());
}
