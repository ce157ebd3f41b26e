//! The ledger in a DynamoDB table (`LEDGER_TABLE`): partition key `pk` = `tenant#<tenant id>`,
//! sort key `sk` = `user#<folded userName>` for users and `meta` for the tenant. Reads are
//! batched (BatchGetItem, 100 keys a call); each user's write is one conditional UpdateItem
//! (many in flight), whose condition makes claims atomic: of two invocations claiming one user
//! with different source times, the newer wins whatever the order.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Update};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};

use crate::aws::dynamodb::{boolean, n, number, s, text, Item};

use super::{Claim, Confirmed, Ledger, LedgerError, Refusal, TenantMeta, UserEntry};

/// Keys per BatchGetItem call (the service's limit).
const GET_BATCH: usize = 100;
/// Updates in flight at once. Conditional updates cannot be batched but by TransactWriteItems,
/// which bills twice, fails whole on one item's condition and (on moto) copies the table per
/// item; one UpdateItem per user, many at a time, has none of these costs.
const WRITES_IN_FLIGHT: usize = 32;
/// Rounds of unprocessed keys tried again before giving up.
const ROUNDS: usize = 8;

/// The ledger in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLedger {
    /// A ledger in `table`.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn error(&self, action: &'static str, reason: String) -> LedgerError {
        LedgerError::Store {
            store: format!("DynamoDB table {}", self.table),
            action,
            reason,
        }
    }

    fn key(tenant: &str, sk: String) -> Item {
        HashMap::from([
            (
                "pk".to_string(),
                AttributeValue::S(format!("tenant#{tenant}")),
            ),
            ("sk".to_string(), AttributeValue::S(sk)),
        ])
    }

    fn user_key(tenant: &str, key: &str) -> Item {
        Self::key(tenant, format!("user#{key}"))
    }

    async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, LedgerError> {
        let mut found = Vec::new();
        let mut pending = keys;
        for _ in 0..ROUNDS {
            if pending.is_empty() {
                return Ok(found);
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(|e| self.error("read", e.to_string()))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| self.error("read", crate::aws::error_text(&e)))?;
            if let Some(items) = output.responses.and_then(|mut r| r.remove(&self.table)) {
                found.extend(items);
            }
            if let Some(mut unprocessed) = output.unprocessed_keys {
                if let Some(rest) = unprocessed.remove(&self.table) {
                    pending = rest.keys;
                }
            }
        }
        if pending.is_empty() {
            Ok(found)
        } else {
            Err(self.error("read", format!("{} keys stayed unprocessed", pending.len())))
        }
    }

    /// Runs the updates, [`WRITES_IN_FLIGHT`] at a time; returns the indices (into `updates`)
    /// whose condition failed. Each user's update stands alone: no update waits for, or fails
    /// with, another user's.
    async fn update_each(&self, updates: Vec<Update>) -> Result<Vec<usize>, LedgerError> {
        let results: Vec<(usize, Result<bool, LedgerError>)> =
            stream::iter(updates.into_iter().enumerate())
                .map(|(index, update)| async move { (index, self.update_one(update).await) })
                .buffer_unordered(WRITES_IN_FLIGHT)
                .collect()
                .await;
        let mut failed = Vec::new();
        for (index, result) in results {
            if !result? {
                failed.push(index);
            }
        }
        failed.sort_unstable();
        Ok(failed)
    }

    /// One conditional update; false if its condition failed.
    async fn update_one(&self, update: Update) -> Result<bool, LedgerError> {
        let sent = self
            .client
            .update_item()
            .table_name(update.table_name)
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .set_condition_expression(update.condition_expression)
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if crate::aws::error_code(&e) == Some("ConditionalCheckFailedException") => {
                Ok(false)
            }
            Err(e) => Err(self.error("written", crate::aws::error_text(&e))),
        }
    }

    /// The update recording `confirmed` (if any) for `key`; with `claim`, it also ends the
    /// claim's hold, on condition that the claim is still the user's.
    fn record(
        &self,
        tenant: &str,
        key: &str,
        confirmed: Option<&Confirmed>,
        managed: bool,
        claim: Option<&Claim>,
    ) -> Result<Update, LedgerError> {
        let mut builder = self.update(Self::user_key(tenant, key));
        let mut set = Vec::new();
        let mut remove = Vec::new();
        if let Some(c) = confirmed {
            set.extend(["#id = :id", "user_name = :user_name", "active = :active"]);
            for (attribute, value) in [("fingerprint", &c.fingerprint), ("asked", &c.asked)] {
                if let Some(value) = value {
                    set.push(if attribute == "fingerprint" {
                        "fingerprint = :fingerprint"
                    } else {
                        "asked = :asked"
                    });
                    builder =
                        builder.expression_attribute_values(format!(":{attribute}"), s(value));
                }
            }
            set.push(if managed {
                "managed = :managed"
            } else {
                "managed = if_not_exists(managed, :managed)"
            });
            builder = builder
                .expression_attribute_names("#id", "id")
                .expression_attribute_values(":id", s(&c.id))
                .expression_attribute_values(":user_name", s(&c.user_name))
                .expression_attribute_values(":active", AttributeValue::Bool(c.active))
                .expression_attribute_values(":managed", AttributeValue::Bool(managed));
            match &c.external_id {
                Some(external_id) => {
                    set.push("external_id = :external_id");
                    builder = builder.expression_attribute_values(":external_id", s(external_id));
                }
                None => remove.push("external_id"),
            }
        }
        if let Some(claim) = claim {
            remove.push("held_until");
            builder = builder
                .condition_expression("applied_at = :at")
                .expression_attribute_values(":at", n(claim.at));
        }
        let mut expression = String::new();
        if !set.is_empty() {
            expression = format!("SET {}", set.join(", "));
        }
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        builder
            .update_expression(expression.trim())
            .build()
            .map_err(|e| self.error("written", e.to_string()))
    }

    /// The `ext#<externalId>` item pointing at the user, when it has an externalId.
    fn external_pointer(&self, tenant: &str, c: &Confirmed) -> Result<Option<Update>, LedgerError> {
        let Some(external) = &c.external_id else {
            return Ok(None);
        };
        self.update(Self::key(tenant, format!("ext#{external}")))
            .update_expression("SET #user = :user")
            .expression_attribute_names("#user", "user")
            .expression_attribute_values(":user", s(&c.key))
            .build()
            .map(Some)
            .map_err(|e| self.error("written", e.to_string()))
    }

    fn update(&self, key: Item) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder().table_name(&self.table).set_key(Some(key))
    }
}

/// A user entry from its item; None for an item that is not a user's.
fn entry(item: &Item) -> Option<UserEntry> {
    let key = text(item, "sk")?.strip_prefix("user#")?.to_string();
    Some(UserEntry {
        key,
        id: text(item, "id"),
        user_name: text(item, "user_name"),
        external_id: text(item, "external_id"),
        fingerprint: text(item, "fingerprint"),
        asked: text(item, "asked"),
        active: boolean(item, "active"),
        managed: boolean(item, "managed").unwrap_or(false),
        applied_at: number(item, "applied_at"),
        held_until: number(item, "held_until"),
    })
}

impl Ledger for DynamoLedger {
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, UserEntry>, LedgerError>> {
        Box::pin(async move {
            let mut unique: Vec<&String> = keys.iter().collect();
            unique.sort_unstable();
            unique.dedup();
            let mut found = HashMap::new();
            for chunk in unique.chunks(GET_BATCH) {
                let request = chunk.iter().map(|k| Self::user_key(tenant, k)).collect();
                for item in self.batch_get(request).await? {
                    if let Some(e) = entry(&item) {
                        found.insert(e.key.clone(), e);
                    }
                }
            }
            Ok(found)
        })
    }

    fn find_external<'a>(
        &'a self,
        tenant: &'a str,
        external_ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, UserEntry>, LedgerError>> {
        Box::pin(async move {
            let mut keys_of: HashMap<String, String> = HashMap::new();
            for chunk in external_ids.chunks(GET_BATCH) {
                let request = chunk
                    .iter()
                    .map(|x| Self::key(tenant, format!("ext#{x}")))
                    .collect();
                for item in self.batch_get(request).await? {
                    let sk = text(&item, "sk");
                    let external = sk.as_deref().and_then(|sk| sk.strip_prefix("ext#"));
                    if let (Some(external), Some(key)) = (external, text(&item, "user")) {
                        keys_of.insert(external.to_string(), key);
                    }
                }
            }
            let keys: Vec<String> = keys_of.values().cloned().collect();
            let users = self.get(tenant, &keys).await?;
            // The user must still hold that externalId: the pointer may be older than a change.
            Ok(keys_of
                .into_iter()
                .filter_map(|(external, key)| {
                    let entry = users.get(&key)?;
                    let holds = entry.external_id.as_deref() == Some(external.as_str());
                    (holds && entry.id.is_some()).then(|| (external, entry.clone()))
                })
                .collect())
        })
    }

    fn claim<'a>(
        &'a self,
        tenant: &'a str,
        claims: &'a [Claim],
        now: u64,
        hold_until: u64,
    ) -> BoxFuture<'a, Result<Vec<(String, Refusal)>, LedgerError>> {
        Box::pin(async move {
            let mut updates = Vec::with_capacity(claims.len());
            for claim in claims {
                let update = self
                    .update(Self::user_key(tenant, &claim.key))
                    .update_expression("SET applied_at = :at, held_until = :hold")
                    .condition_expression(
                        "attribute_not_exists(applied_at) OR applied_at = :at OR \
                         (applied_at < :at AND (attribute_not_exists(held_until) OR held_until <= :now))",
                    )
                    .expression_attribute_values(":at", n(claim.at))
                    .expression_attribute_values(":hold", n(hold_until))
                    .expression_attribute_values(":now", n(now))
                    .build()
                    .map_err(|e| self.error("written", e.to_string()))?;
                updates.push(update);
            }
            let lost = self.update_each(updates).await?;
            if lost.is_empty() {
                return Ok(Vec::new());
            }
            // Why each lost: a newer time, or an older claim still holding the user.
            let keys: Vec<String> = lost.iter().map(|&i| claims[i].key.clone()).collect();
            let found = self.get(tenant, &keys).await?;
            Ok(lost
                .into_iter()
                .map(|i| {
                    let claim = &claims[i];
                    let entry = found.get(&claim.key);
                    let newer = entry
                        .and_then(|e| e.applied_at)
                        .is_some_and(|a| a > claim.at);
                    let refusal = if newer {
                        Refusal::Superseded
                    } else {
                        let until = entry.and_then(|e| e.held_until).unwrap_or(now);
                        Refusal::Busy { until }
                    };
                    (claim.key.clone(), refusal)
                })
                .collect())
        })
    }

    fn settle<'a>(
        &'a self,
        tenant: &'a str,
        settled: &'a [(Claim, Option<Confirmed>)],
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut updates = Vec::with_capacity(settled.len());
            for (claim, confirmed) in settled {
                updates.push(self.record(
                    tenant,
                    &claim.key,
                    confirmed.as_ref(),
                    true,
                    Some(claim),
                )?);
                if let Some(c) = confirmed {
                    updates.extend(self.external_pointer(tenant, c)?);
                }
            }
            // A claim taken over since is not this one's to settle: its condition fails.
            self.update_each(updates).await.map(|_| ())
        })
    }

    fn confirm<'a>(
        &'a self,
        tenant: &'a str,
        users: &'a [Confirmed],
        managed: bool,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut updates = Vec::with_capacity(users.len());
            for c in users {
                updates.push(self.record(tenant, &c.key, Some(c), managed, None)?);
                updates.extend(self.external_pointer(tenant, c)?);
            }
            // No conditions: nothing can fail but the call itself.
            self.update_each(updates).await.map(|_| ())
        })
    }

    fn forget<'a>(
        &'a self,
        tenant: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut updates = Vec::with_capacity(keys.len());
            for key in keys {
                let update = self
                    .update(Self::user_key(tenant, key))
                    .update_expression(
                        "REMOVE #id, user_name, external_id, fingerprint, asked, active, managed",
                    )
                    .expression_attribute_names("#id", "id")
                    .build()
                    .map_err(|e| self.error("written", e.to_string()))?;
                updates.push(update);
            }
            self.update_each(updates).await.map(|_| ())
        })
    }

    fn all<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<UserEntry>, LedgerError>> {
        Box::pin(async move {
            let mut entries = Vec::new();
            let mut start: Option<Item> = None;
            loop {
                let output = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :user)")
                    .expression_attribute_values(":pk", s(&format!("tenant#{tenant}")))
                    .expression_attribute_values(":user", s("user#"))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| self.error("read", crate::aws::error_text(&e)))?;
                entries.extend(output.items().iter().filter_map(entry));
                match output.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => return Ok(entries),
                }
            }
        })
    }

    fn meta<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<TenantMeta, LedgerError>> {
        Box::pin(async move {
            let output = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(Self::key(tenant, "meta".into())))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.error("read", crate::aws::error_text(&e)))?;
            Ok(output
                .item
                .map_or_else(TenantMeta::default, |item| TenantMeta {
                    listed_at: number(&item, "listed_at"),
                    patch_form: text(&item, "patch_form"),
                }))
        })
    }

    fn set_meta<'a>(
        &'a self,
        tenant: &'a str,
        meta: &'a TenantMeta,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            let mut item = Self::key(tenant, "meta".into());
            if let Some(at) = meta.listed_at {
                item.insert("listed_at".into(), n(at));
            }
            if let Some(form) = &meta.patch_form {
                item.insert("patch_form".into(), s(form));
            }
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| self.error("written", crate::aws::error_text(&e)))?;
            Ok(())
        })
    }
}
