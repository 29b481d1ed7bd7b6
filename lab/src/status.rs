//! What the supervisor tells the rest of the world: `status.json`, rewritten atomically on
//! every change. `up` waits on it, `knetsim status` prints it, a learner can `cat` it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorStatus {
    pub supervisor_pid: u32,
    pub processes: Vec<ProcessStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    pub name: String,
    pub cluster: String,
    pub node: String,
    pub pid: Option<u32>,
    pub state: ProcessState,
    pub restarts: u32,
    /// How the last run ended (`exit status 1`, `signal 9 (SIGKILL)`), if it did.
    pub last_exit: Option<String>,
    /// When the current state began, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessState {
    /// Started, readiness not yet confirmed.
    Running,
    Ready,
    /// Exited; waiting before the next start.
    BackOff,
    /// Could not be started at all (e.g. the binary vanished); retried like a crash.
    Failed,
    Stopped,
}

impl ProcessState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Ready => "ready",
            ProcessState::BackOff => "back-off",
            ProcessState::Failed => "failed",
            ProcessState::Stopped => "stopped",
        }
    }
}

impl ProcessStatus {
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.cluster, self.node, self.name)
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SupervisorStatus {
    /// Read `status.json`; `None` when it is missing or half-written by a crashed writer.
    pub fn read(path: &Path) -> Option<SupervisorStatus> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Write via a temporary file and rename, so readers never see half a document.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)
    }
}
