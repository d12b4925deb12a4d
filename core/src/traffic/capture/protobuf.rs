//! Protobuf messages decoded without a schema: the wire format's fields (number, wire type,
//! value), with length-delimited values read as a nested message, text or bytes by heuristic.
//!
//! Bounded: [`MAX_DEPTH`] levels of nesting and [`MAX_FIELDS`] fields in all; never panics on
//! any input (fuzz target `h2`).

use base64::Engine;

/// Deepest nesting followed; deeper values stay bytes.
pub const MAX_DEPTH: usize = 12;
/// Most fields decoded in one message, nested ones included.
pub const MAX_FIELDS: usize = 2000;

/// A field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 5.
    Fixed32(u32),
    /// Wire type 2, read as a message.
    Message(Vec<Field>),
    /// Wire type 2, read as UTF-8 text.
    Text(String),
    /// Wire type 2, neither.
    Bytes(Vec<u8>),
}

/// One field on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field number.
    pub number: u64,
    /// The value.
    pub value: Value,
}

/// Reads a base-128 varint at the start of `b`: the value and its length.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Decodes `data` as a message; `None` when it is not one (a bad tag, a wire type that is
/// not used any more, a length past the end).
pub fn decode(data: &[u8]) -> Option<Vec<Field>> {
    let mut budget = MAX_FIELDS;
    decode_at(data, 0, &mut budget)
}

fn decode_at(mut data: &[u8], depth: usize, budget: &mut usize) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        let (tag, n) = varint(data)?;
        data = data.get(n..)?;
        let number = tag >> 3;
        if number == 0 || number > 0x1fff_ffff {
            return None;
        }
        let value = match tag & 7 {
            0 => {
                let (v, n) = varint(data)?;
                data = data.get(n..)?;
                Value::Varint(v)
            }
            1 => {
                let b: [u8; 8] = data.get(..8)?.try_into().ok()?;
                data = data.get(8..)?;
                Value::Fixed64(u64::from_le_bytes(b))
            }
            5 => {
                let b: [u8; 4] = data.get(..4)?.try_into().ok()?;
                data = data.get(4..)?;
                Value::Fixed32(u32::from_le_bytes(b))
            }
            2 => {
                let (len, n) = varint(data)?;
                let len = usize::try_from(len).ok()?;
                let bytes = data.get(n..n.checked_add(len)?)?;
                data = data.get(n + len..)?;
                length_delimited(bytes, depth, budget)
            }
            // 3 and 4 are the deprecated groups; 6 and 7 do not exist.
            _ => return None,
        };
        out.push(Field { number, value });
    }
    Some(out)
}

/// Text if it reads as text, else a nested message if it parses as one, else bytes.
fn length_delimited(bytes: &[u8], depth: usize, budget: &mut usize) -> Value {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if s.chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        {
            return Value::Text(s.to_string());
        }
    }
    if depth < MAX_DEPTH && !bytes.is_empty() {
        let before = *budget;
        if let Some(fields) = decode_at(bytes, depth + 1, budget) {
            return Value::Message(fields);
        }
        *budget = before;
    }
    Value::Bytes(bytes.to_vec())
}

/// The JSON the inspector shows: `[{"field": 1, "type": "varint", "value": 150}, ...]`.
pub fn to_json(fields: &[Field]) -> serde_json::Value {
    fields
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({"field": f.number});
            match &f.value {
                Value::Varint(x) => {
                    v["type"] = "varint".into();
                    v["value"] = (*x).into();
                    // Negative int32/int64 and zigzag sint values read better signed.
                    let signed = *x as i64;
                    if signed < 0 {
                        v["signed"] = signed.into();
                    }
                }
                Value::Fixed64(x) => {
                    v["type"] = "i64".into();
                    v["value"] = (*x).into();
                    let d = f64::from_bits(*x);
                    if d.is_finite() {
                        v["double"] = d.into();
                    }
                }
                Value::Fixed32(x) => {
                    v["type"] = "i32".into();
                    v["value"] = (*x).into();
                    let fl = f32::from_bits(*x);
                    if fl.is_finite() {
                        v["float"] = f64::from(fl).into();
                    }
                }
                Value::Message(m) => {
                    v["type"] = "message".into();
                    v["fields"] = to_json(m);
                }
                Value::Text(s) => {
                    v["type"] = "string".into();
                    v["value"] = s.clone().into();
                }
                Value::Bytes(b) => {
                    v["type"] = "bytes".into();
                    v["base64"] = base64::engine::general_purpose::STANDARD.encode(b).into();
                }
            }
            v
        })
        .collect::<Vec<_>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_wire_fields() {
        // field 1 varint 150; field 2 "testing"; field 3 nested {1: 1}; field 4 fixed32; field 5 fixed64
        let mut m = vec![0x08, 0x96, 0x01, 0x12, 0x07];
        m.extend_from_slice(b"testing");
        m.extend_from_slice(&[0x1a, 0x02, 0x08, 0x01]);
        m.extend_from_slice(&[0x25, 0, 0, 0x80, 0x3f]);
        m.extend_from_slice(&[0x29, 1, 0, 0, 0, 0, 0, 0, 0]);
        let f = decode(&m).unwrap();
        assert_eq!(f[0].value, Value::Varint(150));
        assert_eq!(f[1].value, Value::Text("testing".into()));
        assert_eq!(
            f[2].value,
            Value::Message(vec![Field {
                number: 1,
                value: Value::Varint(1)
            }])
        );
        assert_eq!(f[3].value, Value::Fixed32(0x3f80_0000));
        assert_eq!(f[4].value, Value::Fixed64(1));
        let j = to_json(&f);
        assert_eq!(j[3]["float"], 1.0);
        assert_eq!(j[2]["fields"][0]["value"], 1);
    }

    #[test]
    fn garbage_is_not_a_message() {
        assert_eq!(decode(&[]), Some(vec![]));
        assert_eq!(decode(&[0x00]), None, "field 0");
        assert_eq!(decode(&[0x0b]), None, "a group");
        assert_eq!(decode(&[0x12, 0x05, 1]), None, "past the end");
        assert_eq!(decode(&[0x08; 11]), None, "unterminated varint");
        // Non-text bytes that are not a message stay bytes.
        let f = decode(&[0x12, 0x02, 0xff, 0xff]).unwrap();
        assert_eq!(f[0].value, Value::Bytes(vec![0xff, 0xff]));
        // Deep nesting stops at the limit without recursion trouble.
        let mut deep = vec![0x08, 0x01];
        for _ in 0..100 {
            let mut outer = vec![0x0a, deep.len() as u8];
            if deep.len() > 127 {
                break;
            }
            outer.extend_from_slice(&deep);
            deep = outer;
        }
        assert!(decode(&deep).is_some());
    }
}
