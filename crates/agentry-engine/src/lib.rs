//! Workflow engine: graph definitions, super-step scheduler, retries, approvals.
