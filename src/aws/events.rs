//! EventBridge: the events the function puts on `EVENT_BUS_NAME` (a run completed or held) and
//! the approval event the CLI's `approve` puts for the function to act on.

use serde::Serialize;

/// Why an event could not be put.
#[derive(Debug, thiserror::Error)]
#[error("the event could not be put on the bus {bus}: {reason}")]
pub struct EventError {
    /// The bus.
    pub bus: String,
    /// What went wrong (the SDK's code and message, or the entry's error).
    pub reason: String,
}

/// Puts events on one bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBus {
    /// The bus named `bus` (`default`, a name or an ARN).
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        Self {
            client,
            bus: bus.into(),
        }
    }

    /// Puts one event: `source`, `detail_type` and `detail` (JSON).
    pub async fn put(
        &self,
        source: &str,
        detail_type: &str,
        detail: &impl Serialize,
    ) -> Result<(), EventError> {
        let error = |reason: String| EventError {
            bus: self.bus.clone(),
            reason,
        };
        let detail = serde_json::to_string(detail).map_err(|e| error(e.to_string()))?;
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(source)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        let output = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| error(super::error_text(&e)))?;
        // PutEvents answers 200 with the entries it refused counted, not as an error.
        if output.failed_entry_count() > 0 {
            let why = output
                .entries()
                .iter()
                .find_map(|e| e.error_code().map(str::to_string))
                .unwrap_or_else(|| "the entry was refused".into());
            return Err(error(why));
        }
        Ok(())
    }
}
