//! The worker-registry suite: the [`WorkerRegistry`] port (registrations,
//! heartbeats and leases), kept by the store too.
//!
//! Each behaviour takes a fresh, empty registry and, besides what it tests,
//! checks that nothing else changed: every worker it did not touch reads
//! back as it was, and no worker appeared (a heartbeat or deregister of an
//! unknown id that wrote anyway fails here). Times carry nanoseconds, and
//! the boundaries (a prune cut, a lease's expiry) are tested to the
//! nanosecond, so a store that truncates or rounds time fails.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use agentry_core::{
    Error, TaskId, TaskKey, WorkerBeat, WorkerHealth, WorkerInfo, WorkerRecord, WorkerRegistry,
    WorkflowId,
};
use chrono::{DateTime, Duration, Utc};

/// Expands to one `#[tokio::test]` per behaviour of the worker-registry
/// suite (the [`agentry_core::WorkerRegistry`] port), named after the
/// behaviour. The argument evaluates to a future of a fresh, empty store
/// implementing it; it is evaluated once per test.
#[macro_export]
macro_rules! worker_registry_conformance_tests {
    ($make:expr) => {
        $crate::__worker_registry_tests!(
            $make;
            worker_register_then_list_shows_zero_load,
            worker_reregister_replaces_info_resets_load_and_clears_the_stop,
            worker_heartbeat_round_trips_every_field,
            worker_heartbeat_of_an_unknown_id_is_not_found,
            worker_deregister_sets_stopped_at_and_ignores_unknown_ids,
            workers_list_oldest_registration_first,
            workers_prune_removes_only_those_silent_before_the_cut,
            lease_free_is_granted_and_a_live_one_is_refused,
            lease_same_holder_renews,
            lease_expired_goes_to_a_new_holder,
            lease_release_by_the_holder_frees_it,
            lease_release_by_another_does_nothing,
            lease_concurrent_acquires_of_a_free_lease_grant_one
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __worker_registry_tests {
    ($make:expr; $($name:ident),*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::$name($make.await).await;
            }
        )*
    };
}

/// A fixed instant with nanoseconds, `offset_s` seconds after the base, so
/// a store that truncates time fails.
pub fn worker_time(offset_s: i64) -> DateTime<Utc> {
    time_ns(offset_s, 0)
}

fn time_ns(offset_s: i64, offset_ns: i64) -> DateTime<Utc> {
    crate::key_time(offset_s) + Duration::nanoseconds(offset_ns)
}

/// A worker started at `worker_time(offset_s)`, serving `developer` and
/// `qa` with one tag, its host and pid derived from its id.
pub fn worker_info(id: &str, offset_s: i64) -> WorkerInfo {
    WorkerInfo {
        id: id.to_string(),
        host: format!("host-of-{id}"),
        pid: 1000 + id.len() as u32,
        roles: vec!["developer".into(), "qa".into()],
        tags: vec!["python".into()],
        concurrency: 4,
        version: "0.1.0".into(),
        started_at: worker_time(offset_s),
    }
}

/// The record a registration alone makes: the info, a zero-load beat at
/// `started_at`, not stopped.
pub fn registered(info: &WorkerInfo) -> WorkerRecord {
    WorkerRecord {
        info: info.clone(),
        beat: WorkerBeat {
            id: info.id.clone(),
            in_flight: 0,
            tasks: vec![],
            completed: 0,
            failed: 0,
            last_task_at: None,
            at: info.started_at,
        },
        stopped_at: None,
    }
}

/// Attempt 2 of node `node` at step 3 of a fixed workflow: a task a beat
/// reports running.
pub fn running_task(node: &str) -> TaskId {
    let workflow = WorkflowId(uuid::Uuid::from_u128(
        0x0190_f5a2_7c3e_7d4e_8f00_0123_4567_89ab,
    ));
    TaskId::new(TaskKey::new(workflow, 3, node), 2)
}

/// A beat of `id` at `worker_time(offset_s)` running a task of each node
/// in `nodes` ([`running_task`]).
pub fn worker_beat(id: &str, offset_s: i64, nodes: &[&str]) -> WorkerBeat {
    WorkerBeat {
        id: id.to_string(),
        in_flight: nodes.len() as u32,
        tasks: nodes.iter().map(|n| running_task(n)).collect(),
        completed: 7,
        failed: 2,
        last_task_at: Some(worker_time(offset_s - 1)),
        at: worker_time(offset_s),
    }
}

const TTL: StdDuration = StdDuration::from_secs(10);

async fn register<S: WorkerRegistry + ?Sized>(reg: &Arc<S>, info: &WorkerInfo) {
    reg.register(info.clone())
        .await
        .unwrap_or_else(|error| panic!("register worker {}: {error}", info.id));
}

async fn heartbeat<S: WorkerRegistry + ?Sized>(reg: &Arc<S>, beat: &WorkerBeat) {
    reg.heartbeat(beat.clone())
        .await
        .unwrap_or_else(|error| panic!("heartbeat of worker {}: {error}", beat.id));
}

async fn deregister<S: WorkerRegistry + ?Sized>(reg: &Arc<S>, id: &str, at: DateTime<Utc>) {
    reg.deregister(id, at)
        .await
        .unwrap_or_else(|error| panic!("deregister worker {id}: {error}"));
}

async fn workers<S: WorkerRegistry + ?Sized>(reg: &Arc<S>) -> Vec<WorkerRecord> {
    reg.list_workers().await.expect("list workers")
}

async fn prune<S: WorkerRegistry + ?Sized>(reg: &Arc<S>, before: DateTime<Utc>) -> u64 {
    reg.prune_workers(before)
        .await
        .unwrap_or_else(|error| panic!("prune workers before {before}: {error}"))
}

async fn acquire<S: WorkerRegistry + ?Sized>(
    reg: &Arc<S>,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
) -> bool {
    reg.acquire_lease(name, holder, TTL, now)
        .await
        .unwrap_or_else(|error| panic!("acquire lease {name} for {holder}: {error}"))
}

async fn release<S: WorkerRegistry + ?Sized>(reg: &Arc<S>, name: &str, holder: &str) {
    reg.release_lease(name, holder)
        .await
        .unwrap_or_else(|error| panic!("release lease {name} by {holder}: {error}"));
}

/// A registered worker is listed with its info as given, a zero-load beat
/// at its start time and no stop, and is healthy then.
pub async fn worker_register_then_list_shows_zero_load<S: WorkerRegistry + ?Sized>(reg: Arc<S>) {
    assert!(
        workers(&reg).await.is_empty(),
        "a fresh store has no workers"
    );
    let first = worker_info("w-1", 0);
    let second = WorkerInfo {
        roles: vec!["reviewer".into()],
        tags: vec![],
        pid: u32::MAX,
        concurrency: u32::MAX,
        host: "höst ' \" ; --".into(),
        ..worker_info("w-2", 5)
    };
    register(&reg, &first).await;
    register(&reg, &second).await;
    let listed = workers(&reg).await;
    assert_eq!(listed, vec![registered(&first), registered(&second)]);
    let record = &listed[0];
    assert_eq!(record.beat.at, first.started_at, "beat.at is started_at");
    assert_eq!(
        record.health(first.started_at, TTL),
        WorkerHealth::Healthy,
        "healthy when registered"
    );
}

/// Registering an id again replaces its info, resets its load to a
/// zero-load beat at the new start time and clears its stop; other
/// workers are untouched.
pub async fn worker_reregister_replaces_info_resets_load_and_clears_the_stop<
    S: WorkerRegistry + ?Sized,
>(
    reg: Arc<S>,
) {
    let old = worker_info("w-1", 0);
    let other = worker_info("w-2", 1);
    register(&reg, &old).await;
    register(&reg, &other).await;
    heartbeat(&reg, &worker_beat("w-1", 10, &["wf/s/n#1"])).await;
    deregister(&reg, "w-1", worker_time(11)).await;

    let new = WorkerInfo {
        host: "another-host".into(),
        pid: 4242,
        roles: vec!["qa".into()],
        tags: vec!["model:large".into(), "python".into()],
        concurrency: 9,
        version: "0.2.0".into(),
        ..worker_info("w-1", 20)
    };
    register(&reg, &new).await;
    let listed = workers(&reg).await;
    assert_eq!(
        listed,
        vec![registered(&other), registered(&new)],
        "new info, zero load at the new start, no stop; w-2 untouched"
    );
    assert_eq!(listed[1].health(new.started_at, TTL), WorkerHealth::Healthy);
}

/// A heartbeat replaces the beat, every field exactly as sent (no tasks,
/// one, several; with and without a last task time; large counters),
/// and leaves the info and other workers alone.
pub async fn worker_heartbeat_round_trips_every_field<S: WorkerRegistry + ?Sized>(reg: Arc<S>) {
    let info = worker_info("w-1", 0);
    let other = worker_info("w-2", 1);
    register(&reg, &info).await;
    register(&reg, &other).await;
    let beats = [
        worker_beat(
            "w-1",
            5,
            &["a1b2c3d4-0000-7000-8000-000000000001/2/developer#1"],
        ),
        WorkerBeat {
            last_task_at: None,
            completed: 0,
            failed: 0,
            ..worker_beat("w-1", 6, &[])
        },
        worker_beat(
            "w-1",
            7,
            &[
                "wf-1/3/qa#2",
                "wf-1/3/developer#1",
                "wf-2/1/reviewer#5",
                "",
                "quote ' and \" and ; -- é ✓",
            ],
        ),
        WorkerBeat {
            in_flight: u32::MAX,
            completed: i64::MAX as u64,
            failed: 1 << 40,
            last_task_at: Some(time_ns(8, 1)),
            at: time_ns(8, 999),
            ..worker_beat("w-1", 8, &["x", "x"])
        },
        // An earlier beat than the last is recorded too: the store keeps
        // the last one it was sent, whatever its clock says.
        worker_beat("w-1", 3, &["late"]),
    ];
    for beat in &beats {
        heartbeat(&reg, beat).await;
        let expected = WorkerRecord {
            beat: beat.clone(),
            ..registered(&info)
        };
        assert_eq!(
            workers(&reg).await,
            vec![expected, registered(&other)],
            "after the beat at {}",
            beat.at
        );
    }
}

/// A heartbeat of an id that is not registered (never, or pruned) is
/// NotFound naming the id, and registers nothing.
pub async fn worker_heartbeat_of_an_unknown_id_is_not_found<S: WorkerRegistry + ?Sized>(
    reg: Arc<S>,
) {
    let info = worker_info("w-1", 0);
    register(&reg, &info).await;
    let assert_not_found = |result: agentry_core::Result<()>, id: &str| match result {
        Err(Error::NotFound(message)) => {
            assert!(message.contains(id), "the error names {id}: {message}")
        }
        other => panic!("a heartbeat of {id} is NotFound, got {other:?}"),
    };
    for id in ["w-missing", "W-1", "w-", ""] {
        assert_not_found(reg.heartbeat(worker_beat(id, 5, &["t"])).await, id);
    }
    assert_eq!(
        workers(&reg).await,
        vec![registered(&info)],
        "nothing added"
    );

    let gone = worker_info("w-gone", 1);
    register(&reg, &gone).await;
    heartbeat(&reg, &worker_beat("w-1", 100, &[])).await;
    assert_eq!(prune(&reg, worker_time(50)).await, 1, "w-gone is pruned");
    assert_not_found(
        reg.heartbeat(worker_beat("w-gone", 101, &[])).await,
        "w-gone",
    );
    assert_eq!(workers(&reg).await.len(), 1, "w-gone stays pruned");
}

/// Deregistering sets `stopped_at` (health Stopped) and keeps the info
/// and last beat; a second deregister keeps the first time; an unknown id
/// is ignored and creates nothing.
pub async fn worker_deregister_sets_stopped_at_and_ignores_unknown_ids<
    S: WorkerRegistry + ?Sized,
>(
    reg: Arc<S>,
) {
    let info = worker_info("w-1", 0);
    let other = worker_info("w-2", 1);
    register(&reg, &info).await;
    register(&reg, &other).await;
    let beat = worker_beat("w-1", 5, &["wf/1/qa#1"]);
    heartbeat(&reg, &beat).await;

    let stop = time_ns(6, 1);
    deregister(&reg, "w-1", stop).await;
    let stopped = WorkerRecord {
        beat: beat.clone(),
        stopped_at: Some(stop),
        ..registered(&info)
    };
    let listed = workers(&reg).await;
    assert_eq!(listed, vec![stopped.clone(), registered(&other)]);
    assert_eq!(listed[0].health(stop, TTL), WorkerHealth::Stopped);

    deregister(&reg, "w-1", worker_time(60)).await;
    assert_eq!(
        workers(&reg).await,
        vec![stopped.clone(), registered(&other)],
        "a second deregister keeps the first stop"
    );

    for id in ["w-missing", "W-2", ""] {
        reg.deregister(id, worker_time(7))
            .await
            .unwrap_or_else(|error| panic!("deregister of unknown {id} is Ok, got {error}"));
    }
    assert_eq!(
        workers(&reg).await,
        vec![stopped, registered(&other)],
        "unknown ids change nothing"
    );
}

/// Listings are oldest registration first (`started_at`, then id),
/// whatever the registration order and however recent the beats.
pub async fn workers_list_oldest_registration_first<S: WorkerRegistry + ?Sized>(reg: Arc<S>) {
    let old = worker_info("w-z-old", -60);
    let ties: Vec<WorkerInfo> = (1..=5)
        .map(|i| worker_info(&format!("w-tie-{i}"), 30))
        .collect();
    let near = WorkerInfo {
        started_at: time_ns(30, 1),
        ..worker_info("w-a-near", 0)
    };
    let new = worker_info("w-a-new", 3600);
    register(&reg, &new).await;
    for info in ties.iter().rev() {
        register(&reg, info).await;
    }
    register(&reg, &near).await;
    register(&reg, &old).await;
    // The newest beat belongs to the oldest worker: beats do not reorder.
    let beat = worker_beat("w-z-old", 7200, &[]);
    heartbeat(&reg, &beat).await;

    let mut expected = vec![WorkerRecord {
        beat,
        ..registered(&old)
    }];
    expected.extend(ties.iter().map(registered));
    expected.push(registered(&near));
    expected.push(registered(&new));
    assert_eq!(workers(&reg).await, expected);
}

/// Pruning removes exactly the workers whose last beat, and stop if they
/// stopped, are before the cut (a beat AT the cut is kept), and returns
/// how many; a second prune finds nothing more.
pub async fn workers_prune_removes_only_those_silent_before_the_cut<S: WorkerRegistry + ?Sized>(
    reg: Arc<S>,
) {
    assert_eq!(prune(&reg, worker_time(0)).await, 0, "an empty store");
    let cut = time_ns(100, 500);
    let live = worker_info("w-live", 0);
    let stale = worker_info("w-stale", 1);
    let just_stale = worker_info("w-just-stale", 2);
    let at_cut = worker_info("w-at-cut", 3);
    let stopped_long_ago = worker_info("w-stopped-old", 4);
    let stopped_lately = worker_info("w-stopped-lately", 5);
    let started_after = worker_info("w-started-after", 200);
    for info in [
        &live,
        &stale,
        &just_stale,
        &at_cut,
        &stopped_long_ago,
        &stopped_lately,
        &started_after,
    ] {
        register(&reg, info).await;
    }
    let live_beat = worker_beat("w-live", 150, &["t"]);
    let just_stale_beat = WorkerBeat {
        at: time_ns(100, 499),
        ..worker_beat("w-just-stale", 100, &[])
    };
    let at_cut_beat = WorkerBeat {
        at: cut,
        ..worker_beat("w-at-cut", 100, &[])
    };
    heartbeat(&reg, &live_beat).await;
    heartbeat(&reg, &just_stale_beat).await;
    heartbeat(&reg, &at_cut_beat).await;
    heartbeat(&reg, &worker_beat("w-stale", 50, &[])).await;
    deregister(&reg, "w-stopped-old", worker_time(60)).await;
    deregister(&reg, "w-stopped-lately", worker_time(120)).await;

    assert_eq!(
        prune(&reg, cut).await,
        3,
        "w-stale, w-just-stale, w-stopped-old"
    );
    let expected = vec![
        WorkerRecord {
            beat: live_beat,
            ..registered(&live)
        },
        WorkerRecord {
            beat: at_cut_beat,
            ..registered(&at_cut)
        },
        WorkerRecord {
            stopped_at: Some(worker_time(120)),
            ..registered(&stopped_lately)
        },
        registered(&started_after),
    ];
    assert_eq!(workers(&reg).await, expected);
    assert_eq!(prune(&reg, cut).await, 0, "nothing more before the cut");
    assert_eq!(workers(&reg).await, expected);
}

/// A free lease is granted; while it is live (up to a nanosecond before
/// its expiry) another holder is refused; other lease names are free.
pub async fn lease_free_is_granted_and_a_live_one_is_refused<S: WorkerRegistry + ?Sized>(
    reg: Arc<S>,
) {
    let t0 = worker_time(0);
    assert!(acquire(&reg, "resume", "w-a", t0).await, "a free lease");
    assert!(!acquire(&reg, "resume", "w-b", t0).await, "held by w-a");
    assert!(
        !acquire(&reg, "resume", "w-b", time_ns(10, -1)).await,
        "held by w-a until its expiry"
    );
    assert!(
        acquire(&reg, "sweep", "w-b", t0).await,
        "another name is another lease"
    );
    assert!(!acquire(&reg, "sweep", "w-a", t0).await, "held by w-b");
    assert!(
        acquire(&reg, "Resume", "w-b", t0).await,
        "names match exactly: `Resume` is another lease"
    );
    assert!(
        acquire(&reg, "resume", "w-a", t0).await,
        "still w-a's after all that"
    );
    assert!(workers(&reg).await.is_empty(), "leases register no workers");
}

/// The holder renews its lease: the expiry moves to `now + ttl`, so
/// another holder is refused past the first expiry, until the renewed one.
pub async fn lease_same_holder_renews<S: WorkerRegistry + ?Sized>(reg: Arc<S>) {
    assert!(acquire(&reg, "sweep", "w-a", worker_time(0)).await);
    assert!(
        acquire(&reg, "sweep", "w-a", worker_time(8)).await,
        "renewed while live"
    );
    assert!(
        !acquire(&reg, "sweep", "w-b", worker_time(12)).await,
        "the renewal outlives the first expiry (10 s)"
    );
    assert!(
        !acquire(&reg, "sweep", "w-b", time_ns(18, -1)).await,
        "live until 18 s"
    );
    assert!(
        acquire(&reg, "sweep", "w-a", worker_time(30)).await,
        "the holder takes its own expired lease back"
    );
    assert!(!acquire(&reg, "sweep", "w-b", worker_time(35)).await);
    assert!(
        acquire(&reg, "sweep", "w-b", worker_time(40)).await,
        "free at the renewed expiry"
    );
}

/// A lease is expired from its expiry on (`now >= expiry`): then a new
/// holder gets it, and the old holder is refused while the new one's is
/// live.
pub async fn lease_expired_goes_to_a_new_holder<S: WorkerRegistry + ?Sized>(reg: Arc<S>) {
    assert!(acquire(&reg, "resume", "w-a", worker_time(0)).await);
    assert!(
        !acquire(&reg, "resume", "w-b", time_ns(10, -1)).await,
        "a nanosecond before expiry"
    );
    assert!(
        acquire(&reg, "resume", "w-b", worker_time(10)).await,
        "at expiry the lease is free"
    );
    assert!(
        !acquire(&reg, "resume", "w-a", worker_time(11)).await,
        "the old holder lost it"
    );
    assert!(
        acquire(&reg, "resume", "w-c", worker_time(500)).await,
        "long expired"
    );
    assert!(!acquire(&reg, "resume", "w-b", worker_time(501)).await);
}

/// The holder's release frees the lease at once for anyone (and for
/// itself); releasing a lease one does not hold, or that does not exist,
/// is not an error.
pub async fn lease_release_by_the_holder_frees_it<S: WorkerRegistry + ?Sized>(reg: Arc<S>) {
    let t0 = worker_time(0);
    assert!(acquire(&reg, "resume", "w-a", t0).await);
    release(&reg, "resume", "w-a").await;
    assert!(
        acquire(&reg, "resume", "w-b", t0).await,
        "free after the release"
    );
    release(&reg, "resume", "w-b").await;
    release(&reg, "resume", "w-b").await;
    release(&reg, "never-taken", "w-b").await;
    assert!(
        acquire(&reg, "resume", "w-a", t0).await,
        "free again after the second holder's release"
    );
}

/// A release by anyone but the holder does nothing: the lease stays the
/// holder's, live, and renewable.
pub async fn lease_release_by_another_does_nothing<S: WorkerRegistry + ?Sized>(reg: Arc<S>) {
    let t0 = worker_time(0);
    assert!(acquire(&reg, "resume", "w-a", t0).await);
    assert!(acquire(&reg, "sweep", "w-b", t0).await);
    for other in ["w-b", "W-A", "w-", ""] {
        release(&reg, "resume", other).await;
    }
    release(&reg, "sweep", "w-a").await;
    assert!(
        !acquire(&reg, "resume", "w-b", worker_time(5)).await,
        "still w-a's"
    );
    assert!(
        !acquire(&reg, "sweep", "w-a", worker_time(5)).await,
        "still w-b's"
    );
    assert!(acquire(&reg, "resume", "w-a", worker_time(5)).await);
    assert!(acquire(&reg, "sweep", "w-b", worker_time(5)).await);
}

/// Ten holders racing for one free lease (each on its own task): exactly
/// one gets it, and afterwards it is that one's alone.
pub async fn lease_concurrent_acquires_of_a_free_lease_grant_one<S: WorkerRegistry + ?Sized>(
    reg: Arc<S>,
) {
    let t0 = worker_time(0);
    let holders: Vec<String> = (0..10).map(|i| format!("w-{i}")).collect();
    let tasks = holders.iter().map(|holder| {
        let reg = reg.clone();
        let holder = holder.clone();
        tokio::spawn(async move { reg.acquire_lease("resume", &holder, TTL, t0).await })
    });
    let results: Vec<agentry_core::Result<bool>> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("the acquiring task"))
        .collect();
    let granted: Vec<&String> = holders
        .iter()
        .zip(&results)
        .filter(|(_, result)| matches!(result, Ok(true)))
        .map(|(holder, _)| holder)
        .collect();
    assert_eq!(granted.len(), 1, "exactly one holder wins: {results:?}");
    for result in &results {
        assert!(
            result.is_ok(),
            "losing is Ok(false), not an error: {results:?}"
        );
    }
    let winner = granted[0].as_str();
    for holder in &holders {
        assert_eq!(
            acquire(&reg, "resume", holder, worker_time(1)).await,
            holder == winner,
            "{holder} after the race won by {winner}"
        );
    }
}
