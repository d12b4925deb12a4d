//! Header (and trailer) fields in one buffer.
//!
//! The capture makes a head per message and frees it when the ring evicts the record: with a
//! `String` pair per field that was two allocations and two frees per field, the capture's
//! largest cost after copying bodies. Here a head's fields take two allocations whatever
//! their number: the names and values one after the other in one string, and where each ends.

use serde::ser::SerializeSeq;
use std::fmt;

/// Fields in order, names as sent (serialized as a list of `[name, value]` pairs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// Names and values, back to back.
    text: String,
    /// Per field: where its name ends (its value starts) and where its value ends in `text`;
    /// it starts where the field before it ends.
    ends: Vec<(usize, usize)>,
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
            ends: Vec::with_capacity(fields),
        }
    }

    /// Adds a field at the end.
    pub fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.text.len();
        self.text.push_str(value);
        self.ends.push((name_end, self.text.len()));
    }

    /// Drops every field, keeping the room.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Fields held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of all names and values.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Field `i`: its name and value.
    pub fn get(&self, i: usize) -> Option<(&str, &str)> {
        let start = match i.checked_sub(1) {
            Some(p) => self.ends.get(p)?.1,
            None => 0,
        };
        let (name_end, end) = *self.ends.get(i)?;
        Some((
            self.text.get(start..name_end).unwrap_or(""),
            self.text.get(name_end..end).unwrap_or(""),
        ))
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            fields: self,
            start: 0,
            next: 0,
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

/// The fields of a [`Fields`] in order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    fields: &'a Fields,
    /// Where the next field starts in the text.
    start: usize,
    next: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (name_end, end) = *self.fields.ends.get(self.next)?;
        let t = &self.fields.text;
        let item = (
            t.get(self.start..name_end).unwrap_or(""),
            t.get(name_end..end).unwrap_or(""),
        );
        self.start = end;
        self.next += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.fields.ends.len().saturating_sub(self.next);
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
}
