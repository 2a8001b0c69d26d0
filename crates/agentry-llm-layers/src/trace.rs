//! The one way layers log about a request: every event carries the
//! provider and the request's provenance (`workflow_id`, `role`, `node`,
//! `step`, `turn`, `request_id`), never message contents.

/// Emits a `tracing` event at `$level` with the request's provenance
/// fields, then any further fields and the message.
macro_rules! llm_event {
    ($level:ident, $provider:expr, $request:expr, $($rest:tt)+) => {{
        let meta = &$request.meta;
        tracing::$level!(
            provider = %$provider,
            workflow_id = %meta.workflow_id.map(|id| id.to_string()).unwrap_or_default(),
            role = %meta.role,
            node = %meta.node,
            step = meta.step,
            turn = meta.turn,
            request_id = meta.request_id.as_ref().map(agentry_core::RequestId::as_str).unwrap_or(""),
            $($rest)+
        )
    }};
}

pub(crate) use llm_event;
