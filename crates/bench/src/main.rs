//! berth-bench: benchmarks that start real `berthd` processes on loopback
//! (through the `berth-e2e` harness), drive them over gRPC and write what
//! they measured to `docs/benchmarks.md`.
//!
//! Each benchmark owns one section of that file, between
//! `<!-- NAME:begin -->` and `<!-- NAME:end -->`, and rewrites only it.

mod doc;
mod load;
mod machine;
mod raft;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raft write/read throughput and latency, and leader failover time, on
    /// a 3-server cluster.
    Raft(RaftArgs),
}

#[derive(Args)]
pub struct RaftArgs {
    /// Warm-up before each measured load level, in seconds.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Measured time of each load level, in seconds.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Failover trials (kill -9 of the leader).
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// The file whose `raft` section is rewritten.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/benchmarks.md"))]
    doc: PathBuf,
    /// Print the results only; leave the doc alone.
    #[arg(long)]
    no_doc: bool,
    /// Copy the servers' logs into this directory before they are removed.
    #[arg(long)]
    logs: Option<PathBuf>,
    /// --heartbeat-ms of the failover cluster.
    #[arg(long, default_value_t = 100)]
    failover_heartbeat_ms: u64,
    /// --election-timeout-ms of the failover cluster.
    #[arg(long, default_value_t = 500)]
    failover_election_timeout_ms: u64,
}

/// The whole run stops by itself after this, whatever happens.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Raft(args) => {
            if args.secs == 0 || args.secs > 60 || args.warmup_secs > 60 {
                bail!("--secs must be 1..=60 and --warmup-secs at most 60");
            }
            if args.trials == 0 || args.trials > 20 {
                bail!("--trials must be 1..=20");
            }
            // The servers belong to the future below: when it ends, early or
            // not, dropping it kills them (the harness's Drop).
            let report = tokio::select! {
                r = tokio::time::timeout(RUN_LIMIT, raft::run(&args)) => {
                    r.map_err(|_| anyhow::anyhow!("the run took longer than {RUN_LIMIT:?}; gave up"))??
                }
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            };
            let section = report.markdown();
            println!();
            println!("{section}");
            if !args.no_doc {
                doc::write_section(&args.doc, "raft", &section)
                    .with_context(|| format!("writing {}", args.doc.display()))?;
                println!("wrote the raft section of {}", args.doc.display());
            }
            Ok(())
        }
    }
}
