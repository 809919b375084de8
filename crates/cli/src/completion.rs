//! `berth completion` and `berth man`: shell completions and manual pages
//! made from the same clap definitions that parse the command line, so
//! they never disagree with it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::args::{Cli, Command};

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write a page for every command (berth.1, berth-task.1,
    /// berth-task-list.1, ...) into this directory, made if missing,
    /// instead of printing berth(1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Whether the command is made from the command line alone, needing
/// neither a server nor the config file (a broken config must not stop
/// `berth completion bash` in a package build).
pub fn is_offline(command: &Command) -> bool {
    matches!(command, Command::Completion(_) | Command::Man(_))
}

/// The completion script for `shell`, to source or to install (e.g. as
/// /usr/share/bash-completion/completions/berth).
pub fn completion(args: &CompletionArgs) -> anyhow::Result<String> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "berth", &mut script);
    String::from_utf8(script).context("the completion script is not UTF-8")
}

/// berth(1) as roff, or with `--dir` every page written there and a line
/// saying how many.
pub fn man(args: &ManArgs) -> anyhow::Result<String> {
    // Built once, so every subcommand knows its full name (berth-task-list)
    // for its page's title and file name; `help` is not a page of its own.
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let Some(dir) = &args.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(root)
            .render(&mut page)
            .context("cannot render the manual page")?;
        return String::from_utf8(page).context("the manual page is not UTF-8");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("--dir {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(root, dir, &mut written)?;
    Ok(format!(
        "wrote {} manual pages to {}\n",
        written.len(),
        dir.display()
    ))
}

fn write_pages(
    command: clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub.clone(), dir, written)?;
    }
    let path = clap_mangen::Man::new(command)
        .generate_to(dir)
        .with_context(|| format!("cannot write a manual page into {}", dir.display()))?;
    written.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn completion_names_a_shell() {
        for (name, shell) in [
            ("bash", Shell::Bash),
            ("zsh", Shell::Zsh),
            ("fish", Shell::Fish),
        ] {
            let Ok(Command::Completion(args)) = parse(&["completion", name]) else {
                panic!("{name}");
            };
            assert_eq!(args.shell, shell);
        }
        assert!(parse(&["completion", "cmd.exe"]).is_err());
        assert!(parse(&["completion"]).is_err());
        assert!(is_offline(&parse(&["completion", "zsh"]).unwrap()));
        assert!(is_offline(&parse(&["man"]).unwrap()));
        assert!(!is_offline(&parse(&["task", "list"]).unwrap()));
    }

    #[test]
    fn completions_know_the_subcommands_and_their_flags() {
        let bash = completion(&CompletionArgs { shell: Shell::Bash }).unwrap();
        assert!(bash.contains("complete -F"), "a bash completion script");
        for word in [
            "tasks-running",
            "services-stable",
            "--all-clusters",
            "--watch",
        ] {
            assert!(bash.contains(word), "bash: {word}");
        }
        let zsh = completion(&CompletionArgs { shell: Shell::Zsh }).unwrap();
        assert!(zsh.starts_with("#compdef berth"), "{}", &zsh[..40]);
        let fish = completion(&CompletionArgs { shell: Shell::Fish }).unwrap();
        assert!(fish.contains("complete -c berth"), "a fish script");
        assert!(fish.contains("wide"), "-o values are completed");
    }

    #[test]
    fn man_prints_berth_1_or_writes_a_page_per_command() {
        let page = man(&ManArgs { dir: None }).unwrap();
        assert!(page.contains(".TH berth 1"), "{}", &page[..200]);
        assert!(page.contains("BERTH_ENDPOINT"), "environment documented");

        let dir = tempfile::tempdir().unwrap();
        let pages = dir.path().join("man1");
        let said = man(&ManArgs {
            dir: Some(pages.clone()),
        })
        .unwrap();
        for name in [
            "berth.1",
            "berth-task.1",
            "berth-task-list.1",
            "berth-wait-tasks-running.1",
            "berth-auth-token-revoke.1",
        ] {
            assert!(pages.join(name).is_file(), "{name}");
        }
        assert!(!pages.join("berth-help.1").exists());
        let count = std::fs::read_dir(&pages).unwrap().count();
        assert_eq!(
            said,
            format!("wrote {count} manual pages to {}\n", pages.display())
        );
        let list = std::fs::read_to_string(pages.join("berth-task-list.1")).unwrap();
        assert!(list.contains("all\\-clusters"), "{list}");
    }
}
