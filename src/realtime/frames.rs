//! Refusing oversized WebSocket frames as soon as their header arrives.
//!
//! actix-http compares a frame's length with its limit only once the whole
//! frame is buffered, so a client declaring a frame of gigabytes would make
//! the server hold it all first. [`FrameLimit`] follows the frame headers in
//! the raw bytes as they arrive and fails the stream at the first header over
//! the limit; the session then closes with 1009 (see [`too_big`]).

use actix_web::error::PayloadError;
use actix_ws::ProtocolError;

/// The largest frame a client may send: client messages are a few hundred
/// bytes, so this is ample.
pub const MAX_FRAME: usize = 64 * 1024;

/// Follows frame boundaries through a client's byte stream.
#[derive(Debug)]
pub struct FrameLimit {
    max: u64,
    /// The header being read (at most 2 + 8 length + 4 mask bytes).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    skip: u64,
    exceeded: bool,
}

impl FrameLimit {
    pub fn new(max: usize) -> Self {
        Self { max: max as u64, header: [0; 14], have: 0, skip: 0, exceeded: false }
    }

    /// Checks the next bytes of the stream: an error once a frame header
    /// declares more than the limit (and for anything after that).
    pub fn check(&mut self, mut bytes: &[u8]) -> Result<(), PayloadError> {
        while !bytes.is_empty() && !self.exceeded {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() as u64);
                self.skip -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            let take = (header_len(&self.header[..self.have]) - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            // Asked again: the second byte tells how long the header really is.
            if self.have < header_len(&self.header[..self.have]) {
                continue;
            }
            let length = payload_len(&self.header[..self.have]);
            self.exceeded = length > self.max;
            self.skip = length;
            self.have = 0;
        }
        if self.exceeded {
            Err(PayloadError::Overflow)
        } else {
            Ok(())
        }
    }
}

/// The header's length, as far as its first bytes tell.
fn header_len(header: &[u8]) -> usize {
    let Some(&second) = header.get(1) else { return 2 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length a complete header declares.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u16::from_be_bytes([header[2], header[3]]).into(),
        127 => u64::from_be_bytes(header[2..10].try_into().expect("eight bytes")),
        n => n.into(),
    }
}

/// Whether the stream ended on a frame over the limit: [`FrameLimit`]'s
/// refusal, or actix-http's own check.
pub fn too_big(e: &ProtocolError) -> bool {
    match e {
        ProtocolError::Overflow => true,
        ProtocolError::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<PayloadError>())
            .is_some_and(|inner| matches!(inner, PayloadError::Overflow)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header declaring `len` payload bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=0xffff => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&len.to_be_bytes());
            }
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = header(len as u64);
        f.resize(f.len() + len, b'x');
        f
    }

    #[test]
    fn frames_up_to_the_limit_pass_however_the_bytes_are_cut() {
        let stream: Vec<u8> = [frame(0), frame(5), frame(125), frame(126), frame(1000), frame(1024)].concat();
        for cut in [1, 2, 3, 7, 64, stream.len()] {
            let mut limit = FrameLimit::new(1024);
            for piece in stream.chunks(cut) {
                assert!(limit.check(piece).is_ok(), "cut into {cut}-byte pieces");
            }
            assert_eq!((limit.have, limit.skip), (0, 0), "ends on a frame boundary");
        }
    }

    #[test]
    fn a_header_over_the_limit_fails_before_its_payload_arrives() {
        for declared in [1025, 70_000, u64::MAX >> 1] {
            let stream = [frame(10), header(declared)].concat();
            for cut in [1, 3, stream.len()] {
                let mut limit = FrameLimit::new(1024);
                let failed = stream.chunks(cut).map(|piece| limit.check(piece)).any(|r| r.is_err());
                assert!(failed, "{declared} bytes declared, cut into {cut}-byte pieces");
                assert!(limit.check(b"more").is_err(), "and it stays failed");
            }
        }
    }

    #[test]
    fn only_overflow_counts_as_too_big() {
        assert!(too_big(&ProtocolError::Overflow));
        assert!(too_big(&ProtocolError::Io(std::io::Error::other(PayloadError::Overflow))));
        assert!(!too_big(&ProtocolError::Io(std::io::Error::other(PayloadError::Incomplete(None)))));
        assert!(!too_big(&ProtocolError::BadOpCode));
    }
}
