//! What this process remembers of workflows to spare store reads: parsed
//! definitions (by source text: many workflows share one), per workflow
//! the state at the start of its current step and the record this process
//! last wrote, and the records `submit` just created for the `run` that
//! usually follows.
//!
//! Each only saves a read. A cached record may be stale only if another
//! process moved the workflow since, and then the store's commit guard
//! refuses the task's commit (nothing is written).

use std::collections::HashMap;
use std::sync::Arc;

use agentry_core::{Result, TaskKey, WorkflowId, WorkflowRecord, WorkflowState, WorkflowStatus};
use parking_lot::Mutex;

use crate::definition::WorkflowDefinition;

/// The most records [`Caches::remember_submitted`] keeps for the run that
/// usually follows (beyond it the map is cleared: it only saves a read).
const SUBMITTED_CAP: usize = 4096;

/// Per-workflow cache: the parsed graph, the state at the start of the
/// current step, and the record as this process last wrote it.
struct WfCache {
    def: Arc<WorkflowDefinition>,
    start_state: Option<(u64, Arc<WorkflowState>)>,
    /// The workflow row right after the transition or advance that this
    /// process committed and that dispatched the current step's tasks. A
    /// worker here uses it instead of reading the store.
    record: Option<Arc<WorkflowRecord>>,
}

impl WfCache {
    fn of(def: &Arc<WorkflowDefinition>) -> Self {
        WfCache {
            def: def.clone(),
            start_state: None,
            record: None,
        }
    }
}

/// The caches of one engine.
#[derive(Default)]
pub(super) struct Caches {
    /// Parsed definitions by source text.
    defs: Mutex<HashMap<String, Arc<WorkflowDefinition>>>,
    workflows: Mutex<HashMap<WorkflowId, WfCache>>,
    /// Records just created by `submit`, taken by the next start.
    submitted: Mutex<HashMap<WorkflowId, WorkflowRecord>>,
}

impl Caches {
    /// Keeps `def`, just parsed for a submission, when `record` (the
    /// stored workflow) holds its source.
    pub(super) fn remember_definition(
        &self,
        def: &Arc<WorkflowDefinition>,
        record: &WorkflowRecord,
    ) {
        if record.definition == def.source() {
            self.defs
                .lock()
                .entry(record.definition.clone())
                .or_insert_with(|| def.clone());
        }
    }

    /// Keeps a record `submit` just created for the start that follows.
    pub(super) fn remember_submitted(&self, record: &WorkflowRecord) {
        let mut submitted = self.submitted.lock();
        if submitted.len() >= SUBMITTED_CAP {
            submitted.clear();
        }
        submitted.insert(record.id, record.clone());
    }

    /// The record `submit` just created, once.
    pub(super) fn take_submitted(&self, id: WorkflowId) -> Option<WorkflowRecord> {
        self.submitted.lock().remove(&id)
    }

    /// The workflow's parsed definition: cached, or parsed from the
    /// snapshot in its record (an invalid one is named after the workflow).
    pub(super) fn definition(&self, record: &WorkflowRecord) -> Result<Arc<WorkflowDefinition>> {
        if let Some(c) = self.workflows.lock().get(&record.id) {
            return Ok(c.def.clone());
        }
        let cached = self.defs.lock().get(&record.definition).cloned();
        let def = match cached {
            Some(d) => d,
            None => {
                let file = format!(
                    "{} (snapshot of workflow {})",
                    record.workflow_name, record.id
                );
                let d = Arc::new(WorkflowDefinition::parse(&record.definition, &file)?);
                self.defs
                    .lock()
                    .insert(record.definition.clone(), d.clone());
                d
            }
        };
        self.workflows
            .lock()
            .entry(record.id)
            .or_insert_with(|| WfCache::of(&def));
        Ok(def)
    }

    /// Remembers the state at the start of `step`.
    pub(super) fn set_start_state(
        &self,
        id: WorkflowId,
        def: &Arc<WorkflowDefinition>,
        step: u64,
        state: Arc<WorkflowState>,
    ) {
        let mut workflows = self.workflows.lock();
        let entry = workflows.entry(id).or_insert_with(|| WfCache::of(def));
        entry.start_state = Some((step, state));
    }

    /// The remembered state at the start of `step`, if it is that step's.
    pub(super) fn start_state(&self, id: WorkflowId, step: u64) -> Option<Arc<WorkflowState>> {
        let workflows = self.workflows.lock();
        match &workflows.get(&id)?.start_state {
            Some((s, state)) if *s == step => Some(state.clone()),
            _ => None,
        }
    }

    /// Forgets the remembered state and record (a resume moves the
    /// workflow back).
    pub(super) fn invalidate_state(&self, id: WorkflowId) {
        if let Some(c) = self.workflows.lock().get_mut(&id) {
            c.start_state = None;
            c.record = None;
        }
    }

    /// Remembers `record` (just written by this process) as the one the
    /// tasks of its current step run against.
    pub(super) fn set_record(&self, def: &Arc<WorkflowDefinition>, record: &WorkflowRecord) {
        let mut workflows = self.workflows.lock();
        let entry = workflows
            .entry(record.id)
            .or_insert_with(|| WfCache::of(def));
        entry.record = Some(Arc::new(record.clone()));
    }

    /// The remembered record, if it is running at `task`'s step with
    /// `task`'s node pending.
    pub(super) fn record_for(&self, task: &TaskKey) -> Option<Arc<WorkflowRecord>> {
        let workflows = self.workflows.lock();
        let record = workflows.get(&task.workflow)?.record.as_ref()?;
        let fits = record.status == WorkflowStatus::Running
            && record.cursor.step == task.step
            && record.cursor.pending.contains(&task.node);
        fits.then(|| record.clone())
    }

    /// Drops what is remembered of a workflow (its run ended).
    pub(super) fn forget(&self, id: WorkflowId) {
        self.workflows.lock().remove(&id);
    }
}
