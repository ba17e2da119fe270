//! `metastore-bench`: drives an etcd-compatible endpoint list with a fixed workload for a fixed
//! time and reports throughput and latency percentiles (text or JSON). The same binary measures
//! MetaStore and real etcd, so results compare like for like.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};
use hdrhistogram::Histogram;
use serde::Serialize;

/// What each request does.
#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Workload {
    /// Put a random key of the key space.
    Put,
    /// Linearizable get of a random key.
    Range,
    /// Serializable get of a random key.
    RangeSerializable,
    /// 90 % linearizable gets, 10 % puts.
    Mixed,
    /// A transaction per request: if the key exists, put it and read it back, else put it.
    Txn,
    /// Watch fan-out: every client is a watcher of the key space, one extra client puts as fast
    /// as it can; reports events delivered per second and put-to-event latency.
    Watch,
    /// Loads the key space: every key of `--key-count` put exactly once, shared out among the
    /// clients; ends when all are written (or at `--duration`).
    Load,
}

/// The next key the `load` workload writes.
static NEXT_LOAD_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Parser)]
#[command(about = "Load generator for etcd-compatible servers")]
struct Args {
    /// Comma-separated client URLs; clients are spread over them round-robin.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoints: String,
    /// Workload.
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// gRPC connections the clients share round-robin (0 = one per client).
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    key_count: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Authenticate as `NAME:PASSWORD` (a cluster with auth on); each connection gets a token.
    #[arg(long)]
    user: Option<String>,
    /// Also write every completed operation to this file, one line each: its completion time
    /// (Unix ms) and its latency (µs) — to tell latency during snapshots from the rest.
    #[arg(long)]
    samples: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    workload: Workload,
    clients: usize,
    seconds: f64,
    ops: u64,
    errors: u64,
    ops_per_sec: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
}

/// A small xorshift generator: keys must be spread, not cryptographically random.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn run_client(
    mut client: Client,
    args: Arc<Args>,
    seed: u64,
    until: Instant,
) -> (Histogram<u64>, u64, Vec<(u64, u32)>) {
    let mut hist = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!("3 sig figs is valid"));
    let mut samples = Vec::new();
    let mut rng = Rng(seed | 1);
    let value = vec![b'x'; args.value_size];
    let mut errors = 0;
    while Instant::now() < until {
        let key = if matches!(args.workload, Workload::Load) {
            let k = NEXT_LOAD_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if k >= args.key_count {
                break;
            }
            format!("bench/{k:08}")
        } else {
            format!("bench/{:08}", rng.next() % args.key_count)
        };
        let is_put = match args.workload {
            Workload::Put | Workload::Load => true,
            Workload::Mixed => rng.next().is_multiple_of(10),
            _ => false,
        };
        let start = Instant::now();
        let ok = if matches!(args.workload, Workload::Txn) {
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Greater, 0)])
                .and_then([
                    TxnOp::put(key.clone(), value.clone(), None),
                    TxnOp::get(key.clone(), None),
                ])
                .or_else([TxnOp::put(key, value.clone(), None)]);
            client.txn(txn).await.is_ok()
        } else if is_put {
            client.put(key, value.clone(), None).await.is_ok()
        } else {
            let opts = matches!(args.workload, Workload::RangeSerializable)
                .then(|| GetOptions::new().with_serializable());
            client.get(key, opts).await.is_ok()
        };
        if ok {
            let us = start.elapsed().as_micros() as u64;
            let _ = hist.record(us);
            if args.samples.is_some() {
                samples.push((unix_ms(), us.min(u32::MAX as u64) as u32));
            }
        } else {
            errors += 1;
        }
    }
    (hist, errors, samples)
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One watcher: counts events on the key space and records put-to-event latency (the writer puts
/// its send time, in µs since `epoch`, at the front of each value).
async fn run_watcher(
    mut client: Client,
    epoch: Instant,
    until: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut hist = Histogram::<u64>::new(3)?;
    let mut stream = client
        .watch("bench/", Some(WatchOptions::new().with_prefix()))
        .await
        .context("creating a watch")?;
    let mut errors = 0;
    loop {
        let left = until.saturating_duration_since(Instant::now()) + Duration::from_millis(500);
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(resp))) => {
                let now = epoch.elapsed().as_micros() as u64;
                for ev in resp.events() {
                    let sent = ev
                        .kv()
                        .and_then(|kv| {
                            std::str::from_utf8(&kv.value()[..20.min(kv.value().len())]).ok()
                        })
                        .and_then(|s| s.trim_end_matches('x').parse::<u64>().ok());
                    match sent {
                        Some(t) => {
                            let _ = hist.record(now.saturating_sub(t));
                        }
                        None => errors += 1,
                    }
                }
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                errors += 1;
                break;
            }
            Err(_) => break,
        }
        if Instant::now() >= until + Duration::from_millis(200) {
            break;
        }
    }
    Ok((hist, errors))
}

/// The writer of the watch workload: puts stamped values as fast as it can until `until`.
async fn run_stamped_writer(
    mut client: Client,
    args: Arc<Args>,
    epoch: Instant,
    until: Instant,
) -> u64 {
    let mut rng = Rng(0x5151);
    let mut errors = 0;
    while Instant::now() < until {
        let key = format!("bench/{:08}", rng.next() % args.key_count);
        let mut value = format!("{:020}", epoch.elapsed().as_micros()).into_bytes();
        value.resize(args.value_size.max(20), b'x');
        if client.put(key, value, None).await.is_err() {
            errors += 1;
        }
    }
    errors
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let endpoints: Vec<String> = args.endpoints.split(',').map(str::to_string).collect();
    // Seed the key space so reads find data.
    let mut seeder = Client::connect([&endpoints[0]], connect_options(&args)?)
        .await
        .with_context(|| format!("connecting to {}", endpoints[0]))?;
    if !matches!(
        args.workload,
        Workload::Put | Workload::Watch | Workload::Load
    ) {
        let value = vec![b'x'; args.value_size];
        for k in 0..args.key_count {
            seeder
                .put(format!("bench/{k:08}"), value.clone(), None)
                .await
                .context("seeding keys")?;
        }
    }
    // `connections` gRPC connections (HTTP/2 channels), spread over the endpoints; clients share
    // them round-robin, like etcd's benchmark `--conns`.
    let conns = if args.connections == 0 {
        args.clients
    } else {
        args.connections.min(args.clients)
    }
    .max(1);
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        let ep = &endpoints[i % endpoints.len()];
        channels.push(
            Client::connect([ep], connect_options(&args)?)
                .await
                .with_context(|| format!("connecting to {ep}"))?,
        );
    }
    let clients: Vec<Client> = (0..args.clients)
        .map(|i| channels[i % conns].clone())
        .collect();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.duration);
    if matches!(args.workload, Workload::Watch) {
        return watch_fan_out(args.clone(), clients, &endpoints, started, until).await;
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(run_client(
                c,
                args.clone(),
                0x9e37_79b9 * (i as u64 + 1),
                until,
            ))
        })
        .collect();
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    let mut samples = Vec::new();
    for t in tasks {
        let (h, e, s) = t.await?;
        hist.add(h)?;
        errors += e;
        samples.extend(s);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.samples {
        write_samples(path, samples).with_context(|| format!("writing {}", path.display()))?;
    }
    print_report(&args, &hist, errors, seconds)
}

/// How to connect: as `--user`, when given.
fn connect_options(args: &Args) -> anyhow::Result<Option<etcd_client::ConnectOptions>> {
    let Some(user) = &args.user else {
        return Ok(None);
    };
    let (name, password) = user.split_once(':').context("--user wants NAME:PASSWORD")?;
    Ok(Some(
        etcd_client::ConnectOptions::new().with_user(name, password),
    ))
}

/// Writes `--samples`: one line per operation, in completion order.
fn write_samples(path: &std::path::Path, mut samples: Vec<(u64, u32)>) -> std::io::Result<()> {
    use std::io::Write as _;
    samples.sort_unstable();
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (ms, us) in samples {
        writeln!(w, "{ms} {us}")?;
    }
    w.flush()
}

/// Runs the watch fan-out: `clients` watchers and one writer.
async fn watch_fan_out(
    args: Arc<Args>,
    watchers: Vec<Client>,
    endpoints: &[String],
    started: Instant,
    until: Instant,
) -> anyhow::Result<()> {
    let writer = Client::connect([&endpoints[0]], connect_options(&args)?)
        .await
        .with_context(|| format!("connecting to {}", endpoints[0]))?;
    let tasks: Vec<_> = watchers
        .into_iter()
        .map(|c| tokio::spawn(run_watcher(c, started, until)))
        .collect();
    // Let the watches be created before the first put.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let w = tokio::spawn(run_stamped_writer(writer, args.clone(), started, until));
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = w.await?;
    for t in tasks {
        let (h, e) = t.await??;
        hist.add(h)?;
        errors += e;
    }
    let seconds = until.duration_since(started).as_secs_f64() - 0.2;
    print_report(&args, &hist, errors, seconds)
}

/// Prints the run's report from its latency histogram (one sample per completed operation).
fn print_report(
    args: &Args,
    hist: &Histogram<u64>,
    errors: u64,
    seconds: f64,
) -> anyhow::Result<()> {
    let report = Report {
        workload: args.workload,
        clients: args.clients,
        seconds,
        ops: hist.len(),
        errors,
        ops_per_sec: hist.len() as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        max_us: hist.max(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{:?} clients={} ops={} errors={} ops/s={:.0} p50={}us p90={}us p99={}us max={}us",
            report.workload,
            report.clients,
            report.ops,
            report.errors,
            report.ops_per_sec,
            report.p50_us,
            report.p90_us,
            report.p99_us,
            report.max_us
        );
    }
    Ok(())
}
