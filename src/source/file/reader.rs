//! Splitting a file read in chunks into lines, with bounded memory.
//!
//! [`LineSplitter`] is fed chunks of bytes (whatever size the I/O returned) and hands out lines
//! one at a time: `\n` ends a line, a `\r` before it is dropped (CRLF), a last line without a
//! newline is still a line, an empty file has no lines. Lines are numbered from 1, counting every
//! line of the file (blank ones and the header too), so the numbers match an editor's.
//!
//! Invariants:
//! - memory is bounded: a line is copied only when it spans chunks, and the copy never grows past
//!   `max_line_bytes + 1`; a longer line is reported as [`LineKind::TooLong`] with at most
//!   [`TOO_LONG_PREFIX_BYTES`] of its start kept (for the dead-letter output), the rest skipped;
//! - no byte sequence makes it panic.

/// How many bytes of an over-long line are kept to show in errors and dead-letter records.
pub const TOO_LONG_PREFIX_BYTES: usize = 256;

/// Where the bytes of the current line are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Span {
    /// `chunk[start..end]`.
    Chunk { start: usize, end: usize },
    /// The carry buffer (the line spanned chunks, or is the start of an over-long line).
    Carry,
}

/// What kind of line [`LineSplitter::next_line`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A line within the limit; [`LineSplitter::line`] gives it (without `\n` / `\r\n`).
    Complete,
    /// A line longer than the limit; [`LineSplitter::line`] gives its first bytes only.
    TooLong,
}

/// The splitter's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// A line; its number is [`LineSplitter::line_number`].
    Line(LineKind),
    /// Feed the next chunk (or call [`LineSplitter::finish`] at end of file).
    NeedData,
    /// End of file and every line handed out.
    Done,
}

/// Cuts chunks into lines (see the module docs).
pub struct LineSplitter {
    max_line_bytes: usize,
    chunk: Vec<u8>,
    pos: usize,
    carry: Vec<u8>,
    /// The current line is over-long: skip to its newline (carry holds its prefix).
    overlong: bool,
    /// `carry` holds a line already handed out; clear it before going on.
    carry_used: bool,
    span: Span,
    eof: bool,
    line_number: u64,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            chunk: Vec::new(),
            pos: 0,
            carry: Vec::new(),
            overlong: false,
            carry_used: false,
            span: Span::Carry,
            eof: false,
            line_number: 0,
        }
    }

    /// The number (from 1) of the line last handed out.
    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// Continue numbering after line `n` (a reader restored mid-file).
    pub fn set_line_number(&mut self, n: u64) {
        self.line_number = n;
    }

    /// Bytes of the current chunk not yet handed out as lines. Between lines (after a line
    /// was handed out, before the next `next_line`), the next line starts this many bytes
    /// before the end of what was fed.
    pub fn unconsumed(&self) -> usize {
        self.chunk.len() - self.pos
    }

    /// The buffer to read the next chunk into (cleared; its capacity is reused).
    /// Only call after [`Next::NeedData`].
    pub fn chunk_buffer(&mut self) -> &mut Vec<u8> {
        debug_assert!(self.pos >= self.chunk.len(), "chunk not consumed");
        self.chunk.clear();
        self.pos = 0;
        &mut self.chunk
    }

    /// Copy `bytes` in as the next chunk. Only call after [`Next::NeedData`].
    pub fn feed(&mut self, bytes: &[u8]) {
        self.chunk_buffer().extend_from_slice(bytes);
    }

    /// No more chunks will come.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// The bytes of the line last handed out (for a too-long line: its first bytes).
    pub fn line(&self) -> &[u8] {
        match self.span {
            Span::Chunk { start, end } => &self.chunk[start..end],
            Span::Carry => &self.carry,
        }
    }

    /// Find the next line.
    pub fn next_line(&mut self) -> Next {
        if self.carry_used {
            self.carry.clear();
            self.carry_used = false;
        }
        loop {
            if self.pos < self.chunk.len() {
                let rest = &self.chunk[self.pos..];
                match memchr::memchr(b'\n', rest) {
                    Some(i) => {
                        let start = self.pos;
                        self.pos = start + i + 1;
                        self.line_number += 1;
                        if self.overlong {
                            self.overlong = false;
                            self.keep_prefix(start, start + i);
                            return self.carry_line(LineKind::TooLong);
                        }
                        if self.carry.is_empty() {
                            let end = strip_cr(&self.chunk, start, start + i);
                            if end - start > self.max_line_bytes {
                                let prefix = (end - start).min(TOO_LONG_PREFIX_BYTES);
                                self.span = Span::Chunk { start, end: start + prefix };
                                return Next::Line(LineKind::TooLong);
                            }
                            self.span = Span::Chunk { start, end };
                            return Next::Line(LineKind::Complete);
                        }
                        if self.carry.len() + i > self.max_line_bytes + 1 {
                            self.keep_prefix(start, start + i);
                            return self.carry_line(LineKind::TooLong);
                        }
                        self.carry.extend_from_slice(&self.chunk[start..start + i]);
                        return self.finish_carry_line();
                    }
                    None => {
                        let start = self.pos;
                        self.pos = self.chunk.len();
                        let end = self.chunk.len();
                        if self.overlong || self.carry.len() + (end - start) > self.max_line_bytes + 1 {
                            self.overlong = true;
                            self.keep_prefix(start, end);
                        } else {
                            self.carry.extend_from_slice(&self.chunk[start..end]);
                        }
                    }
                }
            } else if self.eof {
                if self.overlong {
                    self.overlong = false;
                    self.line_number += 1;
                    return self.carry_line(LineKind::TooLong);
                }
                if !self.carry.is_empty() {
                    self.line_number += 1;
                    return self.finish_carry_line();
                }
                return Next::Done;
            } else {
                return Next::NeedData;
            }
        }
    }

    /// Keep `chunk[start..end]` in the carry as far as the too-long prefix has room.
    fn keep_prefix(&mut self, start: usize, end: usize) {
        self.carry.truncate(TOO_LONG_PREFIX_BYTES);
        let room = TOO_LONG_PREFIX_BYTES - self.carry.len();
        let end = end.min(start + room);
        self.carry.extend_from_slice(&self.chunk[start..end]);
    }

    fn finish_carry_line(&mut self) -> Next {
        if self.carry.last() == Some(&b'\r') {
            self.carry.pop();
        }
        if self.carry.len() > self.max_line_bytes {
            self.carry.truncate(TOO_LONG_PREFIX_BYTES);
            return self.carry_line(LineKind::TooLong);
        }
        self.carry_line(LineKind::Complete)
    }

    fn carry_line(&mut self, kind: LineKind) -> Next {
        self.span = Span::Carry;
        self.carry_used = true;
        Next::Line(kind)
    }
}

fn strip_cr(bytes: &[u8], start: usize, end: usize) -> usize {
    if end > start && bytes[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Split `input` fed in chunks of `chunk` bytes; `None` marks a too-long line.
    fn split(input: &[u8], chunk: usize, max: usize) -> Vec<(u64, Option<Vec<u8>>)> {
        split_with_prefixes(input, chunk, max).into_iter().map(|(n, line, _)| (n, line)).collect()
    }

    /// Like `split`, plus the kept prefix of each too-long line.
    fn split_with_prefixes(input: &[u8], chunk: usize, max: usize) -> Vec<(u64, Option<Vec<u8>>, Vec<u8>)> {
        let mut s = LineSplitter::new(max);
        let mut chunks = input.chunks(chunk);
        let mut out = Vec::new();
        loop {
            match s.next_line() {
                Next::Line(LineKind::Complete) => out.push((s.line_number(), Some(s.line().to_vec()), Vec::new())),
                Next::Line(LineKind::TooLong) => {
                    assert!(s.line().len() <= TOO_LONG_PREFIX_BYTES);
                    out.push((s.line_number(), None, s.line().to_vec()))
                }
                Next::NeedData => match chunks.next() {
                    Some(c) => s.feed(c),
                    None => s.finish(),
                },
                Next::Done => return out,
            }
        }
    }

    fn lines(v: &[&str]) -> Vec<(u64, Option<Vec<u8>>)> {
        v.iter().enumerate().map(|(i, l)| (i as u64 + 1, Some(l.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn every_chunk_size_gives_the_same_lines() {
        let input = "a,1\r\nbé,2\n\nlast é€".as_bytes();
        for chunk in 1..=input.len() + 1 {
            assert_eq!(split(input, chunk, 64), lines(&["a,1", "bé,2", "", "last é€"]), "chunk {chunk}");
        }
    }

    #[test]
    fn empty_file_and_trailing_newline() {
        assert_eq!(split(b"", 4, 64), vec![]);
        assert_eq!(split(b"x\n", 1, 64), lines(&["x"]));
        assert_eq!(split(b"\n", 1, 64), lines(&[""]));
    }

    #[test]
    fn too_long_lines_are_reported_and_skipped_whatever_the_chunking() {
        let long = "y".repeat(40);
        let input = format!("ok\n{long}\r\nexact-16-bytes!!\r\n{long}");
        for chunk in 1..=input.len() {
            let got = split(input.as_bytes(), chunk, 16);
            let want = vec![(1, Some(b"ok".to_vec())), (2, None), (3, Some(b"exact-16-bytes!!".to_vec())), (4, None)];
            assert_eq!(got, want, "chunk {chunk}");
        }
    }

    #[test]
    fn too_long_prefix_does_not_depend_on_chunking() {
        let long = (0..600).map(|i| (b'a' + (i % 26) as u8) as char).collect::<String>();
        let input = format!("{long}\n{}", &long[..300]);
        for chunk in [1, 7, 64, 255, 256, 257, 1000] {
            let got = split_with_prefixes(input.as_bytes(), chunk, 100);
            let prefix = long.as_bytes()[..TOO_LONG_PREFIX_BYTES].to_vec();
            assert_eq!(got, vec![(1, None, prefix.clone()), (2, None, prefix)], "chunk {chunk}");
        }
    }
}
