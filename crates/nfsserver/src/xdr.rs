//! XDR (RFC 4506) on byte slices: a reader that never allocates more than its input holds
//! (every length is checked against the bytes left before anything is copied) and a
//! writer into a `Vec`.

/// Why a call's arguments could not be decoded (the reply is GARBAGE_ARGS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    /// The input ended inside a value.
    #[error("truncated XDR value")]
    Truncated,
    /// A variable-length value is longer than its protocol maximum.
    #[error("XDR value of {len} bytes is over its limit of {max}")]
    TooLong {
        /// the announced length
        len: u32,
        /// the protocol's maximum
        max: u32,
    },
    /// A boolean or enum has a value outside its set.
    #[error("invalid XDR discriminant {0}")]
    BadDiscriminant(u32),
}

/// Reads XDR values from a slice.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if n > self.buf.len() {
            return Err(XdrError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok((hi << 32) | lo)
    }

    /// A boolean (0 or 1).
    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadDiscriminant(v)),
        }
    }

    /// Variable-length opaque data of at most `max` bytes, borrowed from the input.
    pub fn opaque(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        let len = len as usize;
        let data = self.take(len)?;
        self.take((4 - len % 4) % 4)?;
        Ok(data)
    }

    /// Fixed-length opaque data of `N` bytes (`N` a multiple of 4).
    pub fn fixed<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }
}

/// Writes XDR values into a `Vec`.
#[derive(Default)]
pub struct Writer {
    /// The encoded bytes.
    pub buf: Vec<u8>,
}

impl Writer {
    /// A writer whose first four bytes are reserved for the record mark.
    pub fn record() -> Self {
        Self { buf: vec![0; 4] }
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) {
        self.u32(u32::from(v));
    }

    /// Variable-length opaque data (callers keep it under 4 GiB: every value this server
    /// sends is bounded by the protocol's limits, at most 1 MiB).
    pub fn opaque(&mut self, data: &[u8]) {
        self.u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(data);
        self.pad(data.len());
    }

    /// Fixed-length opaque data.
    pub fn fixed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.pad(data.len());
    }

    fn pad(&mut self, len: usize) {
        self.buf.extend_from_slice(&[0u8; 3][..(4 - len % 4) % 4]);
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Cuts the output back to `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_longer_than_its_input_is_truncated_not_allocated() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xf0]);
        assert_eq!(r.opaque(u32::MAX), Err(XdrError::Truncated));
        let mut r = Reader::new(&[0, 0, 1, 0]);
        assert_eq!(r.opaque(64), Err(XdrError::TooLong { len: 256, max: 64 }));
    }

    #[test]
    fn opaque_round_trips_with_padding() {
        let mut w = Writer::default();
        w.opaque(b"abcde");
        w.u64(7);
        assert_eq!(w.len(), 4 + 8 + 8);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.opaque(10), Ok(&b"abcde"[..]));
        assert_eq!(r.u64(), Ok(7));
        assert_eq!(r.remaining(), 0);
    }
}
