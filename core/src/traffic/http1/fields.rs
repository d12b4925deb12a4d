//! Header (and trailer) fields in one buffer.
//!
//! The capture makes a head per message and frees it when the ring evicts the record: with a
//! `String` pair per field that was two allocations and two frees per field, the capture's
//! largest cost after copying bodies. Here a head's fields take one allocation whatever their
//! number: the text first, then where each name and value lies in it. A parsed head's text is
//! its header lines as sent (one copy of them), so a field costs no copy of its own. Fields
//! added one by one (HTTP/2 heads) go into room left between the text and the spans, which
//! grows by at least the text's size when it runs out, so the spans move a few times per
//! head, not once per field.

use serde::ser::SerializeSeq;
use std::fmt;
use std::ops::Range;

/// Bytes per field after the text: where its name and value start and end, four `u32`s.
const SPAN: usize = 16;

/// Where one field's name and value lie in the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    fn to_bytes(self) -> [u8; SPAN] {
        let mut b = [0u8; SPAN];
        let parts = [self.name.0, self.name.1, self.value.0, self.value.1];
        for (chunk, v) in b.chunks_exact_mut(4).zip(parts) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn from_bytes(b: &[u8]) -> Span {
        let at = |i: usize| {
            let mut w = [0u8; 4];
            if let Some(s) = b.get(i..i + 4) {
                w.copy_from_slice(s);
            }
            u32::from_le_bytes(w)
        };
        Span {
            name: (at(0), at(4)),
            value: (at(8), at(12)),
        }
    }
}

/// Fields in order, names as sent (serialized as a list of `[name, value]` pairs).
#[derive(Clone, Default)]
pub struct Fields {
    /// The text (names and values, with what came between them for a parsed head), room for
    /// more text (zeros, or old span bytes after a growth: never read before `push` writes
    /// over them), then [`SPAN`] bytes per field from `spans` on. The text is UTF-8 and every
    /// span lies on its character boundaries (both checked as they go in), so each piece is
    /// UTF-8.
    buf: Vec<u8>,
    /// Bytes of text at the front of `buf`.
    text: u32,
    /// Where the spans start in `buf` (`text` and `spans` between them is room).
    spans: u32,
}

/// `r` as a span, if it fits in `u32` (heads are bounded far below that).
fn span(r: Range<usize>) -> Option<(u32, u32)> {
    Some((u32::try_from(r.start).ok()?, u32::try_from(r.end).ok()?))
}

/// A span as a range.
fn range((start, end): (u32, u32)) -> Range<usize> {
    start as usize..end as usize
}

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Fields::default()
    }

    /// No fields, with room for `fields` fields of `bytes` bytes of names and values.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        let room = u32::try_from(bytes).unwrap_or(0);
        let mut buf =
            Vec::with_capacity((room as usize).saturating_add(fields.saturating_mul(SPAN)));
        buf.resize(room as usize, 0);
        Fields {
            buf,
            text: 0,
            spans: room,
        }
    }

    /// No fields yet, over a copy of `text` (a head's header lines), with room for `fields`
    /// fields; [`Fields::push_span`] adds fields that are pieces of it. A text too long for
    /// `u32` offsets is not kept (no piece of it can be a field).
    pub fn over(text: &str, fields: usize) -> Self {
        let Ok(len) = u32::try_from(text.len()) else {
            return Fields::with_capacity(fields, 0);
        };
        let mut buf = Vec::with_capacity(text.len().saturating_add(fields.saturating_mul(SPAN)));
        buf.extend_from_slice(text.as_bytes());
        Fields {
            buf,
            text: len,
            spans: len,
        }
    }

    fn text_bytes(&self) -> &[u8] {
        self.buf.get(..self.text as usize).unwrap_or(&[])
    }

    /// Whether `r` is a piece of the text that starts and ends on character boundaries.
    fn fits(&self, r: &Range<usize>) -> bool {
        let text = self.text_bytes();
        // A UTF-8 continuation byte is 0b10xx_xxxx: anything else starts a character.
        let boundary =
            |i: usize| i == text.len() || text.get(i).is_some_and(|b| (*b as i8) >= -0x40);
        r.start <= r.end && r.end <= text.len() && boundary(r.start) && boundary(r.end)
    }

    /// Adds a field whose name and value are these ranges of the text given to
    /// [`Fields::over`]; false (and nothing added) when one is not a piece of it.
    pub fn push_span(&mut self, name: Range<usize>, value: Range<usize>) -> bool {
        if !self.fits(&name) || !self.fits(&value) {
            return false;
        }
        let (Some(name), Some(value)) = (span(name), span(value)) else {
            return false;
        };
        self.buf.extend_from_slice(&Span { name, value }.to_bytes());
        true
    }

    /// Adds a field at the end (its text goes into the room after the text so far).
    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text as usize;
        let name_end = start + name.len();
        let end = name_end + value.len();
        let room = (self.spans - self.text) as usize;
        let grow = if room < end - start {
            // At least the text's size again: the spans move a few times per head.
            (end - start - room).max(start).max(64)
        } else {
            0
        };
        let (Ok(text), Ok(spans), Some(n), Some(v)) = (
            u32::try_from(end),
            u32::try_from(self.spans as usize + grow),
            span(start..name_end),
            span(name_end..end),
        ) else {
            return;
        };
        if grow > 0 {
            // The spans move up by `grow`; what is left below them is room (its bytes are
            // written before the text takes them in).
            let (at, old) = (self.spans as usize, self.buf.len());
            self.buf.resize(old + grow, 0);
            self.buf.copy_within(at..old, at + grow);
            self.spans = spans;
        }
        // Both lie in the room (it was grown above): they cannot be missing.
        if let Some(to) = self.buf.get_mut(start..name_end) {
            to.copy_from_slice(name.as_bytes());
        }
        if let Some(to) = self.buf.get_mut(name_end..end) {
            to.copy_from_slice(value.as_bytes());
        }
        self.text = text;
        self.buf
            .extend_from_slice(&Span { name: n, value: v }.to_bytes());
    }

    /// Drops every field and the room, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.text = 0;
        self.spans = 0;
    }

    /// Fields held.
    pub fn len(&self) -> usize {
        self.buf.len().saturating_sub(self.spans as usize) / SPAN
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where its allocation starts (null for none), for a prefetch.
    pub fn heap(&self) -> *const u8 {
        if self.buf.capacity() > 0 {
            self.buf.as_ptr()
        } else {
            std::ptr::null()
        }
    }

    /// Bytes of text held (names, values and, for a parsed head, what came between them).
    pub fn text_len(&self) -> usize {
        self.text as usize
    }

    fn piece(&self, s: (u32, u32)) -> &str {
        let bytes = self.text_bytes().get(range(s)).unwrap_or(&[]);
        // SAFETY: the text is UTF-8 (`over` and `push` copy it from `&str`s and nothing else
        // writes it), and a span is stored only when both its ends are character boundaries
        // of it (`fits`, or the ends of the `&str`s `push` copied): a piece is UTF-8. A range
        // that were not in the text would give the empty slice, which is UTF-8 too.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn span_at(&self, i: usize) -> Option<Span> {
        let at = (self.spans as usize).checked_add(i.checked_mul(SPAN)?)?;
        self.buf
            .get(at..at.checked_add(SPAN)?)
            .map(Span::from_bytes)
    }

    fn pair(&self, s: Span) -> (&str, &str) {
        (self.piece(s.name), self.piece(s.value))
    }

    /// Field `i`: its name and value.
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        self.span_at(i).map(|s| self.pair(s))
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            fields: self,
            next: 0,
            end: self.len(),
        }
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The fields as owned pairs.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// Equal when the fields are, in order (however their text is laid out).
impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Fields {}

/// The fields of a [`Fields`] in order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    fields: &'a Fields,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let fields = self.fields;
        let pair = fields.get(self.next);
        self.next += 1;
        pair
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extend<(K, V)> for Fields {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.push(k.as_ref(), v.as_ref());
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut f = Fields::new();
        f.extend(iter);
        f
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Fields;

    #[test]
    fn fields_keep_order_names_and_values() {
        let mut f = Fields::with_capacity(2, 16);
        f.push("Host", "a");
        f.push("X-Empty", "");
        f.push("", "v");
        assert_eq!(f.len(), 3);
        let v: Vec<(&str, &str)> = f.iter().collect();
        assert_eq!(v, [("Host", "a"), ("X-Empty", ""), ("", "v")]);
        assert_eq!(f.get(1), Some(("X-Empty", "")));
        assert_eq!(f.get(2), Some(("", "v")));
        assert_eq!(f.get(3), None);
        assert_eq!(f.find("host"), Some("a"));
        assert_eq!(f.iter().len(), 3);
        assert_eq!(f.text_len(), 13);
    }

    #[test]
    fn fields_serialize_as_pairs_and_back() {
        let f: Fields = [("a", "1"), ("b", "2")].into_iter().collect();
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"[["a","1"],["b","2"]]"#);
        let back: Fields = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        assert_eq!(
            back.to_vec(),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn fields_over_a_text_are_its_pieces() {
        let mut f = Fields::over("Host: a\r\nX: caf\u{e9}\r\n", 2);
        assert!(f.push_span(0..4, 6..7));
        assert!(f.push_span(9..10, 12..17));
        // Past the end, or inside a character: left out.
        assert!(!f.push_span(0..4, 6..40));
        assert!(!f.push_span(9..10, 12..16));
        f.push("Added", "later");
        let v: Vec<(&str, &str)> = f.iter().collect();
        assert_eq!(v, [("Host", "a"), ("X", "caf\u{e9}"), ("Added", "later")]);
        // Equal to the same fields laid out another way.
        let same: Fields = v.iter().copied().collect();
        assert_eq!(f, same);
        assert_ne!(f, Fields::new());
    }

    #[test]
    fn a_parsed_heads_fields_take_one_allocation_sized_up_front() {
        let text = "Host: a\r\nAccept: */*\r\nX-Long: ".to_string() + &"v".repeat(300) + "\r\n";
        let mut f = Fields::over(&text, 3);
        let at = f.heap();
        assert!(!at.is_null());
        assert!(f.push_span(0..4, 6..7));
        assert!(f.push_span(9..15, 17..20));
        assert!(f.push_span(22..28, 30..330));
        assert_eq!(f.heap(), at, "room for the spans was taken with the text");
        assert_eq!(f.get(2).map(|(k, v)| (k, v.len())), Some(("X-Long", 300)));
        assert_eq!(f.get(3), None);
        assert_eq!(f.text_len(), text.len());
        // Spans on either side of the text's end, and empty pieces at its end.
        assert!(f.push_span(text.len()..text.len(), text.len()..text.len()));
        assert!(!f.push_span(0..4, 6..text.len() + 1));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 6..4;
        assert!(
            !f.push_span(backwards, 6..7),
            "a range that ends before it starts"
        );
        assert_eq!(f.get(3), Some(("", "")));
        f.clear();
        assert!(f.is_empty() && f.text_len() == 0);
        assert_eq!(Fields::new().heap(), std::ptr::null());
    }

    #[test]
    fn fields_pushed_one_by_one_go_into_room_before_the_spans() {
        let pairs: Vec<(String, String)> = (0..40)
            .map(|i| (format!("x-name-{i}"), "v\u{e9}".repeat(i % 5)))
            .collect();
        let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        // Room sized up front (as HTTP/2 heads are built): nothing moves.
        let mut f = Fields::with_capacity(pairs.len(), bytes);
        let at = f.heap();
        for (k, v) in &pairs {
            f.push(k, v);
        }
        assert_eq!(f.heap(), at, "the room and the spans were taken up front");
        assert_eq!(f.text_len(), bytes);
        // Without room (a scratch list, cleared and used again): it grows as needed.
        let mut g = Fields::new();
        for round in 0..2 {
            g.clear();
            for (k, v) in &pairs {
                g.push(k, v);
            }
            assert_eq!(g.len(), pairs.len(), "round {round}");
            assert_eq!(g, f, "round {round}");
        }
        let got: Vec<(String, String)> = g.to_vec();
        assert_eq!(got, pairs);
        // Parsed fields and pushed ones together.
        let mut h = Fields::over("A: 1\r\n", 2);
        assert!(h.push_span(0..1, 3..4));
        h.push("B", "2");
        assert!(!h.push_span(0..1, 3..40));
        assert_eq!(
            h.to_vec(),
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
    }
}
