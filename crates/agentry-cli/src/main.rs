//! The `agentry` binary.

fn main() {}
