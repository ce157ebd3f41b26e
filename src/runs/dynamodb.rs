//! Runs in the ledger's DynamoDB table. Items: `pk` = `run#<run_id>` with `sk` = `run` (the
//! record) and `sk` = `rows#<group>` (settled row ids in one String Set per outcome: adding an id
//! twice adds nothing, so settling is idempotent per row); `pk` = `runs`, `sk` =
//! `<started_at>#<run_id>` (the index `status` lists); `pk` = `source#<source>`, `sk` = `latest`.
//! Every item expires (`ttl`) after [`KEEP_DAYS`].

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use futures_util::future::BoxFuture;

use crate::aws::dynamodb::{n, number, s, Item};

use super::{RowId, RowOutcome, RunError, RunPlan, RunRecord, RunStatus, RunStore, Step, Tally};
use crate::operation::unix_now;

/// Days a run's items are kept.
pub const KEEP_DAYS: u64 = 90;

/// Runs in one DynamoDB table (the ledger's).
#[derive(Debug, Clone)]
pub struct DynamoRuns {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(&pk)), ("sk".to_string(), s(sk))])
}

fn run_key(run_id: &str) -> Item {
    key(format!("run#{run_id}"), "run")
}

fn ttl() -> AttributeValue {
    n(unix_now() + KEEP_DAYS * 86_400)
}

impl DynamoRuns {
    /// Runs in `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn error(&self, action: &'static str, reason: String) -> RunError {
        RunError::Store {
            store: format!("DynamoDB table {}", self.table),
            action,
            reason,
        }
    }

    fn record(&self, item: &Item) -> Result<RunRecord, RunError> {
        let broken = |what: &str| self.error("read", format!("a run item has {what}"));
        let plan: RunPlan = item
            .get("plan")
            .and_then(|v| v.as_s().ok())
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(|| broken("no readable plan"))?;
        let status = item
            .get("status")
            .and_then(|v| v.as_s().ok())
            .and_then(|v| RunStatus::from_name(v))
            .ok_or_else(|| broken("no known status"))?;
        let reports = item
            .get("reports")
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default();
        Ok(RunRecord {
            plan,
            status,
            absent: number(item, "absent").unwrap_or(0),
            requests: number(item, "requests").unwrap_or(0),
            reports,
            finished_at: number(item, "finished_at"),
            held_reported: item.get("done_held").is_some(),
        })
    }

    /// The answer to a conditional update: false if its condition failed.
    fn conditional<T>(
        &self,
        sent: Result<
            T,
            aws_sdk_dynamodb::error::SdkError<
                aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            >,
        >,
    ) -> Result<bool, RunError> {
        match sent {
            Ok(_) => Ok(true),
            Err(e) if crate::aws::error_code(&e) == Some("ConditionalCheckFailedException") => {
                Ok(false)
            }
            Err(e) => Err(self.error("written", crate::aws::error_text(&e))),
        }
    }

    async fn query_all(&self, pk: String, prefix: &str) -> Result<Vec<Item>, RunError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.error("read", crate::aws::error_text(&e)))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

impl RunStore for DynamoRuns {
    fn start<'a>(&'a self, record: &'a RunRecord) -> BoxFuture<'a, Result<RunRecord, RunError>> {
        Box::pin(async move {
            let plan = &record.plan;
            let plan_json =
                serde_json::to_string(plan).map_err(|e| self.error("written", e.to_string()))?;
            let mut item = run_key(&plan.run_id);
            item.insert("plan".into(), s(&plan_json));
            item.insert("status".into(), s(record.status.name()));
            item.insert("absent".into(), n(record.absent));
            item.insert("requests".into(), n(0));
            item.insert("ttl".into(), ttl());
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            match put {
                Ok(_) => {
                    let mut index = key(
                        "runs".into(),
                        &format!("{:013}#{}", plan.started_at, plan.run_id),
                    );
                    index.insert("run_id".into(), s(&plan.run_id));
                    index.insert("ttl".into(), ttl());
                    self.client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(index))
                        .send()
                        .await
                        .map_err(|e| self.error("written", crate::aws::error_text(&e)))?;
                    Ok(record.clone())
                }
                Err(e) if crate::aws::error_code(&e) == Some("ConditionalCheckFailedException") => {
                    self.get(&plan.run_id).await?.ok_or_else(|| {
                        self.error("read", "a run that exists could not be read".into())
                    })
                }
                Err(e) => Err(self.error("written", crate::aws::error_text(&e))),
            }
        })
    }

    fn get<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, RunError>> {
        Box::pin(async move {
            let output = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(run_key(run_id)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.error("read", crate::aws::error_text(&e)))?;
            output.item.map(|item| self.record(&item)).transpose()
        })
    }

    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RunRecord>, RunError>> {
        Box::pin(async move {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s("runs"))
                .scan_index_forward(false)
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| self.error("read", crate::aws::error_text(&e)))?;
            let mut records = Vec::new();
            for item in output.items.unwrap_or_default() {
                let Some(run_id) = item.get("run_id").and_then(|v| v.as_s().ok()) else {
                    continue;
                };
                if let Some(record) = self.get(run_id).await? {
                    records.push(record);
                }
            }
            Ok(records)
        })
    }

    fn replace_latest<'a>(
        &'a self,
        source: &'a str,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RunError>> {
        Box::pin(async move {
            let output = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(format!("source#{source}"), "latest")))
                .update_expression("SET run_id = :id, #ttl = :ttl")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":id", s(run_id))
                .expression_attribute_values(":ttl", ttl())
                .return_values(ReturnValue::UpdatedOld)
                .send()
                .await
                .map_err(|e| self.error("written", crate::aws::error_text(&e)))?;
            let before = output
                .attributes
                .and_then(|mut a| a.remove("run_id"))
                .and_then(|v| v.as_s().ok().cloned());
            Ok(before.filter(|b| b != run_id))
        })
    }

    fn settle<'a>(
        &'a self,
        run_id: &'a str,
        rows: &'a [(RowId, RowOutcome)],
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            let mut groups: BTreeMap<String, BTreeMap<RowOutcome, Vec<String>>> = BTreeMap::new();
            for (id, outcome) in rows {
                groups
                    .entry(id.group())
                    .or_default()
                    .entry(*outcome)
                    .or_default()
                    .push(id.encode());
            }
            for (group, outcomes) in groups {
                let mut names = HashMap::from([("#ttl".to_string(), "ttl".to_string())]);
                let mut values = HashMap::from([(":ttl".to_string(), ttl())]);
                let mut adds = Vec::new();
                for (outcome, ids) in outcomes {
                    let name = outcome.name();
                    adds.push(format!("#{name} :{name}"));
                    names.insert(format!("#{name}"), name.to_string());
                    values.insert(format!(":{name}"), AttributeValue::Ss(ids));
                }
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(format!("run#{run_id}"), &format!("rows#{group}"))))
                    .update_expression(format!("SET #ttl = :ttl ADD {}", adds.join(", ")))
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await
                    .map_err(|e| self.error("written", crate::aws::error_text(&e)))?;
            }
            Ok(())
        })
    }

    fn add_usage<'a>(
        &'a self,
        run_id: &'a str,
        requests: u64,
        report: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            let mut values = HashMap::from([(":requests".to_string(), n(requests))]);
            let mut expression = "ADD requests :requests".to_string();
            if let Some(report) = report {
                expression.push_str(", reports :report");
                values.insert(":report".into(), AttributeValue::Ss(vec![report.into()]));
            }
            let sent = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(run_key(run_id)))
                .condition_expression("attribute_exists(pk)")
                .update_expression(expression)
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            self.conditional(sent)?;
            Ok(())
        })
    }

    fn tally<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Tally, RunError>> {
        Box::pin(async move {
            let items = self.query_all(format!("run#{run_id}"), "rows#").await?;
            let settled = items.iter().flat_map(|item| {
                RowOutcome::ALL.into_iter().flat_map(move |outcome| {
                    item.get(outcome.name())
                        .and_then(|v| v.as_ss().ok())
                        .into_iter()
                        .flatten()
                        .map(move |id| (id.as_str(), outcome))
                })
            });
            Ok(Tally::count(settled))
        })
    }

    fn transition<'a>(
        &'a self,
        run_id: &'a str,
        from: RunStatus,
        to: RunStatus,
        absent: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, RunError>> {
        Box::pin(async move {
            let mut values = HashMap::from([
                (":from".to_string(), s(from.name())),
                (":to".to_string(), s(to.name())),
            ]);
            let mut expression = "SET #status = :to".to_string();
            if let Some(absent) = absent {
                expression.push_str(", absent = :absent");
                values.insert(":absent".into(), n(absent));
            }
            let sent = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(run_key(run_id)))
                .condition_expression("#status = :from")
                .update_expression(expression)
                .expression_attribute_names("#status", "status")
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            self.conditional(sent)
        })
    }

    fn lease<'a>(
        &'a self,
        run_id: &'a str,
        step: Step,
        now: u64,
        until: u64,
    ) -> BoxFuture<'a, Result<bool, RunError>> {
        Box::pin(async move {
            let (lease, done) = (
                format!("lease_{}", step.name()),
                format!("done_{}", step.name()),
            );
            let sent = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(run_key(run_id)))
                .update_expression("SET #lease = :until")
                .condition_expression(
                    "attribute_exists(pk) AND attribute_not_exists(#done) AND \
                     (attribute_not_exists(#lease) OR #lease < :now)",
                )
                .expression_attribute_names("#lease", lease)
                .expression_attribute_names("#done", done)
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":now", n(now))
                .send()
                .await;
            self.conditional(sent)
        })
    }

    fn release<'a>(&'a self, run_id: &'a str, step: Step) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(run_key(run_id)))
                .update_expression("REMOVE #lease")
                .expression_attribute_names("#lease", format!("lease_{}", step.name()))
                .send()
                .await
                .map_err(|e| self.error("written", crate::aws::error_text(&e)))?;
            Ok(())
        })
    }

    fn done<'a>(
        &'a self,
        run_id: &'a str,
        step: Step,
        at: u64,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            let mut names = HashMap::from([("#done".to_string(), format!("done_{}", step.name()))]);
            let mut values = HashMap::from([(":yes".to_string(), AttributeValue::Bool(true))]);
            let expression = match step {
                Step::Held => "SET #done = :yes",
                Step::Completed => {
                    names.insert("#status".into(), "status".into());
                    values.insert(":completed".into(), s(RunStatus::Completed.name()));
                    values.insert(":at".into(), n(at));
                    "SET #done = :yes, #status = :completed, finished_at = :at"
                }
            };
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(run_key(run_id)))
                .update_expression(expression)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .send()
                .await
                .map_err(|e| self.error("written", crate::aws::error_text(&e)))?;
            Ok(())
        })
    }
}
