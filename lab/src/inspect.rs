//! `knetsim status` and `knetsim logs`: what a learner needs to find their way around a lab.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use crate::paths::LabPaths;
use crate::status::{now_ms, SupervisorStatus};

/// The status report of `lab` as text: clusters, nodes, processes, and how to enter a node.
pub fn status_report(lab: &str) -> anyhow::Result<String> {
    let plan = crate::read_plan(lab)?;
    let paths = LabPaths::new(lab);
    let status = SupervisorStatus::read(&paths.status());
    let mut out = String::new();

    let supervisor = match &status {
        Some(s) if kernel::procs::alive(s.supervisor_pid as i32) => {
            format!("supervisor pid {} (running)", s.supervisor_pid)
        }
        Some(s) => format!(
            "supervisor pid {} NOT RUNNING: processes are not restarted; run `knetsim down --lab {lab}` then `up`",
            s.supervisor_pid
        ),
        None => "supervisor has not reported yet".to_string(),
    };
    out += &format!(
        "lab {lab} · {supervisor} · state {}\n\n",
        paths.root.display()
    );

    let mut clusters = vec![row(&[
        "CLUSTER",
        "NODE NETWORK",
        "GATEWAY",
        "POD NETWORK",
        "SERVICE NETWORK",
    ])];
    for c in &plan.clusters {
        clusters.push(row(&[
            &c.name,
            &c.node_network.to_string(),
            &c.gateway.to_string(),
            &c.pod_network.to_string(),
            &c.service_network.to_string(),
        ]));
    }
    out += &table(&clusters);

    let mut nodes = vec![row(&["NODE", "ROLE", "ADDRESS", "HOSTNAME", "NETNS"])];
    for n in plan.nodes() {
        nodes.push(row(&[
            &n.id(),
            n.role.as_str(),
            &n.address.to_string(),
            &n.hostname,
            &n.netns,
        ]));
    }
    out += "\n";
    out += &table(&nodes);

    let mut processes = vec![row(&[
        "PROCESS",
        "NODE",
        "PID",
        "STATE",
        "RESTARTS",
        "FOR",
        "LAST EXIT",
    ])];
    for p in status.iter().flat_map(|s| s.processes.iter()) {
        processes.push(row(&[
            &p.name,
            &format!("{}/{}", p.cluster, p.node),
            &p.pid
                .map(|pid| pid.to_string())
                .unwrap_or_else(|| "-".into()),
            p.state.as_str(),
            &p.restarts.to_string(),
            &age(now_ms().saturating_sub(p.since_ms)),
            p.last_exit.as_deref().unwrap_or("-"),
        ]));
    }
    out += "\n";
    out += &table(&processes);

    if let Some(node) = plan.nodes().nth(1).or_else(|| plan.nodes().next()) {
        out += &format!(
            "\nOn a node: knetsim exec --lab {lab} {id} -- ip addr   ·   knetsim shell --lab {lab} {id}\n  or: nsenter --net={net} --uts={uts} bash\nLogs: knetsim logs --lab {lab} <node> <process> [-f]   ({logs})\n",
            id = node.id(),
            net = kernel::netns::path(&node.netns).display(),
            uts = paths.uts(&node.cluster, &node.name).display(),
            logs = paths.logs().display(),
        );
    }
    Ok(out)
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart, as kubectl prints them.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        out += line.join("  ").trim_end();
        out += "\n";
    }
    out
}

/// `45s`, `3m12s`, `2h5m`, as kubectl shows ages.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// The log file of `process` on `node_id`, or of the supervisor when `node_id` is `supervisor`.
pub fn log_path(lab: &str, node_id: &str, process: Option<&str>) -> anyhow::Result<PathBuf> {
    let paths = LabPaths::new(lab);
    if node_id == "supervisor" {
        return Ok(paths.supervisor_log());
    }
    let plan = crate::read_plan(lab)?;
    let node = plan.node(node_id).map_err(anyhow::Error::msg)?;
    let Some(process) = process else {
        anyhow::bail!("which process on {node_id}? e.g. `knetsim logs {node_id} etcd`");
    };
    let path = paths.process_log(&node.cluster, &node.name, process);
    if !path.exists() {
        let prefix = format!("{}-{}-", node.cluster, node.name);
        let mut known: Vec<String> = std::fs::read_dir(paths.logs())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| Some(f.strip_prefix(&prefix)?.strip_suffix(".log")?.to_string()))
            .collect();
        known.sort();
        anyhow::bail!(
            "no log for `{process}` on {node_id}; processes with logs there: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(" ")
            }
        );
    }
    Ok(path)
}

/// Copy a log to stdout; with `follow`, keep copying what is appended (like `tail -f`).
pub fn print_log(path: &PathBuf, follow: bool) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut stdout = std::io::stdout().lock();
    let mut buffer = Vec::new();
    let mut offset = 0u64;
    loop {
        buffer.clear();
        file.read_to_end(&mut buffer)?;
        offset += buffer.len() as u64;
        stdout.write_all(&buffer)?;
        stdout.flush()?;
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        // A log that shrank was truncated or replaced: start over from its beginning.
        if std::fs::metadata(path)
            .map(|m| m.len() < offset)
            .unwrap_or(false)
        {
            file = std::fs::File::open(path)?;
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&[row(&["A", "BB"]), row(&["ccc", "d"])]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(5_400), "5s");
        assert_eq!(age(192_000), "3m12s");
        assert_eq!(age(7_500_000), "2h5m");
    }
}
