//! `knetsim-shim --lab <lab> --container-dir <dir>` (also `knetsim shim`): the parent of one
//! container process, as containerd-shim is. It joins the container to its pod's namespaces, writes
//! the CRI log (`<RFC 3339 time> stdout|stderr F <line>`, the format `kubectl logs` reads on a real
//! node), and records the process's pid and, when it ends, its exit, so the kubelet can be
//! restarted at any time without losing either.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::runtime::{read_container, ExitRecord};

pub mod attach;
pub use attach::ATTACH_SOCKET;

/// A container's view: the pause process's network, UTS and IPC namespaces, and its own
/// mounts (volumes) in a new mount namespace.
pub fn container_namespaces(
    pause_pid: u32,
    mounts: &[crate::runtime::Mount],
    workdir: Option<&Path>,
) -> kernel::Result<kernel::netns::Enter> {
    container_namespaces_with_layers(pause_pid, mounts, workdir, &[])
}

/// [`container_namespaces`], with the overlays that hold mount points missing on the machine
/// (see [`crate::mount_points`]).
pub fn container_namespaces_with_layers(
    pause_pid: u32,
    mounts: &[crate::runtime::Mount],
    workdir: Option<&Path>,
    layers: &[crate::mount_points::Layer],
) -> kernel::Result<kernel::netns::Enter> {
    let ns = |kind: &str| format!("/proc/{pause_pid}/ns/{kind}");
    let mut enter =
        kernel::netns::Enter::from_paths(Path::new(&ns("net")), Some(Path::new(&ns("uts"))))?
            .with_ipc(Path::new(&ns("ipc")))?;
    for layer in layers {
        enter = enter.with_overlay(&layer.target, &layer.upper, &layer.work)?;
    }
    for mount in mounts {
        enter = enter.with_bind(&mount.host_path, &mount.container_path, mount.readonly)?;
    }
    if let Some(dir) = workdir {
        enter = enter.with_workdir(dir)?;
    }
    Ok(enter)
}

/// Every namespace of a running container process, mounts included (for exec).
pub fn process_namespaces(pid: u32) -> kernel::Result<kernel::netns::Enter> {
    let ns = |kind: &str| format!("/proc/{pid}/ns/{kind}");
    kernel::netns::Enter::from_paths(Path::new(&ns("net")), Some(Path::new(&ns("uts"))))?
        .with_ipc(Path::new(&ns("ipc")))?
        .joining_mounts(Path::new(&ns("mnt")))
}

/// The environment a container starts with: what an image would give, then its own.
pub(crate) fn container_env(hostname: &str, env: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("HOSTNAME".to_string(), hostname.to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    all.extend(env.iter().cloned());
    all
}

/// Run the container described in `dir` inside the sandbox held by `pause_pid`.
pub fn run(dir: &Path, pause_pid: u32, hostname: &str) -> anyhow::Result<()> {
    let result = start_and_wait(dir, pause_pid, hostname);
    if let Err(error) = &result {
        // The runtime reports this as the reason the container did not start.
        let _ = write_atomic(&dir.join("shim.error"), format!("{error:#}\n").as_bytes());
        let exit = ExitRecord {
            exit_code: 128,
            signal: None,
            finished_at: crate::now_ms(),
        };
        let _ = write_atomic(&dir.join("exit.json"), &serde_json::to_vec(&exit)?);
    }
    result
}

fn start_and_wait(dir: &Path, pause_pid: u32, hostname: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let container = read_container(dir)?;
    let config = &container.config;
    let layers = crate::mount_points::prepare(
        &config.mounts,
        config.working_dir.as_deref(),
        &dir.join("mount-points"),
    )
    .context("making the container's mount points")?;
    let enter = container_namespaces_with_layers(
        pause_pid,
        &config.mounts,
        config.working_dir.as_deref(),
        &layers,
    )?;
    if let Some(parent) = config.log_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log_path)
        .with_context(|| format!("opening {}", config.log_path.display()))?;
    let log = Arc::new(Mutex::new(log));

    let mut command = std::process::Command::new(&config.argv[0]);
    command
        .args(&config.argv[1..])
        .env_clear()
        .envs(container_env(hostname, &config.env));
    let attached: attach::Attached = Arc::default();
    let mut outputs: Vec<(Box<dyn Read + Send>, &str)> = Vec::new();
    let input = if config.tty {
        let pty = nix::pty::openpty(None, None).context("opening a pty for the container")?;
        command
            .stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave));
        // SAFETY: only system calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                enter.enter()?;
                // A session (so also a process group) of its own, the pty its terminal.
                nix::unistd::setsid()?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        outputs.push((
            Box::new(std::fs::File::from(pty.master.try_clone()?)),
            "stdout",
        ));
        attach::Input::Terminal(std::fs::File::from(pty.master))
    } else {
        command
            .stdin(if config.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A process group of its own: when the main process ends, what it left behind is
            // killed, as the end of a container's PID namespace kills everything in it.
            .process_group(0);
        // SAFETY: `enter` makes only system calls.
        unsafe {
            command.pre_exec(move || enter.enter());
        }
        attach::Input::None
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{}`", config.argv[0]))?;
    // The parent's copies of the pty's slave went with `command`'s Stdio: drop it now, so the
    // master reads end of file (EIO) when the container is gone.
    drop(command);
    write_atomic(
        &dir.join("pid"),
        format!("{} {}\n", child.id(), crate::now_ms()).as_bytes(),
    )?;
    let input = match (input, child.stdin.take()) {
        (attach::Input::None, Some(pipe)) => attach::Input::Pipe(pipe),
        (input, _) => input,
    };
    attach::serve(dir, attached.clone(), input, config.stdin_once);
    if let Some(stdout) = child.stdout.take() {
        outputs.push((Box::new(stdout), "stdout"));
    }
    if let Some(stderr) = child.stderr.take() {
        outputs.push((Box::new(stderr), "stderr"));
    }
    let copiers: Vec<_> = outputs
        .into_iter()
        .map(|(stream, name)| {
            let (log, attached) = (log.clone(), attached.clone());
            std::thread::spawn(move || copy_output(stream, name, &log, &attached))
        })
        .collect();
    let status = child.wait()?;
    // Leftovers (a shell's `sleep`) would hold the log pipes open forever.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    for copier in copiers {
        let _ = copier.join();
    }
    use std::os::unix::process::ExitStatusExt;
    let exit = ExitRecord {
        exit_code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        signal: status.signal(),
        finished_at: crate::now_ms(),
    };
    write_atomic(&dir.join("exit.json"), &serde_json::to_vec(&exit)?)?;
    Ok(())
}

/// Copy one stream to the attached clients as it comes, and into the CRI log a line at a time
/// (a pty's end of file is an EIO: any error ends the copy).
fn copy_output(
    mut stream: Box<dyn Read + Send>,
    name: &str,
    log: &Mutex<std::fs::File>,
    attached: &Mutex<Vec<std::os::unix::net::UnixStream>>,
) {
    let channel = if name == "stdout" {
        attach::STDOUT
    } else {
        attach::STDERR
    };
    let mut buffer = [0u8; 16 * 1024];
    let mut line = Vec::new();
    let write_log = |text: &[u8], tag: &str| {
        let entry = cri_log_line(&now_rfc3339(), name, tag, text);
        if let Ok(mut file) = log.lock() {
            let _ = file.write_all(&entry);
        }
    };
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        attach::broadcast(attached, channel, &buffer[..n]);
        line.extend_from_slice(&buffer[..n]);
        while let Some(end) = line.iter().position(|b| *b == b'\n') {
            let rest = line.split_off(end + 1);
            write_log(&line[..end], "F");
            line = rest;
        }
    }
    if !line.is_empty() {
        write_log(&line, "P"); // the stream ended mid-line
    }
}

/// `2026-11-23T20:07:22.192079000Z stdout F hello`
pub fn cri_log_line(time: &str, stream: &str, tag: &str, text: &[u8]) -> Vec<u8> {
    let mut entry = format!("{time} {stream} {tag} ").into_bytes();
    entry.extend_from_slice(text);
    entry.push(b'\n');
    entry
}

/// The current time as RFC 3339 with nanoseconds, in UTC.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

/// `secs` since the Unix epoch (plus `nanos`) as RFC 3339 in UTC, with nanoseconds.
pub fn rfc3339(secs: u64, nanos: u32) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        nanos
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_in_the_cri_format() {
        let line = cri_log_line("2026-11-23T20:07:22.192079000Z", "stdout", "F", b"hello");
        assert_eq!(line, b"2026-11-23T20:07:22.192079000Z stdout F hello\n");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_nanoseconds() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_464_442, 192_079_000),
            "2026-11-23T20:07:22.192079000Z"
        );
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-23T20:07:22.192079000Z".len(), "{now}");
        assert!(
            now.starts_with("20") && now.ends_with('Z') && &now[10..11] == "T",
            "{now}"
        );
    }

    #[test]
    fn image_environment_comes_first_and_the_pod_can_override_it() {
        let env = container_env("web", &[("PATH".into(), "/custom".into())]);
        assert_eq!(env[1], ("HOSTNAME".to_string(), "web".to_string()));
        assert_eq!(
            env.last().unwrap(),
            &("PATH".to_string(), "/custom".to_string())
        );
    }
}
