//! The outbox relay: moves committed events from the store's outbox to the
//! bus, so a published event always describes committed state. Publishing
//! twice is harmless (a crash between publishing and marking); losing one
//! is not, so an event is marked published only after the bus took it.

use std::sync::Arc;
use std::time::Duration;

use agentry_core::{Bus, Event, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Relays in batches of `batch` when woken after a commit, and every
/// `interval` for events other processes committed, until `shutdown`.
pub(super) async fn relay_loop(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    batch: u32,
    interval: Duration,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        relay_once(store.as_ref(), bus.as_ref(), batch).await;
    }
}

/// Moves every unpublished event to the bus, batch by batch; stops at the
/// first error (the next pass retries: publishing twice is harmless).
pub(super) async fn relay_once(store: &dyn Store, bus: &dyn Bus, batch: u32) {
    loop {
        let stored = match store.unpublished_events(batch).await {
            Ok(e) => e,
            Err(error) => {
                warn!(%error, "Outbox relay cannot read the outbox.");
                return;
            }
        };
        if stored.is_empty() {
            return;
        }
        let full = stored.len() as u32 >= batch;
        let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
        let events: Vec<Event> = stored.into_iter().map(|s| s.event).collect();
        if let Err(error) = bus.publish(&events).await {
            warn!(%error, "Outbox relay cannot publish; will retry.");
            return;
        }
        if let Err(error) = store.mark_published(&seqs).await {
            warn!(%error, "Outbox relay cannot mark events published; they may be published twice.");
            return;
        }
        if !full {
            return;
        }
    }
}
