//! A message's body as the parser keeps it: bytes of its own, or a view of the chunk it came in.
//!
//! A response's body that arrives whole in one read would otherwise be copied out of that read
//! into an allocation of its own, and then once more into the ring's body log. When the caller
//! hands the parser its read as shared bytes ([`bytes::Bytes`]), such a body is a view of it
//! instead, and the ring copies it once. A view keeps the whole read alive, so it is made a copy
//! of its own ([`BodyBuf::detach`]) wherever a message waits for more than the call it came in.

use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// A body's bytes (see the module docs).
#[derive(Clone, Default)]
pub struct BodyBuf {
    /// The bytes, when they are its own.
    own: Vec<u8>,
    /// The bytes, when they are a view of a read (`own` is then empty).
    view: Option<Bytes>,
}

impl BodyBuf {
    /// A body that is a view of the read it came in.
    pub fn view(b: Bytes) -> Self {
        BodyBuf {
            own: Vec::new(),
            view: Some(b),
        }
    }

    /// Whether it is a view of a read (not bytes of its own).
    pub fn is_view(&self) -> bool {
        self.view.is_some()
    }

    /// Appends `data` (a view becomes bytes of its own first).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.own().extend_from_slice(data);
    }

    /// Room for `n` more bytes.
    pub fn reserve_exact(&mut self, n: usize) {
        self.own().reserve_exact(n);
    }

    /// Copies a view into bytes of its own, letting go of the read it came in.
    pub fn detach(&mut self) {
        self.own();
    }

    fn own(&mut self) -> &mut Vec<u8> {
        if let Some(b) = self.view.take() {
            self.own = b.to_vec();
        }
        &mut self.own
    }
}

impl Deref for BodyBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.view {
            Some(b) => b,
            None => &self.own,
        }
    }
}

impl From<Vec<u8>> for BodyBuf {
    fn from(v: Vec<u8>) -> Self {
        BodyBuf { own: v, view: None }
    }
}

impl From<BodyBuf> for Bytes {
    fn from(b: BodyBuf) -> Bytes {
        match b.view {
            Some(v) => v,
            None => b.own.into(),
        }
    }
}

impl PartialEq for BodyBuf {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for BodyBuf {}

impl PartialEq<Vec<u8>> for BodyBuf {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for BodyBuf {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl fmt::Debug for BodyBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// `part` as a view of `chunk`, when it lies inside it.
pub fn view_of(chunk: &Bytes, part: &[u8]) -> Option<Bytes> {
    let start = (part.as_ptr() as usize).checked_sub(chunk.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= chunk.len()).then(|| chunk.slice(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_a_piece_of_its_chunk_and_detaches_into_a_copy() {
        let chunk = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\nhello");
        let part = &chunk[19..];
        let v = view_of(&chunk, part).expect("inside");
        assert_eq!(&v[..], b"hello");
        assert_eq!(v.as_ptr(), part.as_ptr());
        let other = b"hello".to_vec();
        assert_eq!(view_of(&chunk, &other), None);
        assert_eq!(view_of(&chunk, &chunk[..0]).map(|b| b.len()), Some(0));

        let mut b = BodyBuf::view(v);
        assert!(b.is_view());
        assert_eq!(b, b"hello".to_vec());
        b.detach();
        assert!(!b.is_view());
        assert_ne!(b.as_ptr(), part.as_ptr());
        b.extend_from_slice(b" world");
        assert_eq!(&b[..], b"hello world");
        assert_eq!(Bytes::from(b), Bytes::from_static(b"hello world"));
    }
}
