//! The `host-local` binary: the CNI protocol around [`weft_host_local::HostLocal`].

fn main() {
    weft_common::cni::skel::run(weft_host_local::HostLocal, "host-local")
}
