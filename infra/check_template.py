"""Checks of template.yaml that cfn-lint does not make (run by tests/template.rs).

Usage: python infra/check_template.py template.yaml README.md
       python infra/check_template.py --json template.yaml   (the decoded template as JSON, for
       tests/template.rs, which checks the function's permissions against the code's AWS calls)

The second file carries the contract (the README's "## The contract" section): the
repository's own copy, so the checks need nothing outside the repository.
"""
import json
import re
import sys
import unittest

from cfnlint.decode import decode_str

if sys.argv[1] == "--json":
    with open(sys.argv[2], encoding="utf-8") as f:
        decoded, problems = decode_str(f.read())
    if problems:
        sys.exit(f"{sys.argv[2]} cannot be decoded: {problems}")
    json.dump(decoded, sys.stdout)
    sys.exit(0)

TEMPLATE, CONTRACT = sys.argv[1], sys.argv[2]
with open(TEMPLATE, encoding="utf-8") as f:
    TEMPLATE_TEXT = f.read()
T, _ = decode_str(TEMPLATE_TEXT)
RESOURCES = T["Resources"]
FUNCTION = RESOURCES["ProvisionerFunction"]["Properties"]


def walk(node, path=()):
    """Yields (path, node) for every node of a decoded template."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


class Template(unittest.TestCase):
    def test_visibility_timeout_is_at_least_six_times_the_timeout(self):
        mapping = T["Mappings"]["VisibilityForTimeout"]
        allowed = T["Parameters"]["Timeout"]["AllowedValues"]
        self.assertEqual(sorted(str(v) for v in allowed), sorted(mapping))
        for timeout, row in mapping.items():
            self.assertGreaterEqual(row["Seconds"], 6 * int(timeout), timeout)
            self.assertLessEqual(row["Seconds"], 43200, timeout)
        vis = RESOURCES["WorkQueue"]["Properties"]["VisibilityTimeout"]
        self.assertEqual(vis, {"Fn::FindInMap": ["VisibilityForTimeout", {"Ref": "Timeout"}, "Seconds"]})
        self.assertEqual(FUNCTION["Timeout"], {"Ref": "Timeout"})

    def test_sqs_source_reports_batch_item_failures(self):
        events = FUNCTION["Events"]
        sqs = [e for e in events.values() if e["Type"] == "SQS"]
        self.assertEqual(len(sqs), 1)
        props = sqs[0]["Properties"]
        self.assertIn("ReportBatchItemFailures", props["FunctionResponseTypes"])
        self.assertEqual(props["ScalingConfig"]["MaximumConcurrency"], {"Ref": "MaximumConcurrency"})
        self.assertEqual(props["Queue"], {"Fn::GetAtt": ["WorkQueue", "Arn"]})

    def test_dead_letter_queue_and_alarm(self):
        redrive = RESOURCES["WorkQueue"]["Properties"]["RedrivePolicy"]
        self.assertEqual(redrive["deadLetterTargetArn"], {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})
        alarm = RESOURCES["DeadLetterAlarm"]["Properties"]
        self.assertEqual(alarm["Dimensions"][0]["Value"], {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]})

    def test_report_uploads_cut_off_are_cleaned_up(self):
        rules = RESOURCES["UploadBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
        aborts = [r for r in rules if r.get("Status") == "Enabled" and "AbortIncompleteMultipartUpload" in r]
        self.assertEqual(len(aborts), 1)
        self.assertEqual(aborts[0]["Prefix"], "reports/")
        self.assertLessEqual(aborts[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"], 7)

    def test_the_ledger_table_is_durable_encrypted_and_on_demand(self):
        table = RESOURCES["LedgerTable"]
        self.assertEqual(table["Type"], "AWS::DynamoDB::Table")
        self.assertEqual((table["DeletionPolicy"], table["UpdateReplacePolicy"]), ("Retain", "Retain"))
        props = table["Properties"]
        self.assertEqual(props["BillingMode"], "PAY_PER_REQUEST")
        self.assertEqual(
            sorted((k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]),
            [("pk", "HASH"), ("sk", "RANGE")],
        )
        self.assertEqual({a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]},
                         {"pk": "S", "sk": "S"})
        self.assertIs(props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], True)
        self.assertIs(props["SSESpecification"]["SSEEnabled"], True)
        self.assertEqual(props["TimeToLiveSpecification"], {"AttributeName": "ttl", "Enabled": True})
        self.assertEqual(FUNCTION["Environment"]["Variables"]["LEDGER_TABLE"], {"Ref": "LedgerTable"})
        # Least privilege: the ledger's actions on that table only, and no scan or delete.
        statements = [s for p in FUNCTION["Policies"] for s in p["Statement"] if "Effect" in s]
        ledger = [s for s in statements if any(str(a).startswith("dynamodb:") for a in s["Action"])]
        self.assertEqual(len(ledger), 1)
        self.assertEqual(ledger[0]["Resource"], {"Fn::GetAtt": ["LedgerTable", "Arn"]})
        for action in ledger[0]["Action"]:
            self.assertNotIn(action, ("dynamodb:*", "dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:DeleteTable"))

    def test_failed_async_invocations_and_undelivered_events_are_kept(self):
        queue = RESOURCES["FailedEventsQueue"]
        self.assertEqual(queue["Type"], "AWS::SQS::Queue")
        self.assertEqual(queue["Properties"]["MessageRetentionPeriod"], 1209600)
        self.assertIs(queue["Properties"]["SqsManagedSseEnabled"], True)
        arn = {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
        # Lambda's on-failure destination for S3 and EventBridge (asynchronous) invocations.
        config = FUNCTION["EventInvokeConfig"]
        self.assertEqual(config["DestinationConfig"]["OnFailure"], {"Type": "SQS", "Destination": arn})
        self.assertLessEqual(config["MaximumRetryAttempts"], 2)
        statements = [s for p in FUNCTION["Policies"] for s in p["Statement"] if "Effect" in s]
        self.assertTrue([s for s in statements if s["Action"] == "sqs:SendMessage" and s["Resource"] == arn])
        # Every EventBridge rule that invokes the function keeps what it could not deliver.
        rules = [n for n, r in RESOURCES.items() if r["Type"] == "AWS::Events::Rule"]
        self.assertGreaterEqual(len(rules), 2)
        for name in rules:
            for target in RESOURCES[name]["Properties"]["Targets"]:
                self.assertEqual(target["DeadLetterConfig"], {"Arn": arn}, name)
                self.assertGreater(target["RetryPolicy"]["MaximumRetryAttempts"], 0, name)
                self.assertIn("MaximumEventAgeInSeconds", target["RetryPolicy"], name)
        # EventBridge may send to that queue, from those rules only (whichever the stack creates).
        policy = RESOURCES["FailedEventsQueuePolicy"]
        self.assertEqual(policy["Properties"]["Queues"], [{"Ref": "FailedEventsQueue"}])
        [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
        self.assertEqual(statement["Principal"], {"Service": "events.amazonaws.com"})
        self.assertEqual(statement["Action"], "sqs:SendMessage")
        self.assertEqual(statement["Resource"], arn)
        sources = statement["Condition"]["ArnEquals"]["aws:SourceArn"]

        def source(name):
            arn = {"Fn::GetAtt": [name, "Arn"]}
            if "Condition" not in RESOURCES[name]:
                return arn
            return {"Fn::If": [RESOURCES[name]["Condition"], arn, {"Ref": "AWS::NoValue"}]}

        self.assertCountEqual(sources, [source(n) for n in rules])
        # The policy exists exactly when one of the rules does (an empty SourceArn list is invalid).
        if all("Condition" in RESOURCES[n] for n in rules):
            rule_conditions = sorted(RESOURCES[n]["Condition"] for n in rules)
            either = T["Conditions"][policy["Condition"]]["Fn::Or"]
            self.assertEqual(sorted(c["Condition"] for c in either), rule_conditions)
        else:
            self.assertNotIn("Condition", policy)
        # Alarmed like the dead-letter queue.
        alarm = RESOURCES["FailedEventsAlarm"]["Properties"]
        self.assertEqual(alarm["Dimensions"][0]["Value"], {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]})
        dlq_alarm = RESOURCES["DeadLetterAlarm"]["Properties"]
        for key in ("MetricName", "Threshold", "ComparisonOperator", "AlarmActions"):
            self.assertEqual(alarm[key], dlq_alarm[key], key)

    def test_metrics_namespace_alarms_and_dashboard(self):
        env = FUNCTION["Environment"]["Variables"]
        self.assertEqual(env["METRICS_NAMESPACE"], {"Ref": "MetricsNamespace"})
        self.assertEqual(T["Parameters"]["MetricsNamespace"]["Default"], "ScimBulkProvisioner")
        # The EMF objects' one dimension (src/metrics.rs): alarms name it, or they see nothing.
        dimension = [{"Name": "FunctionName", "Value": {"Ref": "ProvisionerFunction"}}]
        dlq_alarm = RESOURCES["DeadLetterAlarm"]["Properties"]
        for name, metric in (("FailedOperationsAlarm", "Failed"), ("RunHeldAlarm", "RunsHeld")):
            alarm = RESOURCES[name]["Properties"]
            self.assertEqual(alarm["Namespace"], {"Ref": "MetricsNamespace"}, name)
            self.assertEqual(alarm["MetricName"], metric, name)
            self.assertEqual(alarm["Dimensions"], dimension, name)
            self.assertEqual(alarm["Statistic"], "Sum", name)
            self.assertEqual((alarm["Threshold"], alarm["ComparisonOperator"]), (0, "GreaterThanThreshold"), name)
            self.assertEqual(alarm["TreatMissingData"], "notBreaching", name)
            self.assertEqual(alarm["AlarmActions"], dlq_alarm["AlarmActions"], name)
        # The dashboard's body is JSON once substituted, and shows what the issue asks for.
        text, local = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        body = json.loads(re.sub(r"\$\{([^}]+)\}", r"<\1>", text))
        widgets = [w["properties"] for w in body["widgets"]]
        lines = [m for w in widgets for m in w["metrics"]]
        emf = {m[1] for m in lines if m[0] == "<MetricsNamespace>"}
        for metric in ("Created", "Updated", "Unchanged", "Deactivated", "Skipped", "Failed", "Invalid",
                       "Throttled", "RunsHeld"):
            self.assertIn(metric, emf)
        for m in lines:
            if m[0] == "<MetricsNamespace>":
                self.assertEqual(m[2:4], ["FunctionName", "<ProvisionerFunction>"], m)
        sqs = {(m[1], m[3]) for m in lines if m[0] == "AWS/SQS"}
        self.assertIn(("ApproximateAgeOfOldestMessage", "<WorkQueueName>"), sqs)
        self.assertIn(("ApproximateNumberOfMessagesVisible", "<DeadLetterQueueName>"), sqs)
        self.assertEqual(local["WorkQueueName"], {"Fn::GetAtt": ["WorkQueue", "QueueName"]})
        self.assertEqual(local["DeadLetterQueueName"], {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]})

    def test_run_events_and_approvals_use_the_configured_bus(self):
        env = FUNCTION["Environment"]["Variables"]
        for var, param in (("EVENT_BUS_NAME", "EventBusName"), ("SYNC_MODE", "SyncMode"),
                           ("MAX_DEACTIVATIONS", "MaxDeactivations"),
                           ("MAX_DEACTIVATION_PERCENT", "MaxDeactivationPercent")):
            self.assertEqual(env[var], {"Ref": param}, var)
        params = T["Parameters"]
        self.assertEqual(params["EventBusName"]["Default"], "default")
        self.assertEqual((params["SyncMode"]["Default"], params["SyncMode"]["AllowedValues"]), ("upsert", ["upsert", "full"]))
        self.assertEqual((params["MaxDeactivations"]["Default"], params["MaxDeactivationPercent"]["Default"]), (50, 10))
        # events:PutEvents on that bus and nothing else.
        statements = [s for p in FUNCTION["Policies"] for s in p["Statement"] if "Effect" in s]
        puts = [s for s in statements if any(str(a).startswith("events:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
        self.assertEqual(len(puts), 1)
        self.assertEqual(puts[0]["Action"], "events:PutEvents")
        self.assertEqual(puts[0]["Resource"], {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}"})
        # Approvals on that bus reach the function; its own run events (no approve_run) do not.
        rule = RESOURCES["ApprovalRule"]["Properties"]
        self.assertEqual(rule["EventBusName"], {"Ref": "EventBusName"})
        self.assertEqual(rule["EventPattern"], {"source": ["scim-bulk-provisioner"], "detail": {"approve_run": [{"exists": True}]}})
        self.assertEqual([t["Arn"] for t in rule["Targets"]], [{"Fn::GetAtt": ["ProvisionerFunction", "Arn"]}])
        self.assertNotIn("Input", rule["Targets"][0])
        permission = RESOURCES["ApprovalPermission"]["Properties"]
        self.assertEqual((permission["Principal"], permission["SourceArn"]),
                         ("events.amazonaws.com", {"Fn::GetAtt": ["ApprovalRule", "Arn"]}))

    def test_every_ref_and_getatt_target_exists(self):
        names = set(RESOURCES) | set(T["Parameters"])
        pseudo = {"AWS::StackId", "AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::NoValue", "AWS::StackName", "AWS::URLSuffix"}
        for path, node in walk(T):
            if isinstance(node, dict) and "Ref" in node:
                self.assertIn(node["Ref"], names | pseudo, path)
            if isinstance(node, dict) and "Fn::GetAtt" in node:
                target = node["Fn::GetAtt"]
                target = target[0] if isinstance(target, list) else target.split(".")[0]
                self.assertIn(target, RESOURCES, path)
            if isinstance(node, dict) and "Fn::Sub" in node:
                sub = node["Fn::Sub"]
                text, local = (sub[0], sub[1]) if isinstance(sub, list) else (sub, {})
                for var in re.findall(r"\$\{([^}!]+)\}", text):
                    base = var.split(".")[0]
                    self.assertIn(base, names | pseudo | set(local), (path, var))

    def test_no_wildcard_resources_in_policies(self):
        statements = [s for p in FUNCTION["Policies"] for s in p["Statement"]]
        self.assertGreater(len(statements), 3)
        for path, node in walk(statements):
            if path and path[-1] == "Resource":
                values = node if isinstance(node, list) else [node]
                for value in values:
                    if isinstance(value, str):
                        self.assertNotEqual(value.strip(), "*", path)
                        self.assertNotRegex(value, r":\*$", path)
        actions = [a for s in statements if isinstance(s, dict) for a in ([s["Action"]] if isinstance(s.get("Action"), str) else s.get("Action", []))]
        self.assertFalse([a for a in actions if "*" in a], actions)

    def test_environment_matches_the_contract(self):
        with open(CONTRACT, encoding="utf-8") as f:
            text = f.read()
        self.assertIn("\n## The contract\n", text, f"{CONTRACT} has no '## The contract' section")
        contract = text.split("\n## The contract\n", 1)[1].split("\n## ", 1)[0]
        self.assertIn("\n### Function environment\n", contract)
        # Both tables of the subsection: the contract's variables and the documented extensions.
        tables = contract.split("\n### Function environment\n", 1)[1].split("\n### ", 1)[0]
        first_cells = re.findall(r"^\|([^|]*)\|", tables, re.M)
        documented = {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]+)", cell)}
        for required in ("SCIM_SECRET_ID", "WORK_QUEUE_URL", "REPORT_BUCKET", "MAX_ATTEMPTS"):
            self.assertIn(required, documented)
        env = set(FUNCTION["Environment"]["Variables"])
        for required in ("SCIM_SECRET_ID", "WORK_QUEUE_URL", "REPORT_BUCKET", "MAX_ATTEMPTS"):
            self.assertIn(required, env)
        # Everything the template sets is a variable the contract documents.
        self.assertFalse(env - documented, sorted(env - documented))

    def test_arm64_is_the_default_and_build_method_is_cargo_lambda(self):
        self.assertEqual(T["Parameters"]["Architecture"]["Default"], "arm64")
        fn = RESOURCES["ProvisionerFunction"]
        self.assertEqual(fn["Metadata"]["BuildMethod"], "rust-cargolambda")
        self.assertEqual(FUNCTION["Runtime"], "provided.al2023")
        self.assertEqual(FUNCTION["Handler"], "bootstrap")

    def test_buckets_are_encrypted_and_private_and_secret_is_never_inline(self):
        bucket = RESOURCES["UploadBucket"]["Properties"]
        self.assertIn("BucketEncryption", bucket)
        self.assertTrue(all(bucket["PublicAccessBlockConfiguration"].values()))
        self.assertNotIn("AWS::SecretsManager::Secret", [r["Type"] for r in RESOURCES.values()])
        self.assertNotRegex(TEMPLATE_TEXT, r"(?i)(client_secret|access_key_secret|\"token\")\s*:")


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
