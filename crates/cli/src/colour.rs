//! Colour for people at a terminal: status words in tables, and nothing
//! at all for pipes, files or anyone who set NO_COLOR.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Decided once by `main` from the real stdout and environment. Off until
/// then, so renderers called from tests never see escape codes.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether tables may be coloured: only on a terminal, and only when
/// NO_COLOR is unset or empty (as no-color.org defines it) and TERM is not
/// `dumb`, which cannot show escape codes.
pub fn wanted(stdout_is_terminal: bool, no_color: Option<&OsStr>, term: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty) && term.is_none_or(|t| t != "dumb")
}

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// The colour of a status cell, judged by its first word so that
/// `RUNNING (restarts: 2)` is coloured like `RUNNING`: green for what is
/// up and well, red for what ended or broke, yellow for what is on its way.
fn status_colour(cell: &str) -> Option<&'static str> {
    match cell.split_whitespace().next()? {
        "RUNNING" | "ACTIVE" | "COMPLETED" | "HEALTHY" => Some(GREEN),
        "STOPPED" | "FAILED" | "UNHEALTHY" | "DISCONNECTED" | "EXPIRED" | "REVOKED" => Some(RED),
        "PROVISIONING" | "PENDING" | "DEACTIVATING" | "STOPPING" | "DRAINING" | "IN_PROGRESS" => {
            Some(YELLOW)
        }
        _ => None,
    }
}

/// `cell` wrapped in its status colour, or as it is when it has none.
pub fn status(cell: &str) -> String {
    match status_colour(cell) {
        Some(code) => format!("{code}{cell}{RESET}"),
        None => cell.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let some = |s: &'static str| Some(OsStr::new(s));
        assert!(wanted(true, None, some("xterm-256color")));
        assert!(wanted(true, None, None));
        assert!(!wanted(false, None, some("xterm")), "a pipe or a file");
        assert!(!wanted(true, some("1"), some("xterm")), "NO_COLOR=1");
        assert!(
            wanted(true, some(""), some("xterm")),
            "an empty NO_COLOR is unset (no-color.org)"
        );
        assert!(!wanted(true, None, some("dumb")));
    }

    #[test]
    fn status_words_get_their_colour_and_others_none() {
        assert_eq!(status("RUNNING"), "\x1b[32mRUNNING\x1b[0m");
        assert_eq!(
            status("RUNNING (restarts: 2)"),
            "\x1b[32mRUNNING (restarts: 2)\x1b[0m"
        );
        assert_eq!(status("STOPPED"), "\x1b[31mSTOPPED\x1b[0m");
        assert_eq!(status("FAILED"), "\x1b[31mFAILED\x1b[0m");
        assert_eq!(status("PENDING"), "\x1b[33mPENDING\x1b[0m");
        for plain in ["PRIMARY", "INACTIVE", "-", "", "web:3"] {
            assert_eq!(status(plain), plain);
        }
    }

    #[test]
    fn off_unless_main_turns_it_on() {
        assert!(!enabled());
    }
}
