//! `--watch`: showing a list or a description again and again until
//! interrupted.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use berth_client::time::now_ms;
use berth_client::ClientError;
use berth_types::time::rfc3339;
use clap::Args;

use crate::output::Format;

/// How often a watched view is fetched again.
pub const EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct Watch {
    /// Show it again every 2s until interrupted: redrawn in place on a
    /// terminal, printed again below otherwise (YAML as a stream of
    /// documents, JSON as one document after another).
    #[arg(short, long)]
    pub watch: bool,
}

/// What `draw` makes, once, or with `--watch` every [`EVERY`] until the
/// process is interrupted or its reader goes away.
pub async fn run<F, Fut>(watch: Watch, format: Format, mut draw: F) -> anyhow::Result<String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    if !watch.watch {
        return draw().await;
    }
    let terminal = io::stdout().is_terminal();
    let mut first = true;
    loop {
        match draw().await {
            Ok(text) => {
                let header = format!(
                    "every {}s, as of {}; Ctrl-C stops",
                    EVERY.as_secs(),
                    rfc3339(now_ms())
                );
                if !write_stdout(&frame(format, terminal, first, &header, &text))? {
                    return Ok(String::new());
                }
                first = false;
            }
            // Servers out of reach for a moment are no reason to stop
            // watching: say so and look again.
            Err(err) if is_transient(&err) => crate::warn(&crate::errors::error_lines(&err)),
            Err(err) => return Err(err),
        }
        tokio::time::sleep(EVERY).await;
    }
}

fn is_transient(err: &anyhow::Error) -> bool {
    err.downcast_ref::<ClientError>()
        .is_some_and(ClientError::is_transient)
}

/// What one showing writes. On a terminal: back to the top-left corner,
/// each line cleared to its end and whatever is left below cleared, so the
/// view is redrawn in place without flicker (the first showing clears the
/// screen). Elsewhere the text as it is, one showing after another.
pub fn frame(format: Format, terminal: bool, first: bool, header: &str, text: &str) -> String {
    if terminal {
        let mut out = String::from(if first { "\x1b[2J\x1b[H" } else { "\x1b[H" });
        for line in header.lines().chain([""]).chain(text.lines()) {
            out.push_str(line);
            out.push_str("\x1b[K\n");
        }
        out.push_str("\x1b[J");
        return out;
    }
    match format {
        Format::Yaml => format!("---\n{text}"),
        Format::Json => text.to_string(),
        Format::Table | Format::Wide if first => text.to_string(),
        Format::Table | Format::Wide => format!("\n{text}"),
    }
}

/// `false` when the reader has gone (`berth task list -w | head`): time to
/// stop quietly.
fn write_stdout(text: &str) -> anyhow::Result<bool> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_the_view_redrawn_in_place() {
        let first = frame(Format::Table, true, true, "every 2s", "A  B\n1  2\n");
        assert_eq!(
            first,
            "\x1b[2J\x1b[Hevery 2s\x1b[K\n\x1b[K\nA  B\x1b[K\n1  2\x1b[K\n\x1b[J"
        );
        let again = frame(Format::Json, true, false, "every 2s", "[]\n");
        assert_eq!(again, "\x1b[Hevery 2s\x1b[K\n\x1b[K\n[]\x1b[K\n\x1b[J");
    }

    #[test]
    fn elsewhere_showings_follow_one_another_without_escape_codes() {
        let table = "A  B\n1  2\n";
        assert_eq!(frame(Format::Table, false, true, "h", table), table);
        assert_eq!(
            frame(Format::Wide, false, false, "h", table),
            "\nA  B\n1  2\n"
        );
        assert_eq!(frame(Format::Json, false, false, "h", "[]\n"), "[]\n");
        let yaml = frame(Format::Yaml, false, false, "h", "- a: 1\n");
        assert_eq!(yaml, "---\n- a: 1\n");
        for format in [Format::Table, Format::Wide, Format::Json, Format::Yaml] {
            assert!(!frame(format, false, false, "h", table).contains('\x1b'));
        }
    }

    fn parse(args: &[&str]) -> Result<crate::args::Command, clap::Error> {
        use clap::Parser;
        crate::args::Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn lists_and_descriptions_take_watch_and_lists_all_clusters() {
        use crate::args::{Command, InstanceCommand, ServiceCommand, TaskCommand};
        let on = Watch { watch: true };
        let Ok(Command::Task(TaskCommand::List(args))) =
            parse(&["task", "list", "--all-clusters", "-w"])
        else {
            panic!("task list");
        };
        assert!(args.all_clusters);
        assert_eq!(args.watch, on);
        assert!(matches!(
            parse(&["task", "describe", "3f2a", "--watch"]),
            Ok(Command::Task(TaskCommand::Describe { watch, .. })) if watch == on
        ));
        assert!(matches!(
            parse(&["instance", "list", "--all-clusters", "--watch"]),
            Ok(Command::Instance(InstanceCommand::List { all_clusters: true, watch, .. }))
                if watch == on
        ));
        assert!(matches!(
            parse(&["service", "list", "--all-clusters", "--all", "-w"]),
            Ok(Command::Service(ServiceCommand::List { all_clusters: true, all: true, watch, .. }))
                if watch == on
        ));
        assert!(matches!(
            parse(&["service", "describe", "web", "-w"]),
            Ok(Command::Service(ServiceCommand::Describe { watch, .. })) if watch == on
        ));
        assert!(matches!(
            parse(&["service", "list"]),
            Ok(Command::Service(ServiceCommand::List { all_clusters: false, watch, .. }))
                if watch == Watch::default()
        ));
        for list in ["task", "service", "instance"] {
            let err = parse(&[list, "list", "--all-clusters", "--cluster", "prod"]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{list}"
            );
        }
    }

    #[tokio::test]
    async fn without_watch_it_draws_once() {
        let mut calls = 0;
        let text = run(Watch::default(), Format::Table, || {
            calls += 1;
            async { Ok("once\n".to_string()) }
        })
        .await
        .unwrap();
        assert_eq!((text.as_str(), calls), ("once\n", 1));
    }

    #[tokio::test]
    async fn a_lasting_failure_ends_the_watch() {
        let err = run(Watch { watch: true }, Format::Table, || async {
            Err::<String, _>(anyhow::anyhow!("no such task"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "no such task");
    }
}
