use clap::Parser;

use weft_cli::cli::{Cli, Command};
use weft_cli::exit;

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Pods(_) | Command::Path(_) | Command::Doctor(_) => {
            eprintln!("weft: not implemented yet");
            exit::ERROR
        }
    };
    std::process::exit(code);
}
