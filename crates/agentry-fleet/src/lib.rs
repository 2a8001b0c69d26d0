//! The protocols that make a fleet of `agentry` processes safe to run: each
//! worker's heartbeat into the `WorkerRegistry` (register, beat the load
//! and the tasks in hand, re-register when pruned, deregister on the way
//! out), the stall sweep that one process at a time runs under a lease
//! (prune long-gone workers, leave alone what live workers run and what
//! the dead-letter queue holds, re-dispatch what nobody moves), and a
//! worker's graceful way out on SIGTERM.
//!
//! Key design decision: these protocols live in a library over the ports
//! (`WorkerRegistry`, `DeadLetters`) and the `Engine`, not in the binary
//! and not in the engine. The binary only wires adapters and calls them,
//! so they are tested here against the in-memory store and bus, with no
//! process to start; the engine never learns that a fleet exists (it
//! knows no registry and no dead-letter queue, only what `sweep_stalled`
//! is told is busy).

mod duties;
mod heartbeat;
mod shutdown;
mod sweep;

pub use duties::Duties;
pub use heartbeat::{heartbeat_loop, worker_info};
pub use shutdown::{leave_fleet, shutdown_signal};
pub use sweep::{busy_tasks, sweep_loop, SweepTiming, SWEEP_LEASE};
