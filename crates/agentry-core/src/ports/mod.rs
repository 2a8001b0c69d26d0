//! The ports that adapters implement, one module each: the gateway's
//! access ports, the bus, the three integrations and their resolver, the
//! worker registry and the sandbox. The store, LLM and node-runner ports
//! live beside the types they carry (`store`, `llm`, `node`).

pub mod access;
pub mod bus;
pub mod codehost;
pub mod integrations;
pub mod registry;
pub mod sandbox;
pub mod tracker;
pub mod wiki;
