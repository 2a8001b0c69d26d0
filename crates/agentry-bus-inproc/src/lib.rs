//! In-process Bus adapter: task queues and event broadcast on tokio channels.
