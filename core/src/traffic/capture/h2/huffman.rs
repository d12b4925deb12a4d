//! HPACK's Huffman code (RFC 7541, Appendix B) decoded with a tree built once, and header
//! blocks rewritten with their Huffman strings as plain ones before `loona-hpack` decodes them:
//! loona-hpack builds its Huffman tables anew for every string, which cost the capture most of
//! its CPU at high request rates (docs/benchmarks.md, part `capture`).
//!
//! [`plain_block`] only changes how strings are written, never what they say, so the decoder's
//! dynamic table evolves exactly as it would have. Input it cannot follow is left to the decoder
//! as it was (which reports the error). Never panics.

use std::sync::OnceLock;

/// (code, length in bits) of symbols 0 to 255 and EOS (256), from RFC 7541, Appendix B.
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

/// A binary tree over the code: node `i` has children `2 * i` style indices in `next`; leaves
/// hold a symbol.
struct Tree {
    /// For each node: the child for bit 0 and for bit 1 (`u16::MAX`: none).
    next: Vec<[u16; 2]>,
    /// For each node: its symbol, if it is a leaf.
    sym: Vec<Option<u16>>,
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut t = Tree {
            next: vec![[u16::MAX; 2]],
            sym: vec![None],
        };
        for (s, &(code, len)) in CODES.iter().enumerate() {
            let mut n = 0usize;
            for i in (0..len).rev() {
                let bit = ((code >> i) & 1) as usize;
                let child = t.next.get(n).map_or(u16::MAX, |c| c[bit]);
                n = if child == u16::MAX {
                    let id = t.next.len();
                    t.next.push([u16::MAX; 2]);
                    t.sym.push(None);
                    if let Some(c) = t.next.get_mut(n) {
                        c[bit] = id as u16;
                    }
                    id
                } else {
                    usize::from(child)
                };
            }
            if let Some(x) = t.sym.get_mut(n) {
                *x = Some(s as u16);
            }
        }
        t
    })
}

/// Decodes a Huffman-coded string; `None` for an invalid one (EOS inside, bad padding).
#[cfg(test)]
fn decode(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() * 8 / 5);
    decode_into(data, &mut out).then_some(out)
}

/// Appends the Huffman-coded string `data`, decoded, to `out`; false (and `out` as it was) for
/// an invalid one (EOS inside, bad padding).
fn decode_into(data: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let ok = decode_each(data, |b| out.push(b)).is_some();
    if !ok {
        out.truncate(start);
    }
    ok
}

fn decode_each(data: &[u8], mut put: impl FnMut(u8)) -> Option<()> {
    let t = tree();
    let mut n = 0usize;
    // Bits read since the last symbol, and whether all were ones (padding must be EOS's prefix).
    let mut pending = 0u32;
    let mut ones = true;
    for byte in data {
        for i in (0..8).rev() {
            let bit = usize::from((byte >> i) & 1);
            n = usize::from(*t.next.get(n)?.get(bit)?);
            if n == usize::from(u16::MAX) {
                return None;
            }
            pending += 1;
            ones &= bit == 1;
            if let Some(s) = *t.sym.get(n)? {
                if s == 256 {
                    return None;
                }
                put(s as u8);
                n = 0;
                pending = 0;
                ones = true;
            }
        }
    }
    (pending <= 7 && ones).then_some(())
}

/// An HPACK integer with an `n`-bit prefix at the start of `b`: its value and length.
fn integer(b: &[u8], n: u8) -> Option<(usize, usize)> {
    let mask = (1u16 << n) as usize - 1;
    let mut v = usize::from(*b.first()?) & mask;
    if v < mask {
        return Some((v, 1));
    }
    for (i, byte) in b.iter().enumerate().skip(1).take(4) {
        v = v.checked_add(usize::from(byte & 0x7f) << (7 * (i - 1)))?;
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Copies the string literal at the start of `b` to `out`, Huffman decoded (through `tmp`); its
/// length in `b`.
fn string(b: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Option<usize> {
    let huffman = b.first()? & 0x80 != 0;
    let (len, n) = integer(b, 7)?;
    let raw = b.get(n..n.checked_add(len)?)?;
    if !huffman {
        out.extend_from_slice(b.get(..n + len)?);
        return Some(n + len);
    }
    tmp.clear();
    if !decode_into(raw, tmp) {
        return None;
    }
    put_integer(out, 0x00, 7, tmp.len());
    out.extend_from_slice(tmp);
    Some(n + len)
}

fn put_integer(out: &mut Vec<u8>, flags: u8, n: u8, v: usize) {
    let mask = (1usize << n) - 1;
    if v < mask {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = v - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Writes the block to `out` with every Huffman string written plain; false when it has none
/// (use it as it is) or cannot be followed (leave it to the decoder). `out` and `tmp` are the
/// caller's, kept between blocks, so that a block costs no allocation.
pub fn plain_block(block: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) -> bool {
    out.clear();
    rewrite(block, out, tmp).unwrap_or(false)
}

fn rewrite(block: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Option<bool> {
    // Most blocks after the first are indexed fields only: nothing to rewrite.
    out.reserve(block.len() * 2);
    let mut rest = block;
    let mut any = false;
    while let Some(&first) = rest.first() {
        let (prefix, literal) = match first {
            b if b & 0x80 != 0 => (7, false),
            b if b & 0x40 != 0 => (6, true),
            b if b & 0x20 != 0 => (5, false),
            _ => (4, true),
        };
        let (index, n) = integer(rest, prefix)?;
        out.extend_from_slice(rest.get(..n)?);
        rest = rest.get(n..)?;
        if literal {
            if index == 0 {
                any |= rest.first()? & 0x80 != 0;
                let used = string(rest, out, tmp)?;
                rest = rest.get(used..)?;
            }
            any |= rest.first()? & 0x80 != 0;
            let used = string(rest, out, tmp)?;
            rest = rest.get(used..)?;
        }
    }
    Some(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_rfc_7541_examples() {
        // C.4.1: "www.example.com" Huffman coded.
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(decode(&www).as_deref(), Some(&b"www.example.com"[..]));
        // C.6.1: "302" and "private".
        assert_eq!(decode(&[0x64, 0x02]).as_deref(), Some(&b"302"[..]));
        assert_eq!(
            decode(&[0xae, 0xc3, 0x77, 0x1a, 0x4b]).as_deref(),
            Some(&b"private"[..])
        );
        // Padding that is not EOS's prefix, and too much of it.
        assert_eq!(decode(&[0x64]), None);
        assert_eq!(decode(&[0xff, 0xff]), None);
        // The C.4.1 request block, rewritten, decodes to the same fields.
        let mut block = vec![0x82, 0x86, 0x84, 0x41, 0x8c];
        block.extend_from_slice(&www);
        let (mut plain, mut tmp) = (Vec::new(), Vec::new());
        assert!(plain_block(&block, &mut plain, &mut tmp));
        let mut a = loona_hpack::Decoder::new();
        let mut b = loona_hpack::Decoder::new();
        assert_eq!(a.decode(&block).unwrap(), b.decode(&plain).unwrap());
        // The same buffers serve the next block.
        assert!(plain_block(&block, &mut plain, &mut tmp));
        assert_eq!(a.decode(&block).unwrap(), b.decode(&plain).unwrap());
        assert!(
            !plain_block(&[0x82, 0x86], &mut plain, &mut tmp),
            "nothing to rewrite"
        );
        assert!(
            !plain_block(&[0x41, 0x8c, 0xf1], &mut plain, &mut tmp),
            "cut short"
        );
    }
}
