//! The `snapshot` subcommand: `metastore-node snapshot status FILE [-w simple|json|table]` and
//! `metastore-node snapshot restore FILE --data-dir … --name … --initial-cluster …
//! --initial-cluster-token … --initial-advertise-peer-urls …` (any member flag is accepted, so
//! the same command line restores and then starts a member).

use std::path::Path;

use clap::Parser;

use crate::backup::restore::{restore, status, SnapshotStatus};
use crate::config::Flags;

const USAGE: &str = "usage: metastore-node snapshot status FILE [-w simple|json|table]\n       \
                     metastore-node snapshot restore FILE --data-dir DIR --name NAME \
                     --initial-cluster NAME=URL,... --initial-cluster-token TOKEN \
                     --initial-advertise-peer-urls URL";

/// Runs `snapshot <args>`; returns the exit code (0 done, 1 failed, 2 bad usage).
pub fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("status") => status_command(&args[1..]),
        Some("restore") => restore_command(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

/// etcdutl's human size: `2.1 MB`.
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The status in etcdutl's formats.
pub fn render(s: &SnapshotStatus, format: &str) -> Option<String> {
    let (hash, size) = (format!("{:x}", s.hash), human(s.total_size));
    match format {
        "simple" => Some(format!("{hash}, {}, {}, {size}", s.revision, s.total_key)),
        "json" => serde_json::to_string(s).ok(),
        "table" => {
            let cells = [hash, s.revision.to_string(), s.total_key.to_string(), size];
            let heads = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let w: Vec<usize> = heads
                .iter()
                .zip(&cells)
                .map(|(h, c)| h.len().max(c.len()))
                .collect();
            let line = w
                .iter()
                .map(|n| "-".repeat(n + 2))
                .collect::<Vec<_>>()
                .join("+");
            // Headings centered, values right-aligned, as etcdutl's table writer does.
            let row = |xs: &[String], centered: bool| {
                xs.iter()
                    .zip(&w)
                    .map(|(x, n)| {
                        if centered {
                            format!(" {x:^n$} ")
                        } else {
                            format!(" {x:>n$} ")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            };
            let heads: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
            Some(format!(
                "+{line}+\n|{}|\n+{line}+\n|{}|\n+{line}+",
                row(&heads, true),
                row(&cells, false)
            ))
        }
        _ => None,
    }
}

fn status_command(args: &[String]) -> i32 {
    let mut file = None;
    let mut format = "simple".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-w" | "--write-out" => match it.next() {
                Some(f) => format = f.clone(),
                None => return usage("-w needs a format"),
            },
            _ if a.starts_with("--write-out=") => format = a["--write-out=".len()..].to_string(),
            _ if file.is_none() && !a.starts_with('-') => file = Some(a.clone()),
            _ => return usage(&format!("unexpected argument {a:?}")),
        }
    }
    let Some(file) = file else {
        return usage("no snapshot file given");
    };
    match status(Path::new(&file)) {
        Ok(s) => match render(&s, &format) {
            Some(text) => {
                println!("{text}");
                0
            }
            None => usage(&format!("unknown output format {format:?}")),
        },
        Err(e) => {
            eprintln!("metastore-node: error: {e}");
            1
        }
    }
}

fn restore_command(args: &[String]) -> i32 {
    let Some((file, flags)) = args.split_first() else {
        return usage("no snapshot file given");
    };
    let argv = std::iter::once("metastore-node".to_string()).chain(flags.iter().cloned());
    let config = match Flags::try_parse_from(argv).map_err(|e| e.to_string()) {
        Ok(f) => match f.validate() {
            Ok(c) => c,
            Err(e) => return usage(&format!("invalid configuration: {e}")),
        },
        Err(e) => return usage(e.lines().next().unwrap_or("invalid flags")),
    };
    match restore(Path::new(file), &config) {
        Ok(id) => {
            println!(
                "restored snapshot {file} into {} as member {} ({:x}) of new cluster {:x} with {} member(s)",
                config.data_dir.display(),
                id.name,
                id.member_id,
                id.cluster_id,
                id.bootstrap_members.len()
            );
            0
        }
        Err(e) => {
            eprintln!("metastore-node: error: {e}");
            1
        }
    }
}

fn usage(why: &str) -> i32 {
    eprintln!("metastore-node: error: {why}\n{USAGE}");
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_renders_like_etcdutl() {
        let s = SnapshotStatus {
            hash: 0xfe01cf57,
            revision: 10,
            total_key: 7,
            total_size: 2_100_000,
            sha256: "00".into(),
        };
        assert_eq!(render(&s, "simple").unwrap(), "fe01cf57, 10, 7, 2.1 MB");
        let table = render(&s, "table").unwrap();
        assert!(
            table.contains("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |"),
            "{table}"
        );
        assert!(
            table.contains("| fe01cf57 |       10 |          7 |     2.1 MB |"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&s, "json").unwrap()).unwrap();
        assert_eq!(json["revision"], 10);
        assert_eq!(json["totalKey"], 7);
        assert_eq!(render(&s, "yaml"), None);
    }
}
