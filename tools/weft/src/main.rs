use clap::Parser;

use weft_cli::cli::{Cli, Command};
use weft_cli::{doctor, exit, path, pods};

fn main() {
    // `weft doctor` takes flanneld's etcd flags as flanneld does: single-dash spelling and
    // FLANNELD_ETCD_* variables (command line wins, empty values ignored).
    let mut argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if argv.get(1).map(String::as_str) == Some("doctor") {
        argv = weft_flanneld::cli::etcd_args_from_env(&argv, |k| std::env::var(k).ok());
    }
    let cli = Cli::parse_from(argv);
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
        Command::Doctor(args) => doctor::run(&args),
    };
    std::process::exit(code);
}
