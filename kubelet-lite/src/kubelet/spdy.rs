//! SPDY/3.1 framing, the part `kubectl port-forward` needs: kubectl (client-go over
//! moby/spdystream) upgrades the connection to `SPDY/3.1` and opens two streams per forwarded
//! connection. SPDY/3 draft, section 2: frames are 8-byte headers then payload.
//!
//! ```text
//! control: |1| version(15)=3 | type(16) | flags(8) | length(24) | payload
//! data:    |0| stream-id(31)            | flags(8) | length(24) | data
//! ```
//!
//! Header blocks (in SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams that run across the
//! whole connection, one per direction, each frame's block ending in a sync flush, with the
//! spec's preset dictionary (`spdy3.dict`, section 2.6.10.1). The decoder must see every
//! block, even of frames it ignores, or the stream goes out of step.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The SPDY/3 header compression dictionary, from the spec.
const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");
const VERSION: u16 = 3;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame accepted (kubectl sends far smaller ones).
const MAX_FRAME: usize = 1 << 24;

/// One frame as read, header blocks already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    RstStream {
        stream_id: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// A frame the port-forward server has no use for (SETTINGS, WINDOW_UPDATE, …).
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("not SPDY/3 (version {0})")]
    Version(u16),
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("header block does not decompress: {0}")]
    Zlib(String),
}

/// Reads frames from bytes and writes frames to bytes, keeping both zlib streams.
pub struct Codec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for Codec {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Only fails for a stream already started; this one is new.
        let _ = deflate.set_dictionary(DICTIONARY);
        Codec {
            inflate: Decompress::new(true),
            deflate,
        }
    }
}

fn u24(bytes: &[u8]) -> usize {
    (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2])
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

impl Codec {
    /// The next whole frame at the start of `buffer`, and its length; None if more bytes are
    /// needed.
    pub fn decode(&mut self, buffer: &[u8]) -> Result<Option<(Frame, usize)>, SpdyError> {
        if buffer.len() < 8 {
            return Ok(None);
        }
        let length = u24(&buffer[5..8]);
        if length > MAX_FRAME {
            return Err(SpdyError::TooLarge(length));
        }
        let Some(payload) = buffer.get(8..8 + length) else {
            return Ok(None);
        };
        let flags = buffer[4];
        let fin = flags & FLAG_FIN != 0;
        let first = u32_at(buffer, 0).unwrap_or_default();
        let frame = if first & 0x8000_0000 == 0 {
            Frame::Data {
                stream_id: first,
                fin,
                data: payload.to_vec(),
            }
        } else {
            let version = ((first >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(SpdyError::Version(version));
            }
            let stream_id = u32_at(payload, 0).map(|id| id & 0x7fff_ffff);
            match first as u16 {
                SYN_STREAM => {
                    let (Some(stream_id), Some(block)) = (stream_id, payload.get(10..)) else {
                        return Err(SpdyError::Malformed("SYN_STREAM"));
                    };
                    Frame::SynStream {
                        stream_id,
                        fin,
                        headers: self.decode_headers(block)?,
                    }
                }
                HEADERS | SYN_REPLY => {
                    // Decoded to keep the zlib stream in step; not otherwise needed.
                    self.decode_headers(payload.get(4..).unwrap_or_default())?;
                    Frame::Other
                }
                RST_STREAM => Frame::RstStream {
                    stream_id: stream_id.ok_or(SpdyError::Malformed("RST_STREAM"))?,
                },
                PING => Frame::Ping {
                    id: u32_at(payload, 0).ok_or(SpdyError::Malformed("PING"))?,
                },
                GOAWAY => Frame::GoAway,
                _ => Frame::Other,
            }
        };
        Ok(Some((frame, 8 + length)))
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
            let result =
                self.inflate
                    .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inflate.total_in() - before_in) as usize;
            match result {
                Ok(_) => {}
                // The first block asks for the preset dictionary (after the zlib header).
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            let room_left = out.capacity() > out.len();
            if consumed >= block.len() && room_left {
                return Ok(out);
            }
            let progressed =
                self.inflate.total_in() != before_in || self.inflate.total_out() != before_out;
            if !progressed && room_left {
                return Err(SpdyError::Zlib("truncated header block".into()));
            }
        }
    }

    fn decode_headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        let raw = self.inflate(block)?;
        let malformed = || SpdyError::Malformed("header block");
        let count = u32_at(&raw, 0).ok_or_else(malformed)? as usize;
        let mut at = 4;
        let read = |at: &mut usize| -> Result<String, SpdyError> {
            let len = u32_at(&raw, *at).ok_or_else(malformed)? as usize;
            let bytes = raw.get(*at + 4..*at + 4 + len).ok_or_else(malformed)?;
            *at += 4 + len;
            Ok(String::from_utf8_lossy(bytes).into_owned())
        };
        let mut headers = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let name = read(&mut at)?;
            let value = read(&mut at)?;
            headers.push((name, value));
        }
        Ok(headers)
    }

    fn encode_headers(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for text in [name, value] {
                raw.extend_from_slice(&(text.len() as u32).to_be_bytes());
                raw.extend_from_slice(text.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            let _ = self
                .deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync);
            consumed += (self.deflate.total_in() - before) as usize;
            if consumed >= raw.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    /// SYN_REPLY: the server accepts `stream_id`.
    pub fn syn_reply(&mut self, stream_id: u32, fin: bool) -> Vec<u8> {
        let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
        payload.extend(self.encode_headers(&[]));
        control(SYN_REPLY, if fin { FLAG_FIN } else { 0 }, &payload)
    }

    /// SYN_STREAM, as a client opens a stream (used by the tests).
    pub fn syn_stream(&mut self, stream_id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        payload.extend(self.encode_headers(headers));
        control(SYN_STREAM, 0, &payload)
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.push(flags);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(payload);
    frame
}

/// A DATA frame; `fin` ends the sender's side of the stream.
pub fn data(stream_id: u32, fin: bool, bytes: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + bytes.len());
    frame.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    frame.push(if fin { FLAG_FIN } else { 0 });
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(bytes);
    frame
}

/// The answer to a PING: the same frame back.
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// RST_STREAM with status `code` (1 PROTOCOL_ERROR, 3 REFUSED_STREAM, 5 CANCEL).
pub fn rst_stream(stream_id: u32, code: u32) -> Vec<u8> {
    let mut payload = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specs() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b",enq=0."));
    }

    #[test]
    fn syn_streams_decode_across_one_zlib_stream() {
        let (mut client, mut server) = (Codec::default(), Codec::default());
        let mut wire = client.syn_stream(
            1,
            &[
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0"),
            ],
        );
        wire.extend(client.syn_stream(
            3,
            &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        ));
        wire.extend(data(3, false, b"GET / HTTP/1.1\r\n"));
        wire.extend(data(1, true, b""));
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = server.decode(&wire[at..]).unwrap() {
            frames.push(frame);
            at += used;
        }
        assert_eq!(at, wire.len());
        assert_eq!(
            frames[1],
            Frame::SynStream {
                stream_id: 3,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into())
                ]
            }
        );
        assert_eq!(
            frames[2],
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: b"GET / HTTP/1.1\r\n".to_vec()
            }
        );
        assert_eq!(
            frames[3],
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Vec::new()
            }
        );
    }

    #[test]
    fn replies_and_pings_have_spdy3_headers() {
        let mut codec = Codec::default();
        let reply = codec.syn_reply(5, false);
        assert_eq!(&reply[..4], &[0x80, 0x03, 0x00, 0x02]);
        assert_eq!(u24(&reply[5..8]), reply.len() - 8);
        assert_eq!(&reply[8..12], &5u32.to_be_bytes());
        // The reply's header block is what a client's decoder reads: an empty header list.
        let mut client = Codec::default();
        assert!(client.decode_headers(&reply[12..]).unwrap().is_empty());
        assert_eq!(ping(7), vec![0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(data(3, true, b"x"), vec![0, 0, 0, 3, 1, 0, 0, 1, b'x']);
        let mut partial = Codec::default();
        assert_eq!(partial.decode(&ping(1)[..6]).unwrap(), None);
        assert_eq!(
            partial.decode(&ping(9)).unwrap(),
            Some((Frame::Ping { id: 9 }, 12))
        );
    }
}
