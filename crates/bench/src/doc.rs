//! Rewrites one benchmark's section of `docs/benchmarks.md`, keeping the
//! rest of the file as it is.

use std::path::Path;

use anyhow::{Context, Result};

const INTRO: &str = "# Benchmarks

Each section is written by the benchmark that measured it, from the samples
of one run, with the machine, the date and the command to reproduce it;
rerun a benchmark to refresh its section. Each benchmark owns the section
between its `<!-- NAME:begin -->` and `<!-- NAME:end -->` comments and
rewrites only that section; edit the text outside the markers freely.
";

pub fn begin_marker(name: &str) -> String {
    format!("<!-- {name}:begin -->")
}

pub fn end_marker(name: &str) -> String {
    format!("<!-- {name}:end -->")
}

/// `existing` with the section `name` replaced by `body` (or appended).
pub fn splice(existing: Option<&str>, name: &str, body: &str) -> String {
    let begin = begin_marker(name);
    let end = end_marker(name);
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    let Some(text) = existing else {
        return format!("{INTRO}\n{block}\n");
    };
    if let Some(start) = text.find(&begin) {
        if let Some(rel) = text[start..].find(&end) {
            let stop = start + rel + end.len();
            return format!("{}{block}{}", &text[..start], &text[stop..]);
        }
    }
    let mut out = text.trim_end().to_string();
    out.push_str("\n\n");
    out.push_str(&block);
    out.push('\n');
    out
}

pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading it"),
    };
    let updated = splice(existing.as_deref(), name, body);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).context("creating its directory")?;
    // Written next to it, then renamed over it: never half a file.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).context("creating a temp file")?;
    std::io::Write::write_all(&mut tmp, updated.as_bytes()).context("writing")?;
    // A temp file is private (0600); the doc keeps its mode or gets 0644.
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions(),
        Err(_) => std::os::unix::fs::PermissionsExt::from_mode(0o644),
    };
    tmp.as_file()
        .set_permissions(mode)
        .context("setting permissions")?;
    tmp.persist(path).context("renaming into place")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_file_gets_intro_and_section() {
        let out = splice(None, "raft", "body\n");
        assert!(out.starts_with("# Benchmarks"));
        assert!(out.contains("<!-- raft:begin -->\nbody\n<!-- raft:end -->"));
    }

    #[test]
    fn only_own_section_is_replaced() {
        let text = "# B\n\nintro\n\n<!-- other:begin -->\nx\n<!-- other:end -->\n\n<!-- raft:begin -->\nold\n<!-- raft:end -->\n\ntail\n";
        let out = splice(Some(text), "raft", "new");
        assert_eq!(
            out,
            "# B\n\nintro\n\n<!-- other:begin -->\nx\n<!-- other:end -->\n\n<!-- raft:begin -->\nnew\n<!-- raft:end -->\n\ntail\n"
        );
    }

    #[test]
    fn missing_section_is_appended() {
        let out = splice(Some("# B\nintro\n"), "raft", "new");
        assert_eq!(
            out,
            "# B\nintro\n\n<!-- raft:begin -->\nnew\n<!-- raft:end -->\n"
        );
    }
}
