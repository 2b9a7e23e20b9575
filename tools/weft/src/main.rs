use clap::Parser;

use weft_cli::cli::{Cli, Command};
use weft_cli::{exit, path, pods};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Pods(args) => match pods::collect(&args.dirs) {
            Ok(report) => {
                if args.json {
                    match serde_json::to_string_pretty(&report) {
                        Ok(j) => println!("{j}"),
                        Err(e) => eprintln!("weft pods: render JSON: {e}"),
                    }
                } else {
                    print!("{}", pods::render_table(&report));
                }
                let healthy = report.orphans.is_empty() && report.pods.iter().all(|p| p.problems.is_empty());
                if !report.errors.is_empty() {
                    exit::ERROR
                } else if healthy {
                    exit::OK
                } else {
                    exit::BROKEN
                }
            }
            Err(e) => {
                eprintln!("weft pods: {e}");
                exit::ERROR
            }
        },
        Command::Path(args) => match path::run(&args) {
            Ok(out) => {
                if args.json {
                    match serde_json::to_string_pretty(&out.report) {
                        Ok(j) => println!("{j}"),
                        Err(e) => eprintln!("weft path: render JSON: {e}"),
                    }
                } else {
                    print!("{}", path::render_text(&out.report, args.brief));
                }
                if let Some(e) = &out.unreadable {
                    eprintln!("weft path: {e}");
                    exit::ERROR
                } else if out.report.cause.is_some() {
                    exit::BROKEN
                } else {
                    exit::OK
                }
            }
            Err(e) => {
                eprintln!("weft path: {e}");
                exit::ERROR
            }
        },
        Command::Doctor(_) => {
            eprintln!("weft: not implemented yet");
            exit::ERROR
        }
    };
    std::process::exit(code);
}
