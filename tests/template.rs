//! template.yaml: cfn-lint clean, the checks cfn-lint does not make (infra/check_template.py),
//! and the function's permissions: every AWS call the code makes is granted by the template,
//! on the resource the call touches (moto does not enforce IAM, so nothing else would notice).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Map, Value};

fn run(program: &Path, args: &[&str]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new(program)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{text}",
        program.display()
    );
    text
}

#[test]
fn cfn_lint_is_clean() {
    // cfn-lint exits non-zero on warnings as well as errors: both fail here.
    run(&support::venv_bin("cfn-lint"), &["template.yaml"]);
}

#[test]
fn template_checks_beyond_cfn_lint() {
    // The contract is the repository's own (README.md, "## The contract").
    let out = run(
        &support::venv_bin("python"),
        &["infra/check_template.py", "template.yaml", "README.md"],
    );
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn function_role_grants_every_aws_call_the_code_makes() {
    let template = decoded_template();
    let calls = sdk_calls(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    // The scan must see the calls the function is built on, or it checks nothing.
    let ops: BTreeSet<&str> = calls.iter().map(|c| c.op.as_str()).collect();
    for expected in ["get_object", "get_secret_value", "send_message_batch"] {
        assert!(ops.contains(expected), "scan found no {expected}: {ops:?}");
    }
    let problems = missing_grants(&template, &calls);
    assert!(
        problems.is_empty(),
        "template.yaml does not grant what the code calls:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_missing_action_or_resource_is_found() {
    let template = decoded_template();
    let calls = sdk_calls(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let sid = |s: &Value, name: &str| s.get("Sid").and_then(Value::as_str) == Some(name);

    // Reading a version needs s3:GetObjectVersion besides s3:GetObject.
    let mut no_version = template.clone();
    let policies = &mut no_version["Resources"]["ProvisionerFunction"]["Properties"]["Policies"];
    for policy in policies.as_array_mut().expect("Policies") {
        for statement in policy["Statement"].as_array_mut().into_iter().flatten() {
            if sid(statement, "ReadUploads") {
                statement["Action"] = json!("s3:GetObject");
            }
        }
    }
    let problems = missing_grants(&no_version, &calls).join("\n");
    assert!(problems.contains("s3:GetObjectVersion"), "{problems}");
    assert!(!problems.contains("s3:GetObject "), "{problems}");

    // Reports granted on another prefix than reports/: the right action on the wrong resource.
    let mut elsewhere = template.clone();
    let policies = &mut elsewhere["Resources"]["ProvisionerFunction"]["Properties"]["Policies"];
    for policy in policies.as_array_mut().expect("Policies") {
        for statement in policy["Statement"].as_array_mut().into_iter().flatten() {
            if sid(statement, "WriteReports") {
                let text = statement["Resource"]["Fn::Sub"][0]
                    .as_str()
                    .expect("WriteReports resource is a Fn::Sub")
                    .replace("/reports/", "/out/");
                statement["Resource"]["Fn::Sub"][0] = json!(text);
            }
        }
    }
    let problems = missing_grants(&elsewhere, &calls).join("\n");
    assert!(problems.contains("put_object"), "{problems}");
    assert!(problems.contains("s3:PutObject"), "{problems}");
}

#[test]
fn run_events_are_granted_on_the_configured_bus_only() {
    let template = decoded_template();
    let put_events = SdkCall {
        place: "src/lambda/runs.rs:1".into(),
        op: "put_events".into(),
        methods: vec!["put_events".into(), "entries".into(), "send".into()],
    };
    let calls = [put_events];
    let problems = missing_grants(&template, &calls);
    assert!(problems.is_empty(), "{problems:?}");

    // Granted on the default bus whatever the parameter says: refused for the bus of its own.
    let mut default_bus = template.clone();
    let policies = &mut default_bus["Resources"]["ProvisionerFunction"]["Properties"]["Policies"];
    for policy in policies.as_array_mut().expect("Policies") {
        for statement in policy["Statement"].as_array_mut().into_iter().flatten() {
            if statement.get("Sid").and_then(Value::as_str) == Some("PutRunEvents") {
                let text = statement["Resource"]["Fn::Sub"]
                    .as_str()
                    .expect("PutRunEvents resource is a Fn::Sub")
                    .replace("${EventBusName}", "default");
                statement["Resource"]["Fn::Sub"] = json!(text);
            }
        }
    }
    let problems = missing_grants(&default_bus, &calls);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("events:PutEvents")
            && problems[0].contains("event-bus/hr-provisioning"),
        "{problems:?}"
    );
}

#[test]
fn an_sdk_call_without_a_mapping_fails() {
    let template = decoded_template();
    let call = |op: &str| SdkCall {
        place: "src/aws/new.rs:1".into(),
        op: op.into(),
        methods: vec![op.into()],
    };
    let problems = missing_grants(&template, &[call("delete_bucket")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("no IAM mapping"), "{problems:?}");
    // A call the scan could not name is not let through either.
    let problems = missing_grants(&template, &[call("")]);
    assert!(problems[0].contains("no IAM mapping"), "{problems:?}");
}

#[test]
fn the_scan_follows_builder_chains_and_ignores_strings_and_comments() {
    let text = r##"
        use aws_sdk_s3::Client;
        // self.client.delete_object().send() in a comment is no call
        let s = "client.delete_bucket().send()";
        let r = r#"client.put_bucket_policy().send()"#;
        let q = '"';
        let a = self
            .client
            .get_object() // the object
            .bucket(bucket)
            .set_version_id(Some(format!("{}", x.len())))
            .send()
            .await?;
        let b = client.list_objects_v2().bucket("b").into_paginator().send();
        let c = builder.send().await;
    "##;
    let calls = calls_in("f.rs", text);
    let found: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.place.as_str(), c.op.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("f.rs:12", "get_object"),
            ("f.rs:14", "list_objects_v2"),
            ("f.rs:15", "")
        ]
    );
    assert_eq!(
        calls[0].methods,
        ["get_object", "bucket", "set_version_id", "send"]
    );
}

// ---------------------------------------------------------------------------------------------
// The mapping: SDK operation -> IAM actions, and which of the function's resources it touches.

/// What an SDK call touches.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The CSV objects the function's triggers name (upload bucket).
    SourceObjects,
    /// The upload bucket itself, listed under the prefixes the triggers name.
    SourceListing,
    /// Objects under `reports/` of `REPORT_BUCKET` (README: failure reports and run summaries).
    Reports,
    /// The queue of `WORK_QUEUE_URL`.
    WorkQueue,
    /// The secret of `SCIM_SECRET_ID`.
    Secret,
    /// The table of `LEDGER_TABLE`.
    Ledger,
    /// The EventBridge bus of `EVENT_BUS_NAME` (run events).
    EventBus,
}

/// Every SDK operation the function may call. A call found in src/ and missing here fails the
/// test: add it with its actions, and grant them in template.yaml.
const GRANTS: &[(&str, &[&str], Target)] = &[
    ("get_object", &["s3:GetObject"], Target::SourceObjects),
    ("head_object", &["s3:GetObject"], Target::SourceObjects),
    ("list_objects_v2", &["s3:ListBucket"], Target::SourceListing),
    ("list_objects", &["s3:ListBucket"], Target::SourceListing),
    ("put_object", &["s3:PutObject"], Target::Reports),
    (
        "create_multipart_upload",
        &["s3:PutObject"],
        Target::Reports,
    ),
    ("upload_part", &["s3:PutObject"], Target::Reports),
    (
        "complete_multipart_upload",
        &["s3:PutObject"],
        Target::Reports,
    ),
    (
        "abort_multipart_upload",
        &["s3:AbortMultipartUpload"],
        Target::Reports,
    ),
    ("send_message", &["sqs:SendMessage"], Target::WorkQueue),
    (
        "send_message_batch",
        &["sqs:SendMessage"],
        Target::WorkQueue,
    ),
    (
        "get_queue_attributes",
        &["sqs:GetQueueAttributes"],
        Target::WorkQueue,
    ),
    (
        "get_secret_value",
        &["secretsmanager:GetSecretValue"],
        Target::Secret,
    ),
    ("get_item", &["dynamodb:GetItem"], Target::Ledger),
    ("batch_get_item", &["dynamodb:BatchGetItem"], Target::Ledger),
    ("put_item", &["dynamodb:PutItem"], Target::Ledger),
    ("update_item", &["dynamodb:UpdateItem"], Target::Ledger),
    ("query", &["dynamodb:Query"], Target::Ledger),
    // Authorized as the actions it holds: the ledger's transactions hold updates only.
    (
        "transact_write_items",
        &["dynamodb:UpdateItem"],
        Target::Ledger,
    ),
    // Run completed / held events.
    ("put_events", &["events:PutEvents"], Target::EventBus),
];

/// Builder methods that need one more action: (operation, method without `set_`, action).
const EXTRA_GRANTS: &[(&str, &str, &str)] = &[
    // A GET naming a version (as S3 and EventBridge events do) is authorized as GetObjectVersion.
    ("get_object", "version_id", "s3:GetObjectVersion"),
    ("head_object", "version_id", "s3:GetObjectVersion"),
    ("put_object", "tagging", "s3:PutObjectTagging"),
    ("create_multipart_upload", "tagging", "s3:PutObjectTagging"),
];

/// Parameter values of the deployments checked: the defaults, an existing bucket with a KMS key
/// and a scheduled rerun of one key outside the upload prefix, and a rerun of the newest object.
fn scenarios() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let secret = (
        "CredentialsSecretArn",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:scim-provisioner-AbCdEf",
    );
    vec![
        ("defaults", vec![secret]),
        (
            "existing bucket, KMS key, scheduled rerun of a key",
            vec![
                secret,
                (
                    "CredentialsKmsKeyArn",
                    "arn:aws:kms:eu-west-1:123456789012:key/0f1e2d3c-1111-2222-3333-444455556666",
                ),
                ("ExistingUploadBucket", "hr-exports"),
                ("UploadPrefix", "staff/"),
                ("RerunSchedule", "rate(1 day)"),
                ("RerunKey", "manual/everyone.csv"),
            ],
        ),
        (
            "scheduled rerun of the newest object, run events on a bus of its own",
            vec![
                secret,
                ("RerunSchedule", "cron(0 6 * * ? *)"),
                ("EventBusName", "hr-provisioning"),
            ],
        ),
    ]
}

/// The template as JSON (decoded by cfn-lint, which knows the short-form tags).
fn decoded_template() -> Value {
    let out = run(
        &support::venv_bin("python"),
        &["infra/check_template.py", "--json", "template.yaml"],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("decoded template: {e}\n{out}"))
}

/// Everything in `calls` that `template` does not grant, one line each.
fn missing_grants(template: &Value, calls: &[SdkCall]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut report = |problem: String| {
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    };
    let mut checked = BTreeSet::new();
    for (scenario, params) in scenarios() {
        let cfn = Cfn::new(template, &params);
        let deployment = Deployment::of(&cfn);
        for call in calls {
            let Some((_, actions, target)) = GRANTS.iter().find(|(op, ..)| *op == call.op) else {
                report(format!(
                    "{}: SDK call `{}` has no IAM mapping in tests/template.rs (GRANTS)",
                    call.place,
                    if call.op.is_empty() { "?" } else { &call.op }
                ));
                continue;
            };
            let mut needed: Vec<&str> = actions.to_vec();
            for (op, method, action) in EXTRA_GRANTS {
                let uses = |m: &String| m.strip_prefix("set_").unwrap_or(m) == *method;
                if *op == call.op && call.methods.iter().any(uses) {
                    needed.push(action);
                }
            }
            for request in deployment.requests(*target) {
                checked.insert(call.op.clone());
                for action in &needed {
                    if !deployment.allows(action, &request) {
                        report(format!(
                            "{}: `{}` needs {action} on {} ({scenario})",
                            call.place, call.op, request.arn
                        ));
                    }
                }
            }
            // Credentials in a secret under a customer-managed key need that key too.
            if matches!(target, Target::Secret) {
                if let Some(key) = deployment.kms_key.clone() {
                    let request = Request::new(key);
                    if !deployment.allows("kms:Decrypt", &request) {
                        report(format!(
                            "{}: `{}` needs kms:Decrypt on {} ({scenario})",
                            call.place, call.op, request.arn
                        ));
                    }
                }
            }
        }
    }
    for call in calls {
        let mapped = GRANTS.iter().any(|(op, ..)| *op == call.op);
        if mapped && !checked.contains(&call.op) {
            report(format!(
                "{}: `{}` touched no resource in any scenario: the check is vacuous",
                call.place, call.op
            ));
        }
    }
    problems
}

/// One request as IAM evaluates it: the resource and the condition keys it carries.
#[derive(Debug)]
struct Request {
    arn: String,
    context: Vec<(&'static str, String)>,
}

impl Request {
    fn new(arn: String) -> Self {
        Self {
            arn,
            context: Vec::new(),
        }
    }
}

/// What one deployment of the template gives the function.
struct Deployment {
    partition: String,
    statements: Vec<Value>,
    /// (bucket, key) objects the function's triggers name.
    objects: Vec<(String, String)>,
    /// (bucket, prefix) listings: reruns of the newest object under a prefix.
    listings: Vec<(String, String)>,
    report_bucket: String,
    queue_arn: String,
    secret_arn: String,
    ledger_arn: String,
    event_bus_arn: String,
    kms_key: Option<String>,
}

impl Deployment {
    fn of(cfn: &Cfn) -> Self {
        let function = &cfn.resources()["ProvisionerFunction"];
        let function_arn = cfn.get_att("ProvisionerFunction", "Arn");
        let properties = cfn
            .eval(&function["Properties"])
            .expect("function properties");
        let env = &properties["Environment"]["Variables"];
        let env_var = |name: &str| -> String {
            env[name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} is not set by the template"))
                .to_string()
        };
        let statements = properties["Policies"]
            .as_array()
            .expect("Policies")
            .iter()
            // Managed policies and SAM policy templates are not read: only inline statements count.
            .filter_map(|p| p.get("Statement").and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();

        let mut objects = Vec::new();
        let mut listings = Vec::new();
        for (name, resource) in cfn.resources() {
            if !cfn.exists(resource) {
                continue;
            }
            match resource["Type"].as_str() {
                Some("AWS::S3::Bucket") => {
                    let bucket = cfn.eval(&resource["Properties"]).unwrap_or(Value::Null);
                    let notifications = &bucket["NotificationConfiguration"];
                    for config in notifications["LambdaConfigurations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|c| c["Function"] == function_arn)
                    {
                        let rule = |which: &str| {
                            config["Filter"]["S3Key"]["Rules"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .find(|r| r["Name"].as_str() == Some(which))
                                .and_then(|r| r["Value"].as_str())
                                .unwrap_or("")
                                .to_string()
                        };
                        let key = format!("{}hr export{}", rule("prefix"), rule("suffix"));
                        objects.push((cfn.reference(name), key));
                    }
                }
                Some("AWS::Events::Rule") => {
                    let rule = cfn.eval(&resource["Properties"]).unwrap_or(Value::Null);
                    for target in rule["Targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|t| t["Arn"] == function_arn)
                    {
                        if let Some(input) = target["Input"].as_str() {
                            let input: Value =
                                serde_json::from_str(input).expect("target Input is JSON");
                            let detail = &input["detail"];
                            let bucket = detail["bucket"].as_str().expect("detail.bucket");
                            if let Some(key) = detail["key"].as_str() {
                                objects.push((bucket.into(), key.into()));
                            }
                            if let Some(prefix) = detail["prefix"].as_str() {
                                listings.push((bucket.into(), prefix.into()));
                                objects.push((bucket.into(), format!("{prefix}newest.csv")));
                            }
                        }
                        let pattern = &rule["EventPattern"];
                        if pattern["source"][0] == "aws.s3" {
                            let bucket = pattern["detail"]["bucket"]["name"][0].as_str();
                            let key = pattern["detail"]["object"]["key"][0]["wildcard"].as_str();
                            let (Some(bucket), Some(key)) = (bucket, key) else {
                                panic!(
                                    "{name}: S3 event pattern without bucket name or key wildcard"
                                );
                            };
                            objects.push((bucket.into(), key.replace('*', "hr export")));
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(
            !objects.is_empty(),
            "no trigger of the function names a CSV"
        );

        let queue_url = env_var("WORK_QUEUE_URL");
        let (region, rest) = queue_url
            .strip_prefix("https://sqs.")
            .and_then(|r| r.split_once(".amazonaws.com/"))
            .unwrap_or_else(|| panic!("WORK_QUEUE_URL is not an SQS URL: {queue_url}"));
        let (account, queue) = rest.split_once('/').expect("account/queue");
        let secret_id = env_var("SCIM_SECRET_ID");
        assert!(secret_id.starts_with("arn:"), "SCIM_SECRET_ID: {secret_id}");
        let kms_key = cfn.param("CredentialsKmsKeyArn").filter(|k| !k.is_empty());
        Self {
            partition: cfn.pseudo("AWS::Partition"),
            statements,
            objects,
            listings,
            report_bucket: env_var("REPORT_BUCKET"),
            queue_arn: format!("arn:aws:sqs:{region}:{account}:{queue}"),
            secret_arn: secret_id,
            ledger_arn: format!(
                "arn:aws:dynamodb:{region}:{account}:table/{}",
                env_var("LEDGER_TABLE")
            ),
            event_bus_arn: match env_var("EVENT_BUS_NAME") {
                arn if arn.starts_with("arn:") => arn,
                name => format!("arn:aws:events:{region}:{account}:event-bus/{name}"),
            },
            kms_key,
        }
    }

    fn requests(&self, target: Target) -> Vec<Request> {
        let s3 = format!("arn:{}:s3:::", self.partition);
        match target {
            Target::SourceObjects => self
                .objects
                .iter()
                .map(|(bucket, key)| Request::new(format!("{s3}{bucket}/{key}")))
                .collect(),
            Target::SourceListing => self
                .listings
                .iter()
                .map(|(bucket, prefix)| Request {
                    arn: format!("{s3}{bucket}"),
                    context: vec![("s3:prefix", prefix.clone())],
                })
                .collect(),
            Target::Reports => ["reports/hr export.csv-1.jsonl", "reports/runs/run-1.json"]
                .iter()
                .map(|key| Request::new(format!("{s3}{}/{key}", self.report_bucket)))
                .collect(),
            Target::WorkQueue => vec![Request::new(self.queue_arn.clone())],
            Target::Secret => vec![Request::new(self.secret_arn.clone())],
            Target::Ledger => vec![Request::new(self.ledger_arn.clone())],
            Target::EventBus => vec![Request::new(self.event_bus_arn.clone())],
        }
    }

    /// IAM's answer for the function's inline statements: an explicit Deny wins, else some Allow.
    fn allows(&self, action: &str, request: &Request) -> bool {
        let applies = |statement: &Value| {
            let listed = |key: &str, matches: &dyn Fn(&str) -> bool| {
                let values = match &statement[key] {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                values.into_iter().any(matches)
            };
            // NotAction / NotResource are not understood here: such a statement grants nothing.
            listed("Action", &|a| {
                glob(&a.to_lowercase(), &action.to_lowercase())
            }) && listed("Resource", &|r| glob(r, &request.arn))
                && conditions_hold(&statement["Condition"], request)
        };
        let effect = |s: &Value, e: &str| s["Effect"].as_str() == Some(e);
        let denied = self
            .statements
            .iter()
            .any(|s| effect(s, "Deny") && applies(s));
        !denied
            && self
                .statements
                .iter()
                .any(|s| effect(s, "Allow") && applies(s))
    }
}

/// Conditions of a statement against the request's context; an operator or key not understood
/// here does not hold (the check errs towards "not granted").
fn conditions_hold(conditions: &Value, request: &Request) -> bool {
    let Some(conditions) = conditions.as_object() else {
        return conditions.is_null();
    };
    conditions.iter().all(|(operator, keys)| {
        let Some(keys) = keys.as_object() else {
            return false;
        };
        keys.iter().all(|(key, wanted)| {
            let Some((_, value)) = request.context.iter().find(|(k, _)| k == key) else {
                return false;
            };
            let wanted: Vec<&str> = match wanted {
                Value::String(s) => vec![s],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => return false,
            };
            match operator.as_str() {
                "StringEquals" => wanted.contains(&value.as_str()),
                "StringLike" => wanted.iter().any(|w| glob(w, value)),
                _ => false,
            }
        })
    })
}

/// IAM's wildcard match: `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

// ---------------------------------------------------------------------------------------------
// A small CloudFormation evaluator: the intrinsic functions template.yaml uses, for one set of
// parameter values. Resources get plausible names and ARNs from their logical ids.

struct Cfn<'t> {
    template: &'t Value,
    params: Map<String, Value>,
}

const REGION: &str = "eu-west-1";
const ACCOUNT: &str = "123456789012";

impl<'t> Cfn<'t> {
    fn new(template: &'t Value, overrides: &[(&str, &str)]) -> Self {
        let mut params = Map::new();
        for (name, spec) in template["Parameters"].as_object().expect("Parameters") {
            if let Some(default) = spec.get("Default") {
                let text = match default {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                params.insert(name.clone(), Value::String(text));
            }
        }
        for (name, value) in overrides {
            assert!(
                template["Parameters"].get(*name).is_some(),
                "no parameter {name}"
            );
            params.insert((*name).into(), json!(value));
        }
        Self { template, params }
    }

    fn resources(&self) -> &'t Map<String, Value> {
        self.template["Resources"].as_object().expect("Resources")
    }

    fn param(&self, name: &str) -> Option<String> {
        self.params
            .get(name)
            .and_then(Value::as_str)
            .map(Into::into)
    }

    fn pseudo(&self, name: &str) -> String {
        match name {
            "AWS::Partition" => "aws".into(),
            "AWS::Region" => REGION.into(),
            "AWS::AccountId" => ACCOUNT.into(),
            "AWS::StackName" => "provisioner".into(),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            "AWS::StackId" => format!(
                "arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/provisioner/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
            ),
            other => panic!("pseudo parameter {other} not known to the evaluator"),
        }
    }

    fn exists(&self, resource: &Value) -> bool {
        resource
            .get("Condition")
            .and_then(Value::as_str)
            .is_none_or(|c| self.condition(c))
    }

    fn condition(&self, name: &str) -> bool {
        let definition = &self.template["Conditions"][name];
        assert!(!definition.is_null(), "no condition {name}");
        self.truth(definition)
    }

    fn truth(&self, node: &Value) -> bool {
        let (function, args) = single(node).unwrap_or_else(|| panic!("condition {node}"));
        let arg = |i: usize| &args[i];
        match function {
            "Condition" => self.condition(args.as_str().expect("condition name")),
            "Fn::Equals" => self.eval(arg(0)) == self.eval(arg(1)),
            "Fn::Not" => !self.truth(arg(0)),
            "Fn::Or" => args
                .as_array()
                .expect("Fn::Or")
                .iter()
                .any(|a| self.truth(a)),
            "Fn::And" => args
                .as_array()
                .expect("Fn::And")
                .iter()
                .all(|a| self.truth(a)),
            other => panic!("condition function {other} not known to the evaluator"),
        }
    }

    /// What `Ref` of a resource returns.
    fn reference(&self, name: &str) -> String {
        let resource = &self.resources()[name];
        match resource["Type"].as_str() {
            Some("AWS::SQS::Queue") => {
                format!("https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}")
            }
            Some("AWS::S3::Bucket") => self
                .eval(&resource["Properties"]["BucketName"])
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_else(|| name.to_lowercase()),
            _ => name.to_string(),
        }
    }

    fn get_att(&self, name: &str, attribute: &str) -> Value {
        let resource = &self.resources()[name];
        let kind = resource["Type"]
            .as_str()
            .unwrap_or_else(|| panic!("no resource {name}"));
        let value = match (kind, attribute) {
            ("AWS::SQS::Queue", "Arn") => format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            ("AWS::SQS::Queue", "QueueName") => name.to_string(),
            ("AWS::SQS::Queue", "QueueUrl") => self.reference(name),
            ("AWS::S3::Bucket", "Arn") => format!("arn:aws:s3:::{}", self.reference(name)),
            ("AWS::DynamoDB::Table", "Arn") => {
                format!(
                    "arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}",
                    self.reference(name)
                )
            }
            ("AWS::Events::Rule", "Arn") => {
                format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}")
            }
            ("AWS::Serverless::Function", "Arn") => {
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
            }
            _ => panic!("Fn::GetAtt {name}.{attribute} ({kind}) not known to the evaluator"),
        };
        Value::String(value)
    }

    fn lookup(&self, name: &str) -> Value {
        if let Some(value) = self.params.get(name) {
            return value.clone();
        }
        if name.starts_with("AWS::") {
            return Value::String(self.pseudo(name));
        }
        assert!(
            self.resources().contains_key(name),
            "Ref {name}: no such parameter or resource (or a parameter without a value)"
        );
        Value::String(self.reference(name))
    }

    /// The value of `node`; `None` for `AWS::NoValue`.
    fn eval(&self, node: &Value) -> Option<Value> {
        if let Some((function, args)) = single(node) {
            let string = |v: &Value| -> String {
                match self.eval(v) {
                    Some(Value::String(s)) => s,
                    other => panic!("{function}: expected a string, got {other:?}"),
                }
            };
            match function {
                "Ref" if args == "AWS::NoValue" => return None,
                "Ref" => return Some(self.lookup(args.as_str().expect("Ref name"))),
                "Fn::GetAtt" => {
                    let (name, attribute) = match args {
                        Value::Array(a) => (a[0].as_str(), a[1].as_str()),
                        Value::String(s) => {
                            let (n, a) = s.split_once('.').expect("GetAtt name.attribute");
                            (Some(n), Some(a))
                        }
                        _ => (None, None),
                    };
                    let (Some(name), Some(attribute)) = (name, attribute) else {
                        panic!("Fn::GetAtt {args}");
                    };
                    return Some(self.get_att(name, attribute));
                }
                "Fn::If" => {
                    let branch = if self.condition(args[0].as_str().expect("If condition")) {
                        &args[1]
                    } else {
                        &args[2]
                    };
                    return self.eval(branch);
                }
                "Fn::Join" => {
                    let parts = self.eval(&args[1]).expect("Join list");
                    let parts: Vec<String> = parts
                        .as_array()
                        .expect("Join list")
                        .iter()
                        .map(|p| p.as_str().expect("Join part").to_string())
                        .collect();
                    return Some(json!(parts.join(args[0].as_str().expect("Join separator"))));
                }
                "Fn::Split" => {
                    let text = string(&args[1]);
                    let separator = args[0].as_str().expect("Split separator");
                    return Some(json!(text.split(separator).collect::<Vec<_>>()));
                }
                "Fn::Select" => {
                    let index: usize = match &args[0] {
                        Value::Number(n) => n.as_u64().expect("index") as usize,
                        other => string(other).parse().expect("Select index"),
                    };
                    let list = self.eval(&args[1]).expect("Select list");
                    return Some(list[index].clone());
                }
                "Fn::FindInMap" => {
                    let keys: Vec<String> = args
                        .as_array()
                        .expect("FindInMap")
                        .iter()
                        .map(string)
                        .collect();
                    let value = &self.template["Mappings"][&keys[0]][&keys[1]][&keys[2]];
                    return Some(value.clone());
                }
                "Fn::Sub" => {
                    let (text, local) = match args {
                        Value::String(s) => (s.as_str(), Map::new()),
                        Value::Array(a) => {
                            let local = a[1]
                                .as_object()
                                .expect("Sub variables")
                                .iter()
                                .map(|(k, v)| (k.clone(), self.eval(v).unwrap_or(Value::Null)))
                                .collect();
                            (a[0].as_str().expect("Sub text"), local)
                        }
                        _ => panic!("Fn::Sub {args}"),
                    };
                    return Some(json!(self.sub(text, &local)));
                }
                _ if function.starts_with("Fn::") => {
                    panic!("{function} not known to the evaluator")
                }
                _ => {}
            }
        }
        Some(match node {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter_map(|(k, v)| self.eval(v).map(|v| (k.clone(), v)))
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().filter_map(|v| self.eval(v)).collect())
            }
            other => other.clone(),
        })
    }

    fn sub(&self, text: &str, local: &Map<String, Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("unclosed ${") + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str(&format!("${{{literal}}}"));
            } else {
                let value = match local.get(name) {
                    Some(v) => v.clone(),
                    None => match name.split_once('.') {
                        Some((resource, attribute)) if !name.starts_with("AWS::") => {
                            self.get_att(resource, attribute)
                        }
                        _ => self.lookup(name),
                    },
                };
                out.push_str(
                    value
                        .as_str()
                        .unwrap_or_else(|| panic!("${{{name}}}: {value}")),
                );
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// `{"Fn::X": args}` or `{"Ref": name}` or `{"Condition": name}`: the function and its arguments.
fn single(node: &Value) -> Option<(&str, &Value)> {
    let map = node.as_object()?;
    let (key, value) = map.iter().next()?;
    let intrinsic = key == "Ref" || key == "Condition" || key.starts_with("Fn::");
    (map.len() == 1 && intrinsic).then_some((key.as_str(), value))
}

// ---------------------------------------------------------------------------------------------
// The scan: every `.send()` of an AWS SDK fluent builder in src/, with the operation that
// starts its chain (`client.get_object().bucket(..)...send()` -> `get_object`).

/// One SDK call in the source.
#[derive(Debug)]
struct SdkCall {
    /// `file:line` of the `.send()`.
    place: String,
    /// The operation (`get_object`); empty when the chain could not be read back to one.
    op: String,
    /// The chain's method names in order, the operation first.
    methods: Vec<String>,
}

/// The SDK calls of the function's code: every file under `src` that uses the AWS SDK, except
/// src/cli (the command-line tool runs with the operator's own credentials, not the function's role).
fn sdk_calls(src: &Path) -> Vec<SdkCall> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path != src.join("cli") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut calls = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        if text.contains("aws_sdk_") || text.contains("aws_config") {
            let name = file
                .strip_prefix(src.parent().expect("root"))
                .unwrap_or(&file);
            calls.extend(calls_in(&name.display().to_string(), &text));
        }
    }
    calls
}

fn calls_in(file: &str, text: &str) -> Vec<SdkCall> {
    let code = blank_comments_and_strings(text);
    let bytes = code.as_bytes();
    let mut calls = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(".send") {
        let dot = from + found;
        from = dot + 1;
        let mut after = dot + ".send".len();
        if bytes
            .get(after)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            continue; // .send_message() etc.
        }
        while bytes.get(after).is_some_and(u8::is_ascii_whitespace) {
            after += 1;
        }
        if bytes.get(after) != Some(&b'(') {
            continue;
        }
        after += 1;
        while bytes.get(after).is_some_and(u8::is_ascii_whitespace) {
            after += 1;
        }
        if bytes.get(after) != Some(&b')') {
            continue; // send(value): a channel, not a request builder
        }
        let mut methods = vec!["send".to_string()];
        let mut at = dot;
        // Back over `.method(args)` segments while the chain goes on.
        while let Some((method, start)) = previous_call(bytes, at) {
            methods.push(method);
            at = start;
        }
        methods.reverse();
        let op = if methods.len() > 1 {
            methods[0].clone()
        } else {
            String::new()
        };
        let line = code[..dot].matches('\n').count() + 1;
        calls.push(SdkCall {
            place: format!("{file}:{line}"),
            op,
            methods,
        });
    }
    calls
}

/// The `.method(args)` segment that ends just before `dot`: its name and the index of its dot.
fn previous_call(bytes: &[u8], dot: usize) -> Option<(String, usize)> {
    let mut i = dot;
    while i > 0 && bytes[i - 1].is_ascii_whitespace() {
        i -= 1;
    }
    if i == 0 || bytes[i - 1] != b')' {
        return None;
    }
    let mut depth = 0usize;
    while i > 0 {
        i -= 1;
        match bytes[i] {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    let end = i;
    while i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
        i -= 1;
    }
    let name = std::str::from_utf8(&bytes[i..end]).ok()?.to_string();
    let mut j = i;
    while j > 0 && bytes[j - 1].is_ascii_whitespace() {
        j -= 1;
    }
    (!name.is_empty() && j > 0 && bytes[j - 1] == b'.').then(|| (name, j - 1))
}

/// `text` with comments and the contents of string and char literals replaced by spaces
/// (newlines kept, so line numbers stay right).
fn blank_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            let closing: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let rest: String = chars[j + 1..].iter().collect();
            let len = rest
                .find(&closing)
                .map_or(rest.len(), |p| rest[..p].chars().count());
            out.extend(std::iter::repeat_n(' ', j + 1 - i));
            out.extend(chars[j + 1..j + 1 + len].iter().map(|&c| blank(c)));
            let close = (closing.len()).min(chars.len().saturating_sub(j + 1 + len));
            out.extend(std::iter::repeat_n(' ', close));
            i = j + 1 + len + close;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            if i < chars.len() {
                out.push(' ');
                i += 1;
            }
        } else if c == '\'' && next == Some('\\') {
            // '\n', '\'', '\u{..}'
            let end = chars
                .get(i + 3..)
                .and_then(|rest| rest.iter().position(|&c| c == '\''))
                .map_or(chars.len(), |p| i + 3 + p + 1);
            out.extend(std::iter::repeat_n(' ', end - i));
            i = end;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("   ");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}
