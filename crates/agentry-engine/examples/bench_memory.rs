//! Runs the engine benchmark over the in-memory store and prints one JSON
//! line: `cargo run --release -p agentry-engine --example bench_memory -- [WORKFLOWS] [CONCURRENCY] [NODE_LATENCY_MS]`.

use std::sync::Arc;
use std::time::Duration;

use agentry_engine::{bench_engine, BenchConfig};
use agentry_store_memory::MemoryStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let store = Arc::new(MemoryStore::new());
    let size = store.clone();
    let report = bench_engine(
        store,
        BenchConfig {
            workflows: args.first().copied().unwrap_or(2000) as usize,
            concurrency: args.get(1).copied().unwrap_or(32) as usize,
            node_latency: Duration::from_millis(args.get(2).copied().unwrap_or(0)),
        },
        move || size.approx_bytes(),
    )
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
