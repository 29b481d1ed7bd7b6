//! `ip -batch`: many iproute2 changes in one process, optionally inside a named netns.
//!
//! `ip -n NS -batch -` applies one command per line inside NS and stops at the first failure,
//! printing `Command failed -:LINE`; we turn that back into the line's text, so the error reads
//! like the command a learner would have typed.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{binaries, Error, Result};

/// Run `lines` (each an `ip` command without the leading `ip`) in `netns` (or the root
/// namespace for `None`, used only to add and delete named namespaces).
pub fn batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let ip = binaries::find(binaries::IP)?;
    let mut command = Command::new(&ip);
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    command.args(["-batch", "-"]);
    let shown = match netns {
        Some(ns) => format!("ip -n {ns} -batch -"),
        None => "ip -batch -".to_string(),
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: shown.clone(),
            source,
        })?;
    let script = lines.join("\n") + "\n";
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means ip exited early; its stderr below says why.
        let _ = stdin.write_all(script.as_bytes());
    }
    let output = child.wait_with_output().map_err(|source| Error::Spawn {
        command: shown.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::CommandFailed {
        command: failed_line(&stderr, lines)
            .map(|line| match netns {
                Some(ns) => format!("ip -n {ns} {line}"),
                None => format!("ip {line}"),
            })
            .unwrap_or(shown),
        stderr: stderr
            .lines()
            .filter(|l| !l.starts_with("Command failed"))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// Which of `lines` ip reported as failed (`Command failed -:3`), if it said.
fn failed_line<'a>(stderr: &str, lines: &'a [String]) -> Option<&'a str> {
    let number: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Command failed -:"))?
        .trim()
        .parse()
        .ok()?;
    lines.get(number.checked_sub(1)?).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_failed_line() {
        let lines = vec!["link set lo up".to_string(), "addr add x dev y".to_string()];
        let stderr = "Error: any valid prefix is expected rather than \"x\".\nCommand failed -:2\n";
        assert_eq!(failed_line(stderr, &lines), Some("addr add x dev y"));
        assert_eq!(failed_line("garbage", &lines), None);
        assert_eq!(failed_line("Command failed -:0", &lines), None);
    }
}
