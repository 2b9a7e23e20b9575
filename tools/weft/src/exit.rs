//! Exit status, a fixed interface other tools script against.

/// Healthy / reachable.
pub const OK: i32 = 0;
/// A link is broken (the cause is printed).
pub const BROKEN: i32 = 1;
/// Bad input, or something could not be read.
pub const ERROR: i32 = 2;
