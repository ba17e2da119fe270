//! The `snapshot` subcommand: `metastore-node snapshot status FILE [-w simple|json|table]` and
//! `metastore-node snapshot restore FILE|s3://BUCKET/KEY --data-dir … --name … --initial-cluster …
//! --initial-cluster-token … --initial-advertise-peer-urls …` (any member flag is accepted, so
//! the same command line restores and then starts a member).

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::backup::fetch::{download, S3Options, Source};
use crate::backup::restore::{restore, status, SnapshotStatus};
use crate::config::Flags;
use crate::consensus::bootstrap;

const USAGE: &str = "usage: metastore-node snapshot status FILE [-w simple|json|table]\n       \
                     metastore-node snapshot restore FILE|s3://BUCKET/KEY [--s3-endpoint URL] \
                     [--s3-region REGION] [--skip-if-initialized] --data-dir DIR --name NAME \
                     --initial-cluster NAME=URL,... --initial-cluster-token TOKEN \
                     --initial-advertise-peer-urls URL\n\
                     (s3 credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)\n       \
                     metastore-node snapshot save FILE --endpoints URL[,URL...] [--cacert FILE \
                     --cert FILE --key FILE] [--summary-file FILE] [--prune-keep N --prune-prefix P]";

/// Runs `snapshot <args>`; returns the exit code (0 done, 1 failed, 2 bad usage).
pub fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("status") => status_command(&args[1..]),
        Some("restore") => restore_command(&args[1..]),
        Some("save") => save_command(&args[1..]),
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

/// `snapshot restore`'s own options, taken out of its arguments before the member flags.
#[derive(Debug, Default, PartialEq, Eq)]
struct RestoreOptions {
    s3: S3Options,
    /// Do nothing when the data dir already holds a member (an init container run again).
    skip_if_initialized: bool,
}

/// Splits `snapshot restore`'s options from the member flags.
fn restore_options(args: &[String]) -> Result<(RestoreOptions, Vec<String>), String> {
    let mut opts = RestoreOptions::default();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--s3-endpoint" => opts.s3.endpoint = Some(value()?),
            "--s3-region" => opts.s3.region = Some(value()?),
            "--skip-if-initialized" => opts.skip_if_initialized = true,
            _ => rest.push(a.clone()),
        }
    }
    Ok((opts, rest))
}

fn restore_command(args: &[String]) -> i32 {
    let Some((source, args)) = args.split_first() else {
        return usage("no snapshot file given");
    };
    let source = match Source::parse(source) {
        Ok(s) => s,
        Err(e) => return usage(&e.to_string()),
    };
    let (opts, flags) = match restore_options(args) {
        Ok(x) => x,
        Err(e) => return usage(&e),
    };
    let argv = std::iter::once("metastore-node".to_string()).chain(flags);
    let config = match Flags::try_parse_from(argv).map_err(|e| e.to_string()) {
        Ok(f) => match f.validate() {
            Ok(c) => c,
            Err(e) => return usage(&format!("invalid configuration: {e}")),
        },
        Err(e) => return usage(e.lines().next().unwrap_or("invalid flags")),
    };
    let dir = &config.data_dir;
    if opts.skip_if_initialized {
        if !bootstrap::is_fresh(dir) {
            println!(
                "data dir {} already holds a member: nothing to restore",
                dir.display()
            );
            return 0;
        }
        // No identity: at most a restore cut short (the identity is written last).
        if let Err(e) = remove_if_exists(dir) {
            eprintln!("metastore-node: error: {}: {e}", dir.display());
            return 1;
        }
    }
    let (file, downloaded) = match &source {
        Source::File(f) => (f.clone(), None),
        Source::S3 { bucket, key } => {
            let dest = download_path(dir);
            if let Some(parent) = dest.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            match download(bucket, key, &opts.s3, &dest) {
                Ok(n) => {
                    println!("downloaded s3://{bucket}/{key} ({n} bytes)");
                    (dest.clone(), Some(dest))
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&dest);
                    eprintln!("metastore-node: error: {e}");
                    return 1;
                }
            }
        }
    };
    let result = restore(&file, &config);
    if let Some(d) = downloaded {
        let _ = std::fs::remove_file(d);
    }
    match result {
        Ok(id) => {
            println!(
                "restored snapshot {} into {} as member {} ({:x}) of new cluster {:x} with {} member(s)",
                file.display(),
                dir.display(),
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

/// `snapshot save`'s options.
#[derive(Debug, Default, PartialEq, Eq)]
struct SaveOptions {
    file: PathBuf,
    endpoints: Vec<String>,
    /// CA, certificate and key files for a client-TLS cluster.
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// Where the result goes as JSON (a Job's termination log).
    summary_file: Option<PathBuf>,
    /// Keep the newest N `<prefix><unix time>.db` files beside FILE.
    prune: Option<(usize, String)>,
}

fn save_options(args: &[String]) -> Result<SaveOptions, String> {
    let mut o = SaveOptions::default();
    let (mut keep, mut prefix) = (None, None);
    let mut file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--endpoints" => {
                o.endpoints = value()?.split(',').map(str::to_string).collect();
            }
            "--cacert" => o.cacert = Some(value()?.into()),
            "--cert" => o.cert = Some(value()?.into()),
            "--key" => o.key = Some(value()?.into()),
            "--summary-file" => o.summary_file = Some(value()?.into()),
            "--prune-keep" => {
                let v = value()?;
                keep = Some(
                    v.parse::<usize>()
                        .map_err(|_| format!("--prune-keep {v:?}"))?,
                );
            }
            "--prune-prefix" => prefix = Some(value()?),
            _ if file.is_none() && !a.starts_with('-') => file = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    o.file = file.ok_or("no snapshot file given")?;
    if o.endpoints.iter().all(|e| e.is_empty()) {
        return Err("--endpoints is required".into());
    }
    o.prune = match (keep, prefix) {
        (Some(k), Some(p)) if k > 0 && !p.is_empty() => Some((k, p)),
        (None, None) => None,
        _ => return Err("--prune-keep (at least 1) and --prune-prefix go together".into()),
    };
    Ok(o)
}

fn tls_options(o: &SaveOptions) -> Result<Option<etcd_client::ConnectOptions>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut tls = etcd_client::TlsOptions::new();
    match &o.cacert {
        Some(ca) => tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?)),
        None if o.cert.is_none() => return Ok(None),
        None => {}
    }
    match (&o.cert, &o.key) {
        (Some(c), Some(k)) => {
            tls = tls.identity(tonic::transport::Identity::from_pem(read(c)?, read(k)?));
        }
        (None, None) => {}
        _ => return Err("--cert and --key go together".into()),
    }
    Ok(Some(etcd_client::ConnectOptions::new().with_tls(tls)))
}

fn save_command(args: &[String]) -> i32 {
    let o = match save_options(args) {
        Ok(o) => o,
        Err(e) => return usage(&e),
    };
    let options = match tls_options(&o) {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("metastore-node: error: {e}");
            return 1;
        }
    };
    let saved = match runtime.block_on(crate::backup::save::save(&o.endpoints, options, &o.file)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("metastore-node: error: {e}");
            return 1;
        }
    };
    println!(
        "Snapshot saved at {} (revision {}, {} bytes, sha256 {})",
        o.file.display(),
        saved.revision,
        saved.size,
        saved.sha256
    );
    if let Some((keep, prefix)) = &o.prune {
        let dir = o.file.parent().unwrap_or(Path::new("."));
        match crate::backup::save::prune(dir, prefix, *keep) {
            Ok(gone) if !gone.is_empty() => println!("pruned {}", gone.join(", ")),
            Ok(_) => {}
            // The snapshot is saved; an old one left behind is reported, not fatal.
            Err(e) => eprintln!("metastore-node: warning: pruning {}: {e}", dir.display()),
        }
    }
    if let Some(f) = &o.summary_file {
        let json = serde_json::to_string(&saved).unwrap_or_default();
        if let Err(e) = std::fs::write(f, json) {
            eprintln!("metastore-node: error: {}: {e}", f.display());
            return 1;
        }
    }
    0
}

/// Where an object is downloaded: beside the data dir, on the same volume.
fn download_path(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".snapshot-download");
    data_dir.with_file_name(name)
}

fn remove_if_exists(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
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
    fn restore_options_are_split_from_member_flags() {
        let args: Vec<String> = [
            "--s3-endpoint=http://127.0.0.1:8333",
            "--name",
            "a",
            "--s3-region",
            "eu-west-1",
            "--skip-if-initialized",
            "--data-dir=/d",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (opts, rest) = restore_options(&args).unwrap();
        assert_eq!(opts.s3.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert_eq!(opts.s3.region.as_deref(), Some("eu-west-1"));
        assert!(opts.skip_if_initialized);
        assert_eq!(rest, ["--name", "a", "--data-dir=/d"]);
        assert!(restore_options(&["--s3-region".to_string()]).is_err());
        assert_eq!(
            download_path(Path::new("/var/lib/metastore/data")),
            Path::new("/var/lib/metastore/data.snapshot-download")
        );
    }

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
