//! `cnitool add|check|del|gc|status <net> <netns>`: errors on stderr, exit 1.

use std::io::Write;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    match weft_cnitool::run(&argv, &|k| std::env::var(k).ok(), &cwd) {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.as_bytes());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
