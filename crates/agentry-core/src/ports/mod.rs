//! The ports that adapters implement, one module each.

pub mod access;
pub mod bus;
pub mod codehost;
pub mod integrations;
pub mod registry;
pub mod sandbox;
pub mod tracker;
pub mod wiki;
