//! The `dns` family's ring: every message is decoded and counted into the family's exchanges;
//! after each batch the queries past their timeout are counted as timed out.

use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::{
    bpf::rings::EventRing,
    dns::exchanges::{Exchanges, decode, monotonic_now_ns},
};

/// Counts messages until the agent stops.
pub async fn follow_events(events: EventRing, exchanges: Arc<Mutex<Exchanges>>) {
    events
        .follow_batches(
            |record| match decode(record) {
                Ok(segment) => {
                    exchanges.lock().unwrap_or_else(|e| e.into_inner()).observe(&segment);
                    true
                }
                Err(err) => {
                    debug!("skipped a DNS record: {err}");
                    false
                }
            },
            || {
                exchanges.lock().unwrap_or_else(|e| e.into_inner()).expire(monotonic_now_ns());
            },
        )
        .await;
}
