//! The CRI's streaming Exec: a command run in a running container's namespaces (network,
//! UTS, IPC and the container's own mount namespace, so it sees the container's volumes), with
//! the container's environment and working directory, as `kubectl exec` expects.
//!
//! With `tty` the command gets a pseudo-terminal: the slave side becomes its stdin, stdout
//! and stderr and its controlling terminal (a new session), and the kubelet keeps the master,
//! which it reads, writes and resizes (`TIOCSWINSZ`) from the client's resize channel.
//! Without a tty the command gets pipes, and stdin only if the client sends one.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{ContainerState, Runtime, RuntimeError};

/// What the client asked for (the CRI's `ExecRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub stdin: bool,
    /// Output the client does not want goes to /dev/null (not a closed pipe).
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A running exec: the process and its ends of the streams.
pub struct ExecProcess {
    pub child: tokio::process::Child,
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// The pty master, for resizing (only with a tty).
    pub terminal: Option<Terminal>,
}

/// The master side of an exec's pseudo-terminal.
pub struct Terminal {
    master: OwnedFd,
}

impl Terminal {
    /// Set the terminal's size, as a resize message from the client asks.
    pub fn resize(&self, columns: u16, rows: u16) -> std::io::Result<()> {
        let size = nix::libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
        let rc = unsafe {
            nix::libc::ioctl(
                self.master.as_raw_fd(),
                nix::libc::TIOCSWINSZ,
                &size as *const nix::libc::winsize,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Runtime {
    /// Start `request.argv` inside running container `id`.
    pub fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecProcess, RuntimeError> {
        let status = self.container_status(id)?;
        let (ContainerState::Running, Some(pid)) = (status.state, status.pid) else {
            return Err(RuntimeError::Invalid(format!(
                "container {id} is not running"
            )));
        };
        let Some((program, args)) = request.argv.split_first() else {
            return Err(RuntimeError::Invalid("no command to execute".into()));
        };
        let sandbox = self.pod_sandbox_status(&status.container.sandbox_id)?;
        let config = &status.container.config;
        let workdir = config
            .working_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"));
        let join = crate::shim::process_namespaces(pid)?.with_workdir(&workdir)?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(crate::shim::container_env(
                &sandbox.config.hostname,
                &config.env,
            ))
            .kill_on_drop(true);
        let cannot_run =
            |e: std::io::Error| RuntimeError::Invalid(format!("cannot run `{program}`: {e}"));
        if request.tty {
            let pty = nix::pty::openpty(None, None)
                .map_err(|e| RuntimeError::Invalid(format!("cannot open a pty: {e}")))?;
            let slave = pty.slave;
            let dup = |fd: &OwnedFd| fd.try_clone().map_err(cannot_run);
            command
                .stdin(Stdio::from(dup(&slave)?))
                .stdout(Stdio::from(dup(&slave)?))
                .stderr(Stdio::from(slave));
            // SAFETY: only system calls between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    join.enter()?;
                    nix::unistd::setsid()?;
                    // The pty (already our stdin) becomes the controlling terminal.
                    if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn().map_err(cannot_run)?;
            let reader = std::fs::File::from(dup(&pty.master)?);
            let writer = std::fs::File::from(dup(&pty.master)?);
            return Ok(ExecProcess {
                child,
                stdin: request
                    .stdin
                    .then(|| Box::new(tokio::fs::File::from_std(writer)) as _),
                stdout: Some(Box::new(tokio::fs::File::from_std(reader))),
                stderr: None,
                terminal: Some(Terminal { master: pty.master }),
            });
        }
        command
            .stdin(if request.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if request.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if request.stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        // SAFETY: `join.enter` makes only system calls.
        unsafe {
            command.pre_exec(move || join.enter());
        }
        let mut child = command.spawn().map_err(cannot_run)?;
        Ok(ExecProcess {
            stdin: child.stdin.take().map(|s| Box::new(s) as _),
            stdout: child.stdout.take().map(|s| Box::new(s) as _),
            stderr: child.stderr.take().map(|s| Box::new(s) as _),
            child,
            terminal: None,
        })
    }

    /// The newest container named `container` of the newest sandbox of `namespace/pod`.
    pub fn find_container(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        let sandbox = self
            .list_pod_sandboxes()
            .into_iter()
            .filter(|s| s.config.namespace == namespace && s.config.name == pod)
            .max_by_key(|s| s.created_at)?;
        self.list_containers()
            .into_iter()
            .filter(|c| {
                c.container.sandbox_id == sandbox.id && c.container.config.name == container
            })
            .map(|c| c.container.id)
            .next_back()
    }
}
