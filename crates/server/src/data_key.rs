//! `berthd pki data-key`: the steps of a data key rotation on a CA dir's
//! `data.key` ring (`berth_pki::datakey`), each printing what to do next.
//! Part of the berthd binary only.

use std::path::{Path, PathBuf};

use berth_pki::datakey::{self, DataKey, DATA_KEY};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DataKeyCommand {
    /// Step 1: append a new key to DIR/data.key; it only opens (the
    /// primary, the first line, still seals).
    Add {
        /// The CA directory `pki init` wrote (or a server's --pki-dir).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Step 2, once every server has the added key: make the newest key
    /// the primary (it seals from now on); the previous one still opens.
    Promote {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Step 4, after `berth secret rekey` re-sealed everything: drop every
    /// key but the primary.
    Retire {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the ids of the keys in DIR/data.key, primary first (8 hex
    /// digits of a hash, never the keys), to compare servers' files.
    Show {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// What every rotation step asks next: the file on every server, then a
/// restart of each, one at a time.
fn distribute(dir: &Path) {
    println!(
        "next: give every server this file, by running `berthd pki issue --dir {dir} ...` for it again or by copying {file} to its --pki-dir (mode 0600), then reload (`systemctl reload berthd`, SIGHUP) or restart the servers one at a time (each back in `berth server list` before the next)",
        dir = dir.display(),
        file = dir.join(DATA_KEY).display(),
    );
}

fn describe(ring: &DataKey) -> String {
    let ids = ring.ids();
    match ids.split_first() {
        Some((primary, [])) => format!("primary {primary}"),
        Some((primary, others)) => {
            format!("primary {primary}, opening also with {}", others.join(", "))
        }
        None => "no key".to_string(),
    }
}

pub fn run(command: DataKeyCommand) -> anyhow::Result<()> {
    match command {
        DataKeyCommand::Add { dir } => {
            let ring = datakey::add(&dir)?;
            println!("added a data key: {}", describe(&ring));
            distribute(&dir);
            println!(
                "then: `berthd pki data-key promote --dir {}`",
                dir.display()
            );
        }
        DataKeyCommand::Promote { dir } => {
            let ring = datakey::promote(&dir)?;
            println!("promoted the newest data key: {}", describe(&ring));
            println!("(only once every server was restarted with the file `add` wrote: a server without the new key cannot open what it seals)");
            distribute(&dir);
            println!(
                "then: `berth secret rekey` (again until it re-seals nothing), and `berthd pki data-key retire --dir {}`",
                dir.display()
            );
        }
        DataKeyCommand::Retire { dir } => {
            let (ring, dropped) = datakey::retire(&dir)?;
            if dropped == 0 {
                println!("nothing to retire: {}", describe(&ring));
                return Ok(());
            }
            println!("retired {dropped} data key(s): {}", describe(&ring));
            println!("(only after `berth secret rekey` re-sealed nothing and skipped nothing: a value still sealed with a retired key no longer opens)");
            distribute(&dir);
        }
        DataKeyCommand::Show { dir } => {
            println!("{}", describe(&datakey::load(&dir)?));
        }
    }
    Ok(())
}
