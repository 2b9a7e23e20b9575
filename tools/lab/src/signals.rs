//! SIGINT/SIGTERM → a flag the lab polls, so an interrupted demo tears its lab down instead of
//! dying with namespaces and daemons left behind. Handlers are process-wide and installed once;
//! spawned children get default dispositions back on exec.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::{LabError, Result};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Installs the SIGINT and SIGTERM handlers (idempotent).
pub fn install() -> Result<()> {
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)));
    let installed = INSTALLED.get_or_init(|| {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(flag))
                .map_err(|e| format!("install handler for signal {sig}: {e}"))?;
        }
        Ok(())
    });
    installed.clone().map_err(LabError::Invalid)
}

/// True once SIGINT or SIGTERM arrived after [`install`].
pub fn interrupted() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// `Err(Interrupted)` once a signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}
