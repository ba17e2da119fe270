//! `metastore-node`: runs one MetaStore member; `metastore-node snapshot status|restore|save`
//! checks, restores and saves snapshot files.

use clap::Parser;
use metastore_node::config::Flags;

fn main() {
    // `metastore-node snapshot status|restore …`, like etcdutl.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("snapshot") {
        std::process::exit(metastore_node::backup::cli::run(&args[2..]));
    }
    let flags = match Flags::try_parse() {
        Ok(f) => f,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, like every other configuration error; `--help` has the details.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid flags");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("metastore-node: error: {first} (see --help)");
            std::process::exit(2);
        }
    };
    let config = match flags.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("metastore-node: error: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    metastore_node::server::exit_on_panic();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("metastore-node: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(metastore_node::server::run(config)) {
        eprintln!("metastore-node: error: {e:#}");
        std::process::exit(1);
    }
}
