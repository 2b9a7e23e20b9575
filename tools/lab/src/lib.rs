//! weft-lab: network-namespace labs for tests and the demo.
//!
//! Everything a lab creates is named with a per-run prefix and removed when its guard drops
//! (also on panic). Nothing here touches the root network namespace: commands that change
//! network state always run inside a namespace the lab created.

pub mod bins;
pub mod cmd;
pub mod ns;
