//! RFC 6455 framing for the server side, sans-IO.
//!
//! [`Decoder`] reads client frames from whatever slice of bytes the socket produced and appends
//! the unmasked payload of data frames straight to the caller's buffer: it keeps no buffer of
//! its own (a 14-byte frame header, and the payload of a control frame, at most 125 bytes,
//! only while that frame is being read), so a connection between messages holds nothing. It checks what the RFC requires of a client: every frame
//! masked (§5.1), no reserved bits without an extension (§5.2), known opcodes, control frames
//! unfragmented and at most 125 bytes (§5.5), continuation frames only inside a fragmented
//! message (§5.4), text messages valid UTF-8 (§8.1, checked as the bytes arrive, so a bad byte
//! fails at once) and close frames with a valid code and a UTF-8 reason (§5.5.1, §7.4).
//! [`header`] writes the header of a server frame (never masked, §5.1).

use bytes::BytesMut;

/// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// The largest payload of a control frame (§5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// Why the client's bytes cannot be read on; each maps to the close code the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A protocol violation: close code 1002.
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8: close code 1007.
    InvalidUtf8,
    /// A message longer than the limit: close code 1009 (a hub answers with its Close message).
    TooLarge,
}

impl DecodeError {
    /// The close code the server sends (RFC 6455 §7.4.1).
    pub(crate) fn close_code(self) -> u16 {
        match self {
            DecodeError::Protocol(_) => 1002,
            DecodeError::InvalidUtf8 => 1007,
            DecodeError::TooLarge => 1009,
        }
    }
}

/// Something the decoder found besides message data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A data message ended; all of it has been appended to the buffer.
    MessageEnd {
        /// Binary (`true`) or text.
        binary: bool,
    },
    /// A ping, with its payload (to send back in a pong).
    Ping(Control),
    /// A pong (ignored by servers).
    Pong,
    /// A close frame with its status code (`None` for an empty close frame).
    Close(Option<u16>),
}

/// The payload of a control frame (at most [`MAX_CONTROL_PAYLOAD`] bytes), allocated only
/// while one is read: idle connections hold none.
pub(crate) type Control = Vec<u8>;

/// The frame being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes not read yet.
    remaining: u64,
    /// Payload bytes read so far (the mask's phase).
    offset: usize,
}

/// The data message being read (it may span several frames).
#[derive(Debug, Clone, Copy)]
struct Message {
    binary: bool,
    len: usize,
}

/// Incremental UTF-8 check of a text message that arrives in pieces: a code point split across
/// pieces is carried over (at most 3 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Utf8Check {
    carry: [u8; 4],
    carry_len: usize,
}

/// How many bytes the UTF-8 sequence starting with `lead` has (1 for a byte that cannot start
/// one: the check then fails on it).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

impl Utf8Check {
    /// Checks the next piece; `false` once the message cannot be UTF-8.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        if self.carry_len > 0 {
            let want = sequence_len(self.carry[0]);
            let take = (want - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            data = &data[take..];
            match std::str::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => self.carry_len = 0,
                // Still incomplete (and valid so far): wait for more.
                Err(err) if err.error_len().is_none() && self.carry_len < want => return true,
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => true,
            Err(err) if err.error_len().is_none() => {
                let tail = &data[err.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len();
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the message ended on a whole code point.
    fn finish(&mut self) -> bool {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        complete
    }
}

/// XORs `buf` with the 4-byte `mask`, `offset` being the position of `buf[0]` in the payload.
fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let phase = [
        mask[offset & 3],
        mask[(offset + 1) & 3],
        mask[(offset + 2) & 3],
        mask[(offset + 3) & 3],
    ];
    let wide = u64::from_ne_bytes([
        phase[0], phase[1], phase[2], phase[3], phase[0], phase[1], phase[2], phase[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= phase[i & 3];
    }
}

/// Whether a client may send `code` in a close frame (RFC 6455 §7.4, and the IANA registry's
/// 1012–1014).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads client frames (see the module docs).
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: usize,
    header: [u8; 14],
    header_len: usize,
    frame: Option<Frame>,
    message: Option<Message>,
    utf8: Utf8Check,
    control: Control,
}

impl Decoder {
    /// A decoder that refuses data messages longer than `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            header: [0; 14],
            header_len: 0,
            frame: None,
            message: None,
            utf8: Utf8Check::default(),
            control: Vec::new(),
        }
    }

    /// The largest data message accepted, in bytes.
    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    /// Reads `input`, appending the unmasked payload of data frames to `dst`. Returns how many
    /// bytes of `input` it used and the first event it found: it stops after an event (call it
    /// again with the rest) or when `input` is used up. After an error nothing more may be read.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        dst: &mut BytesMut,
    ) -> (usize, Result<Option<Event>, DecodeError>) {
        let mut pos = 0;
        loop {
            let Some(frame) = self.frame.as_mut() else {
                if pos == input.len() {
                    return (pos, Ok(None));
                }
                match self.read_header(&input[pos..]) {
                    Ok((used, done)) => {
                        pos += used;
                        if !done {
                            return (pos, Ok(None));
                        }
                    }
                    Err(err) => return (pos, Err(err)),
                }
                if self.frame.as_ref().is_some_and(|f| f.remaining == 0) {
                    match self.end_frame() {
                        Ok(None) => continue,
                        other => return (pos, other),
                    }
                }
                continue;
            };
            let available = input.len() - pos;
            let take = usize::try_from(frame.remaining).map_or(available, |r| r.min(available));
            if take == 0 {
                return (pos, Ok(None));
            }
            let piece = &input[pos..pos + take];
            if frame.opcode >= CLOSE {
                let start = self.control.len();
                self.control.extend_from_slice(piece);
                apply_mask(&mut self.control[start..], frame.mask, frame.offset);
            } else {
                let start = dst.len();
                dst.extend_from_slice(piece);
                apply_mask(&mut dst[start..], frame.mask, frame.offset);
                if self.message.is_some_and(|m| !m.binary) && !self.utf8.feed(&dst[start..]) {
                    return (pos + take, Err(DecodeError::InvalidUtf8));
                }
            }
            frame.offset += take;
            frame.remaining -= take as u64;
            pos += take;
            if frame.remaining == 0 {
                match self.end_frame() {
                    Ok(None) => {}
                    other => return (pos, other),
                }
            }
        }
    }

    /// Collects header bytes from `input`; once the header is complete, checks it and starts the
    /// frame. Returns the bytes used and whether the header is complete.
    fn read_header(&mut self, input: &[u8]) -> Result<(usize, bool), DecodeError> {
        let mut used = 0;
        // The first two bytes tell the header's length.
        while self.header_len < 2 {
            let Some(&byte) = input.get(used) else {
                return Ok((used, false));
            };
            self.header[self.header_len] = byte;
            self.header_len += 1;
            used += 1;
        }
        let (b0, b1) = (self.header[0], self.header[1]);
        if b1 & 0x80 == 0 {
            return Err(DecodeError::Protocol("unmasked client frame"));
        }
        let length_bytes = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let total = 2 + length_bytes + 4;
        let take = (total - self.header_len).min(input.len() - used);
        self.header[self.header_len..self.header_len + take]
            .copy_from_slice(&input[used..used + take]);
        self.header_len += take;
        used += take;
        if self.header_len < total {
            return Ok((used, false));
        }
        self.header_len = 0;

        if b0 & 0x70 != 0 {
            return Err(DecodeError::Protocol("reserved bits set"));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let len: u64 = match length_bytes {
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(DecodeError::Protocol("payload length with its top bit set"));
                }
                len
            }
            _ => u64::from(b1 & 0x7F),
        };
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&self.header[2 + length_bytes..total]);

        match opcode {
            CLOSE | PING | PONG => {
                if !fin {
                    return Err(DecodeError::Protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(DecodeError::Protocol("control frame over 125 bytes"));
                }
                self.control.clear();
            }
            CONTINUATION => {
                let Some(message) = self.message.as_mut() else {
                    return Err(DecodeError::Protocol(
                        "continuation frame outside a message",
                    ));
                };
                message.len = grow(message.len, len, self.max_message)?;
            }
            TEXT | BINARY => {
                if self.message.is_some() {
                    return Err(DecodeError::Protocol(
                        "new data frame inside a fragmented message",
                    ));
                }
                self.message = Some(Message {
                    binary: opcode == BINARY,
                    len: grow(0, len, self.max_message)?,
                });
            }
            _ => return Err(DecodeError::Protocol("reserved opcode")),
        }
        self.frame = Some(Frame {
            opcode,
            fin,
            mask,
            remaining: len,
            offset: 0,
        });
        Ok((used, true))
    }

    /// The current frame's payload is complete.
    fn end_frame(&mut self) -> Result<Option<Event>, DecodeError> {
        let Some(frame) = self.frame.take() else {
            return Ok(None);
        };
        // A control payload leaves the decoder with its frame.
        match frame.opcode {
            PING => Ok(Some(Event::Ping(std::mem::take(&mut self.control)))),
            PONG => {
                self.control = Vec::new();
                Ok(Some(Event::Pong))
            }
            CLOSE => {
                let payload = std::mem::take(&mut self.control);
                match payload.len() {
                    0 => Ok(Some(Event::Close(None))),
                    1 => Err(DecodeError::Protocol("close frame with a 1-byte payload")),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !valid_close_code(code) {
                            return Err(DecodeError::Protocol("invalid close code"));
                        }
                        if std::str::from_utf8(&payload[2..]).is_err() {
                            return Err(DecodeError::InvalidUtf8);
                        }
                        Ok(Some(Event::Close(Some(code))))
                    }
                }
            }
            _ if frame.fin => {
                let Some(message) = self.message.take() else {
                    return Ok(None);
                };
                if !message.binary && !self.utf8.finish() {
                    return Err(DecodeError::InvalidUtf8);
                }
                Ok(Some(Event::MessageEnd {
                    binary: message.binary,
                }))
            }
            _ => Ok(None),
        }
    }
}

/// Adds a frame of `len` bytes to a message of `so_far` bytes, within `max`.
fn grow(so_far: usize, len: u64, max: usize) -> Result<usize, DecodeError> {
    usize::try_from(len)
        .ok()
        .and_then(|len| so_far.checked_add(len))
        .filter(|&total| total <= max)
        .ok_or(DecodeError::TooLarge)
}

/// The header of an unmasked, final server frame with `opcode` and a payload of `len` bytes:
/// the bytes and how many of them are used.
pub(crate) fn header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut out = [0u8; 10];
    out[0] = 0x80 | opcode;
    if len < 126 {
        out[1] = len as u8;
        (out, 2)
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        (out, 4)
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (out, 10)
    }
}

/// The opcode of a data frame: binary or text.
pub(crate) fn data_opcode(binary: bool) -> u8 {
    if binary { BINARY } else { TEXT }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Decodes everything, `chunk` bytes at a time; returns the events and the data.
    fn run(input: &[u8], chunk: usize, max: usize) -> (Vec<Event>, Vec<u8>, Option<DecodeError>) {
        let mut decoder = Decoder::new(max);
        let mut dst = BytesMut::new();
        let mut events = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            let mut rest = piece;
            loop {
                let (used, result) = decoder.decode(rest, &mut dst);
                rest = &rest[used..];
                match result {
                    Ok(Some(event)) => events.push(event),
                    Ok(None) => {}
                    Err(err) => return (events, dst.to_vec(), Some(err)),
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        (events, dst.to_vec(), None)
    }

    #[test]
    fn whole_and_split_frames_give_the_same_message() {
        for len in [0, 1, 125, 126, 1000, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let bytes = frame(true, TEXT, &payload);
            for chunk in [1, 3, 7, 4096, bytes.len()] {
                let (events, data, err) = run(&bytes, chunk, 1 << 20);
                assert_eq!(err, None, "len {len} chunk {chunk}");
                assert_eq!(events, vec![Event::MessageEnd { binary: false }]);
                assert_eq!(data, payload, "len {len} chunk {chunk}");
            }
        }
    }

    #[test]
    fn fragments_with_a_ping_between_them() {
        let mut bytes = frame(false, TEXT, b"Hel");
        bytes.extend(frame(false, CONTINUATION, b""));
        bytes.extend(frame(true, PING, b"hi"));
        bytes.extend(frame(true, CONTINUATION, b"lo"));
        let (events, data, err) = run(&bytes, 1, 1024);
        assert_eq!(err, None);
        let Event::Ping(ping) = &events[0] else {
            panic!("expected a ping first: {events:?}");
        };
        assert_eq!(ping.as_slice(), b"hi");
        assert_eq!(events[1], Event::MessageEnd { binary: false });
        assert_eq!(data, b"Hello");
    }

    #[test]
    fn a_code_point_split_across_fragments_is_valid() {
        let text = "é€😀".as_bytes();
        for split in 1..text.len() {
            let mut bytes = frame(false, TEXT, &text[..split]);
            bytes.extend(frame(true, CONTINUATION, &text[split..]));
            let (events, data, err) = run(&bytes, 2, 1024);
            assert_eq!(err, None, "split at {split}");
            assert_eq!(events, vec![Event::MessageEnd { binary: false }]);
            assert_eq!(data, text);
        }
    }

    #[test]
    fn invalid_utf8_fails_in_text_only() {
        for bad in [
            &[0xC0, 0x80][..],
            &[0xED, 0xA0, 0x80],
            &[0xF5],
            &[b'a', 0xFF],
        ] {
            let (_, _, err) = run(&frame(true, TEXT, bad), 1, 1024);
            assert_eq!(err, Some(DecodeError::InvalidUtf8), "{bad:?}");
            let (events, _, err) = run(&frame(true, BINARY, bad), 1, 1024);
            assert_eq!(err, None);
            assert_eq!(events, vec![Event::MessageEnd { binary: true }]);
        }
        // A message that ends inside a code point.
        let (_, _, err) = run(&frame(true, TEXT, &[b'a', 0xE2, 0x82]), 1, 1024);
        assert_eq!(err, Some(DecodeError::InvalidUtf8));
        // A bad byte fails before the message ends.
        let mut bytes = frame(false, TEXT, &[0xFF]);
        bytes.extend(frame(true, CONTINUATION, b"never read"));
        let (_, data, err) = run(&bytes, 1024, 1024);
        assert_eq!(err, Some(DecodeError::InvalidUtf8));
        assert_eq!(data, [0xFF]);
    }

    #[test]
    fn violations() {
        let protocol = |bytes: Vec<u8>| {
            let (_, _, err) = run(&bytes, 1, 1024);
            assert!(
                matches!(err, Some(DecodeError::Protocol(_))),
                "{bytes:?}: {err:?}"
            );
        };
        // Unmasked.
        protocol(vec![0x81, 0x01, b'a']);
        // Reserved bits.
        for rsv in [0x40, 0x20, 0x10] {
            let mut bytes = frame(true, TEXT, b"a");
            bytes[0] |= rsv;
            protocol(bytes);
        }
        // Reserved opcodes.
        for opcode in [3, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
            protocol(frame(true, opcode, b""));
        }
        // Control frames: fragmented, too long.
        protocol(frame(false, PING, b""));
        protocol(frame(true, PING, &[0; 126]));
        // Continuation without a message; a new message inside one.
        protocol(frame(true, CONTINUATION, b"a"));
        let mut bytes = frame(false, TEXT, b"a");
        bytes.extend(frame(true, BINARY, b"b"));
        protocol(bytes);
        // Close: one byte, invalid codes.
        protocol(frame(true, CLOSE, &[0x03]));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            protocol(frame(true, CLOSE, &code.to_be_bytes()));
        }
        // A 64-bit length with its top bit set.
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        protocol(bytes);
    }

    #[test]
    fn close_frames() {
        let (events, _, err) = run(&frame(true, CLOSE, b""), 1, 1024);
        assert_eq!((events, err), (vec![Event::Close(None)], None));
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1012, 3000, 4999] {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice("bye é".as_bytes());
            let (events, _, err) = run(&frame(true, CLOSE, &payload), 1, 1024);
            assert_eq!((events, err), (vec![Event::Close(Some(code))], None));
        }
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.push(0xFF);
        let (_, _, err) = run(&frame(true, CLOSE, &payload), 1, 1024);
        assert_eq!(err, Some(DecodeError::InvalidUtf8));
    }

    #[test]
    fn limits() {
        let (_, _, err) = run(&frame(true, BINARY, &[0; 101]), 4096, 100);
        assert_eq!(err, Some(DecodeError::TooLarge));
        let (events, _, err) = run(&frame(true, BINARY, &[0; 100]), 4096, 100);
        assert_eq!((events.len(), err), (1, None));
        // Fragments count together.
        let mut bytes = frame(false, BINARY, &[0; 60]);
        bytes.extend(frame(true, CONTINUATION, &[0; 60]));
        let (_, data, err) = run(&bytes, 4096, 100);
        assert_eq!(err, Some(DecodeError::TooLarge));
        assert_eq!(data.len(), 60);
        // A length of terabytes fails on the header, before any payload.
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 40).to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let (_, _, err) = run(&bytes, 4096, 100);
        assert_eq!(err, Some(DecodeError::TooLarge));
    }

    #[test]
    fn many_messages_in_one_read() {
        let mut bytes = Vec::new();
        for i in 0..50u8 {
            bytes.extend(frame(true, BINARY, &[i; 3]));
        }
        let (events, data, err) = run(&bytes, bytes.len(), 1024);
        assert_eq!(err, None);
        assert_eq!(events.len(), 50);
        assert_eq!(data.len(), 150);
    }

    #[test]
    fn mask_phases() {
        for offset in 0..8 {
            for len in 0..20 {
                let mask = [1, 2, 4, 8];
                let mut buf = vec![0u8; len];
                apply_mask(&mut buf, mask, offset);
                let expected: Vec<u8> = (0..len).map(|i| mask[(i + offset) % 4]).collect();
                assert_eq!(buf, expected);
            }
        }
    }

    #[test]
    fn headers() {
        assert_eq!(header(TEXT, 5), ([0x81, 5, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        assert_eq!(header(BINARY, 300).1, 4);
        assert_eq!(&header(BINARY, 300).0[..4], &[0x82, 126, 1, 44]);
        let (bytes, len) = header(BINARY, 70_000);
        assert_eq!(len, 10);
        assert_eq!(&bytes[..2], &[0x82, 127]);
        assert_eq!(&bytes[2..10], &70_000u64.to_be_bytes());
    }
}
