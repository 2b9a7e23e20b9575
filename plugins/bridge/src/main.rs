//! The `bridge` CNI plugin binary.

fn main() {
    weft_common::cni::skel::run(weft_bridge::Bridge, "bridge")
}
