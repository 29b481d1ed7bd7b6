//! `ip -batch` and `bridge -batch`: many iproute2 changes in one process, optionally inside a
//! named netns, and `ip -j` queries.
//!
//! `ip -n NS -batch -` applies one command per line inside NS and stops at the first failure,
//! printing `Command failed -:LINE`; we turn that back into the line's text, so the error reads
//! like the command a learner would have typed. With `-force` it goes on past failures, which
//! is what removing entries that may already be gone wants.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{binaries, Error, Result};

/// Run `lines` (each an `ip` command without the leading `ip`) in `netns` (or the root
/// namespace for `None`, used only to add and delete named namespaces).
pub fn batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    run_batch("ip", netns, lines, false)
}

/// Like [`batch`] but for `bridge` (FDB entries).
pub fn bridge_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    run_batch("bridge", netns, lines, false)
}

/// `ip -force -batch`: apply every line, ignoring failures (for deleting what may be gone).
pub fn batch_forced(program: &str, netns: Option<&str>, lines: &[String]) {
    let _ = run_batch(program, netns, lines, true);
}

/// `ip -j ARGS…` in `netns`, parsed.
pub fn query(netns: Option<&str>, args: &[&str]) -> Result<serde_json::Value> {
    let ip = binaries::find(binaries::IP)?;
    let mut command = Command::new(&ip);
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    command.arg("-j").args(args);
    let shown = format!("ip -j {}", args.join(" "));
    let output = command.output().map_err(|source| Error::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(Error::CommandFailed {
            command: shown,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|e| Error::CommandFailed {
        command: shown,
        stderr: format!("unreadable JSON: {e}"),
    })
}

fn run_batch(program: &str, netns: Option<&str>, lines: &[String], force: bool) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let ip = binaries::find(binaries::Requirement {
        program: if program == "bridge" { "bridge" } else { "ip" },
        package: "iproute2",
    })?;
    let mut command = Command::new(&ip);
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    if force {
        command.arg("-force");
    }
    command.args(["-batch", "-"]);
    let shown = match netns {
        Some(ns) => format!("{program} -n {ns} -batch -"),
        None => format!("{program} -batch -"),
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
                Some(ns) => format!("{program} -n {ns} {line}"),
                None => format!("{program} {line}"),
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
