//! Reads within a cycle's budget: userName lookups (`filter=userName eq`), fetches of one user
//! by id (to merge an update into what the tenant holds), and the pages of a tenant listing.

use std::sync::atomic::Ordering;

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::Value;

use super::cycle::Cycle;
use super::dispatch::{reply_result, transient_from};
use crate::scim::filter::user_name_eq;
use crate::scim::http::Reply;
use crate::scim::list::{list_attributes, read_page, Page, PAGE_SIZE};
use crate::scim::request::SubResult;
use crate::scim::resource::{read_lookup, Lookup};

/// What a lookup found, or why it could not tell.
#[derive(Debug, Clone)]
pub(crate) enum LookupResult {
    Answer(Lookup),
    Failed(SubResult),
}

/// What fetching a user by id found.
#[derive(Debug, Clone)]
pub(crate) enum FetchResult {
    /// The resource.
    Found(Value),
    /// 404: no user with this id any more.
    Gone,
    Failed(SubResult),
}

impl Cycle<'_> {
    /// Looks up users by userName, `concurrency` at a time; `names` pairs keys with userNames.
    pub(crate) async fn lookups(&self, names: Vec<(usize, String)>) -> Vec<(usize, LookupResult)> {
        stream::iter(names)
            .map(|(key, name)| async move { (key, self.lookup(&name).await) })
            .buffer_unordered(self.engine.config.concurrency.max(1))
            .collect()
            .await
    }

    async fn lookup(&self, user_name: &str) -> LookupResult {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let filter = user_name_eq(user_name);
        let reply = match self.get("/Users", &[("filter", filter.as_str())]).await {
            Ok(reply) => reply,
            Err(failed) => return LookupResult::Failed(failed),
        };
        match read_lookup(&reply.body, user_name) {
            Some(found) => LookupResult::Answer(found),
            None => LookupResult::Failed(SubResult::Transient {
                status: Some(200),
                reason: "the userName lookup's answer is not a SCIM ListResponse".into(),
                retry_after: reply.retry_after,
            }),
        }
    }

    /// Fetches users by id, `concurrency` at a time; `ids` pairs keys with ids.
    pub(crate) async fn fetches(&self, ids: Vec<(usize, String)>) -> Vec<(usize, FetchResult)> {
        stream::iter(ids)
            .map(|(key, id)| async move { (key, self.fetch(&id).await) })
            .buffer_unordered(self.engine.config.concurrency.max(1))
            .collect()
            .await
    }

    async fn fetch(&self, id: &str) -> FetchResult {
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let path = format!("/Users/{}", escape_id(id));
        match self.get(&path, &[]).await {
            Ok(reply) => match serde_json::from_slice::<Value>(&reply.body) {
                Ok(resource) if resource.is_object() => FetchResult::Found(resource),
                _ => FetchResult::Failed(SubResult::Transient {
                    status: Some(reply.status),
                    reason: "the user's resource is not a JSON object".into(),
                    retry_after: reply.retry_after,
                }),
            },
            Err(SubResult::Reply(r)) if r.status == 404 => FetchResult::Gone,
            Err(failed) => FetchResult::Failed(failed),
        }
    }

    /// One page of the tenant's users, from `start` (1-based).
    pub(crate) async fn list_page(&self, start: u64) -> Result<Page, SubResult> {
        let (start_text, count) = (start.to_string(), PAGE_SIZE.to_string());
        let attributes = list_attributes();
        let query = [
            ("attributes", attributes.as_str()),
            ("startIndex", start_text.as_str()),
            ("count", count.as_str()),
        ];
        let reply = self.get("/Users", &query).await?;
        read_page(&reply.body).ok_or_else(|| SubResult::Transient {
            status: Some(reply.status),
            reason: "a page of the tenant's users is not a SCIM ListResponse".into(),
            retry_after: reply.retry_after,
        })
    }

    /// A GET within the budget: the 200 answer, or what to make of anything else.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Reply, SubResult> {
        let sent_at = self.admit().await?;
        let reply = self
            .engine
            .http
            .send(Method::GET, path, query, None, Some(self.deadline))
            .await
            .map_err(transient_from)?;
        self.count(sent_at, &reply);
        if reply.status == 200 {
            Ok(reply)
        } else {
            Err(reply_result(&reply))
        }
    }
}

/// An id as a path segment: everything but unreserved characters escaped.
pub(super) fn escape_id(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, ID).to_string()
}

/// Characters escaped in an id used as a path segment.
const ID: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
