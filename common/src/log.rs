//! Plugin logging: stderr only (stdout belongs to the protocol), WARN unless `WEFT_LOG`
//! names another level (`error`, `warn`, `info`, `debug`, `trace`).

use tracing::Level;

/// Installs the stderr subscriber for a plugin process; harmless if called twice.
pub fn init_plugin() {
    let level = std::env::var("WEFT_LOG").ok().and_then(|v| v.parse::<Level>().ok()).unwrap_or(Level::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}
