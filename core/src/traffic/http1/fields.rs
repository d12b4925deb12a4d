//! Header (and trailer) fields in one buffer.
//!
//! The capture makes a head per message and frees it when the ring evicts the record: with a
//! `String` pair per field that was two allocations and two frees per field, the capture's
//! largest cost after copying bodies. Here a head's fields take two allocations whatever
//! their number: one text, and where each name and value lies in it. A parsed head's text is
//! its header lines as sent (one copy of them), so a field costs no copy of its own.

use serde::ser::SerializeSeq;
use std::fmt;
use std::ops::Range;

/// Where one field's name and value lie in the text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

/// Fields in order, names as sent (serialized as a list of `[name, value]` pairs).
#[derive(Clone, Default)]
pub struct Fields {
    /// Names and values (with what came between them, for a parsed head).
    text: String,
    spans: Vec<Span>,
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
        Fields {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(fields),
        }
    }

    /// No fields yet, over a copy of `text` (a head's header lines); [`Fields::push_span`]
    /// adds fields that are pieces of it.
    pub fn over(text: &str, fields: usize) -> Self {
        Fields {
            text: text.to_owned(),
            spans: Vec::with_capacity(fields),
        }
    }

    /// Adds a field whose name and value are these ranges of the text given to
    /// [`Fields::over`]; false (and nothing added) when one is not a piece of it.
    pub fn push_span(&mut self, name: Range<usize>, value: Range<usize>) -> bool {
        let fits = |r: &Range<usize>| self.text.get(r.clone()).is_some();
        if !fits(&name) || !fits(&value) {
            return false;
        }
        let (Some(name), Some(value)) = (span(name), span(value)) else {
            return false;
        };
        self.spans.push(Span { name, value });
        true
    }

    /// Adds a field at the end.
    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        // Pieces of the text just written: they fit (unless it outgrew u32).
        self.push_span(start..name_end, name_end..self.text.len());
    }

    /// Drops every field, keeping the room.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    /// Fields held.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Where its two allocations start (text and spans; null for none), for a prefetch.
    pub fn heap(&self) -> [*const u8; 2] {
        let text = (self.text.capacity() > 0).then(|| self.text.as_ptr());
        let spans = (self.spans.capacity() > 0).then(|| self.spans.as_ptr().cast());
        [text, spans].map(|p| p.unwrap_or(std::ptr::null()))
    }

    /// Bytes of text held (names, values and, for a parsed head, what came between them).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    fn piece(&self, s: (u32, u32)) -> &str {
        self.text.get(range(s)).unwrap_or("")
    }

    fn pair(&self, s: &Span) -> (&str, &str) {
        (self.piece(s.name), self.piece(s.value))
    }

    /// Field `i`: its name and value.
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        self.spans.get(i).map(|s| self.pair(s))
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            fields: self,
            spans: self.spans.iter(),
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
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let fields = self.fields;
        self.spans.next().map(|s| fields.pair(s))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
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
}
