//! The channel protocols of Kubernetes' streaming API over WebSocket, as the kubelet and the
//! API server speak them for exec, attach and port-forward.
//!
//! Every WebSocket message is one channel byte and then data. Exec and attach use
//! `v4.channel.k8s.io` (the Python client) and `v5.channel.k8s.io` (kubectl 1.32, kube-rs):
//! 0 stdin, 1 stdout, 2 stderr, 3 error (a `metav1.Status` in JSON, the last thing sent),
//! 4 resize (`{"Width":…,"Height":…}`). v5 adds channel 255: `[255, n]` says the client
//! closed channel `n` (its stdin ended), which v4 cannot say.
//!
//! Port-forward over WebSocket (`portforward.k8s.io`, `v4.channel.k8s.io`) gives the i-th
//! requested port the channels 2i (data) and 2i+1 (error); the first message the server sends
//! on each starts with the port, two bytes little-endian.

/// What exec and attach speak, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V5,
    V4,
}

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: the client closed the channel named by the next byte.
pub const CLOSE: u8 = 255;

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
        }
    }

    /// The newest protocol both sides speak, from a `Sec-WebSocket-Protocol` request header.
    pub fn negotiate(offered: &str) -> Option<Protocol> {
        let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
        [Protocol::V5, Protocol::V4]
            .into_iter()
            .find(|p| offered.contains(&p.name()))
    }
}

/// A message of the client's, by channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    Resize {
        width: u16,
        height: u16,
    },
    /// v5: the client will send no more on this channel.
    Closed(u8),
    /// Empty, malformed, or for a channel the server only writes.
    Ignored,
}

/// Decode one message from the client.
pub fn parse(protocol: Protocol, message: &[u8]) -> Incoming<'_> {
    match message.split_first() {
        Some((&STDIN, data)) => Incoming::Stdin(data),
        Some((&RESIZE, data)) => {
            let Ok(size) = serde_json::from_slice::<serde_json::Value>(data) else {
                return Incoming::Ignored;
            };
            let field = |name: &str| size[name].as_u64().and_then(|v| u16::try_from(v).ok());
            match (field("Width"), field("Height")) {
                (Some(width), Some(height)) => Incoming::Resize { width, height },
                _ => Incoming::Ignored,
            }
        }
        Some((&CLOSE, [channel, ..])) if protocol == Protocol::V5 => Incoming::Closed(*channel),
        _ => Incoming::Ignored,
    }
}

/// One message for the client: the channel byte, then the data.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    message
}

/// The error channel's last word when the command ended with 0.
pub fn success_status() -> Vec<u8> {
    br#"{"metadata":{},"status":"Success"}"#.to_vec()
}

/// The error channel's last word when the command ended with a non-zero code, as the CRI
/// streaming server writes it; clients read the code from the `ExitCode` cause.
pub fn exit_code_status(argv: &[String], code: i32) -> Vec<u8> {
    let message = format!(
        "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
        argv.join(" ")
    );
    format!(
        r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"NonZeroExitCode","details":{{"causes":[{{"reason":"ExitCode","message":"{code}"}}]}}}}"#,
        serde_json::Value::from(message)
    )
    .into_bytes()
}

/// The error channel's last word when the command could not run (an InternalError, 500).
pub fn internal_error_status(error: &str) -> Vec<u8> {
    format!(
        r#"{{"metadata":{{}},"status":"Failure","message":{},"reason":"InternalError","details":{{"causes":[{{"message":{}}}]}},"code":500}}"#,
        serde_json::Value::from(format!("Internal error occurred: {error}")),
        serde_json::Value::from(error)
    )
    .into_bytes()
}

/// Port-forward over WebSocket: the data and error channels of the `index`-th port.
pub fn port_channels(index: usize) -> (u8, u8) {
    ((index * 2) as u8, (index * 2 + 1) as u8)
}

/// The first message on a port-forward channel: the channel, then the port (little-endian).
pub fn port_header(channel: u8, port: u16) -> Vec<u8> {
    frame(channel, &port.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_protocol_both_speak_is_chosen() {
        let kubectl = "v5.channel.k8s.io, v4.channel.k8s.io, v3.channel.k8s.io, v2.channel.k8s.io, channel.k8s.io";
        assert_eq!(Protocol::negotiate(kubectl), Some(Protocol::V5));
        assert_eq!(Protocol::negotiate("v4.channel.k8s.io"), Some(Protocol::V4));
        assert_eq!(Protocol::negotiate("channel.k8s.io"), None);
    }

    #[test]
    fn client_messages_decode_by_channel() {
        assert_eq!(parse(Protocol::V5, b"\x00hello"), Incoming::Stdin(b"hello"));
        assert_eq!(
            parse(Protocol::V4, b"\x04{\"Width\":80,\"Height\":24}"),
            Incoming::Resize {
                width: 80,
                height: 24
            }
        );
        assert_eq!(parse(Protocol::V5, &[255, 0]), Incoming::Closed(0));
        // v4 has no close signal; 255 is just an unknown channel there.
        assert_eq!(parse(Protocol::V4, &[255, 0]), Incoming::Ignored);
        assert_eq!(parse(Protocol::V5, b"\x04not json"), Incoming::Ignored);
        assert_eq!(parse(Protocol::V5, b""), Incoming::Ignored);
    }

    #[test]
    fn frames_start_with_their_channel() {
        assert_eq!(frame(STDOUT, b"out"), b"\x01out");
        assert_eq!(frame(ERROR, b""), b"\x03");
        assert_eq!(port_channels(0), (0, 1));
        assert_eq!(port_channels(2), (4, 5));
        assert_eq!(port_header(2, 8080), vec![2, 0x90, 0x1f]);
    }

    #[test]
    fn exit_codes_are_reported_as_kubernetes_does() {
        let argv = ["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(
            String::from_utf8(exit_code_status(&argv, 3)).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(
            success_status(),
            br#"{"metadata":{},"status":"Success"}"#.to_vec()
        );
        let status: serde_json::Value =
            serde_json::from_slice(&internal_error_status("no \"such\" file")).unwrap();
        assert_eq!(status["reason"], "InternalError");
        assert_eq!(status["code"], 500);
        assert_eq!(
            status["details"]["causes"][0]["message"],
            "no \"such\" file"
        );
    }
}
