//! The shim's side of `kubectl attach`: a Unix socket, `<container dir>/attach.sock`, on which
//! every connected client gets the container's output from then on, and sends it input.
//!
//! Both directions carry frames, `[channel u8][length u32 BE][bytes]`:
//! shim → client 1 stdout, 2 stderr; client → shim 0 stdin, 4 resize (columns and rows, two
//! u16 BE), 255 "my stdin ended". The container's stdin is a pipe kept open for its life when
//! it has `stdin: true`, or the pty's master when it has `tty: true`; with `stdinOnce` the
//! pipe is closed when the first client's stdin ends, as the CRI does.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The attach socket in a container's directory.
pub const ATTACH_SOCKET: &str = "attach.sock";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The clients attached to a container's output.
pub type Attached = Arc<Mutex<Vec<UnixStream>>>;

/// Where the container's input goes.
pub enum Input {
    None,
    Pipe(std::process::ChildStdin),
    /// The pty master (writes are keystrokes; resizes apply to it).
    Terminal(File),
}

/// One frame of the attach protocol.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(5 + data.len());
    frame.push(channel);
    frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

/// A resize frame's payload.
pub fn size(columns: u16, rows: u16) -> [u8; 4] {
    let (c, r) = (columns.to_be_bytes(), rows.to_be_bytes());
    [c[0], c[1], r[0], r[1]]
}

/// Send `data` to every attached client, forgetting those that left.
pub fn broadcast(attached: &Mutex<Vec<UnixStream>>, channel: u8, data: &[u8]) {
    if let Ok(mut clients) = attached.lock() {
        if clients.is_empty() {
            return;
        }
        let frame = frame(channel, data);
        clients.retain_mut(|client| client.write_all(&frame).is_ok());
    }
}

fn read_frame(client: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    client.read_exact(&mut header).ok()?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut data = vec![0u8; length.min(1 << 20)];
    client.read_exact(&mut data).ok()?;
    Some((header[0], data))
}

fn resize(terminal: &File, data: &[u8]) {
    let [c0, c1, r0, r1] = data else { return };
    let size = nix::libc::winsize {
        ws_row: u16::from_be_bytes([*r0, *r1]),
        ws_col: u16::from_be_bytes([*c0, *c1]),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    unsafe {
        nix::libc::ioctl(
            terminal.as_raw_fd(),
            nix::libc::TIOCSWINSZ,
            &size as *const nix::libc::winsize,
        );
    }
}

/// Accept attach clients on `dir`'s socket until the shim ends.
pub fn serve(dir: &Path, attached: Attached, input: Input, stdin_once: bool) {
    let path = dir.join(ATTACH_SOCKET);
    let _ = std::fs::remove_file(&path);
    let Ok(listener) = UnixListener::bind(&path) else {
        return;
    };
    let input = Arc::new(Mutex::new(input));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if let Ok(output) = client.try_clone() {
                if let Ok(mut list) = attached.lock() {
                    list.push(output);
                }
            }
            let input = input.clone();
            std::thread::spawn(move || {
                let mut client = client;
                while let Some((channel, data)) = read_frame(&mut client) {
                    let Ok(mut guard) = input.lock() else { return };
                    // Whether the container's stdin is to be closed now.
                    let close = match (channel, &mut *guard) {
                        (STDIN, Input::Pipe(pipe)) => {
                            pipe.write_all(&data).and_then(|_| pipe.flush()).is_err()
                        }
                        (STDIN, Input::Terminal(master)) => {
                            let _ = master.write_all(&data);
                            false
                        }
                        (RESIZE, Input::Terminal(master)) => {
                            resize(master, &data);
                            false
                        }
                        (CLOSE, Input::Pipe(_)) => stdin_once,
                        _ => false,
                    };
                    if close {
                        *guard = Input::None;
                    }
                }
                // A client that left without saying so ends its stdin too.
                if stdin_once {
                    if let Ok(mut guard) = input.lock() {
                        if matches!(*guard, Input::Pipe(_)) {
                            *guard = Input::None;
                        }
                    }
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_channel_and_length() {
        assert_eq!(frame(STDOUT, b"hi"), vec![1, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(size(80, 24), [0, 80, 0, 24]);
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&frame(RESIZE, &size(100, 40))).unwrap();
        assert_eq!(read_frame(&mut b), Some((RESIZE, vec![0, 100, 0, 40])));
    }
}
