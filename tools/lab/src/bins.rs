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

/// Checks that every binary in `names` exists in [`bin_dir`]; one error naming all missing.
pub fn require(names: &[&str]) -> crate::error::Result<()> {
    let dir = bin_dir();
    let missing: Vec<&str> = names.iter().copied().filter(|n| !dir.join(n).is_file()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(crate::error::LabError::Missing {
        what: missing.join(", "),
        path: dir,
        hint: "build them first (`cargo build --workspace --bins`), or set WEFT_BIN_DIR".into(),
    })
}
