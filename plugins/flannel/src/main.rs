//! The `flannel` CNI plugin binary.

fn main() {
    weft_common::cni::skel::run(weft_flannel::Flannel, "flannel")
}
