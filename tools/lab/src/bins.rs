//! Where tests find the built binaries: `$WEFT_BIN_DIR`, else `<workspace>/target/debug`.

use std::path::PathBuf;

/// The directory holding `bridge`, `host-local`, `flannel`, `cnitool`, `flanneld`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEFT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug")
}

/// Path of one built weft binary; panics with a hint when it has not been built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} not built: run `cargo build --workspace --bins` first", p.display());
    p
}

/// The reference Go plugins shipped by Debian's containernetworking-plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
