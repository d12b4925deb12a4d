//! `watch` globs: paths relative to the config's directory, `/`-separated.
//!
//! `*` matches within one path segment, `**` (a whole segment) matches any number of segments,
//! `?` one character, `[abc]`, `[a-z]` and `[!a-z]` one character of (or not of) a set. A
//! pattern without wildcards matches that file and everything under it (`watch = ["src"]`).

use std::fmt;

/// A compiled glob.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    segments: Vec<Segment>,
    literal: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// `**`.
    Any,
    /// A segment pattern (may be a plain literal).
    Part(Vec<Token>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    Star,
    Question,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a glob was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// Empty pattern.
    #[error("a watch glob is empty; remove it")]
    Empty,
    /// Starts with `/`.
    #[error("watch glob '{0}' is absolute; write it relative to the config's directory")]
    Absolute(String),
    /// `[` without `]`.
    #[error("watch glob '{0}' has a '[' without ']'; close it or escape it as '[[]'")]
    Unclosed(String),
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let p = pattern.trim();
        if p.is_empty() {
            return Err(GlobError::Empty);
        }
        if p.starts_with('/') {
            return Err(GlobError::Absolute(p.to_string()));
        }
        let mut segments = Vec::new();
        for seg in p.split('/').filter(|s| !s.is_empty() && *s != ".") {
            if seg == "**" {
                if segments.last() != Some(&Segment::Any) {
                    segments.push(Segment::Any);
                }
                continue;
            }
            segments.push(Segment::Part(
                tokens(seg).ok_or_else(|| GlobError::Unclosed(p.to_string()))?,
            ));
        }
        if segments.is_empty() {
            // "." or "./": the whole directory.
            segments.push(Segment::Any);
        }
        let literal = segments.iter().all(|s| match s {
            Segment::Any => false,
            Segment::Part(t) => t.iter().all(|t| matches!(t, Token::Char(_))),
        });
        Ok(Glob {
            text: p.to_string(),
            segments,
            literal,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The leading segments without wildcards: the directory (or file) a walk can start from.
    pub fn base(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        for s in &self.segments {
            match s {
                Segment::Part(t) if t.iter().all(|t| matches!(t, Token::Char(_))) => {
                    out.push(
                        t.iter()
                            .filter_map(|t| match t {
                                Token::Char(c) => Some(*c),
                                _ => None,
                            })
                            .collect(),
                    );
                }
                _ => break,
            }
        }
        out.join("/")
    }

    /// Whether the relative path `path` (`/`-separated) matches.
    pub fn matches(&self, path: &str) -> bool {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        if self.literal {
            // A plain path: the file itself or anything below it.
            let n = self.segments.len();
            return parts.len() >= n
                && self.segments.iter().zip(&parts).all(|(s, p)| match s {
                    Segment::Part(t) => match_segment(t, p),
                    Segment::Any => true,
                });
        }
        match_from(&self.segments, &parts)
    }
}

fn tokens(seg: &str) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut chars = seg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
            }
            '?' => out.push(Token::Question),
            '[' => {
                let negated = matches!(chars.peek(), Some('!') | Some('^'));
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = chars.next()?;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    if chars.peek() == Some(&'-') {
                        let mut ahead = chars.clone();
                        ahead.next();
                        match ahead.peek() {
                            Some(&hi) if hi != ']' => {
                                chars.next();
                                chars.next();
                                ranges.push((c, hi));
                                continue;
                            }
                            _ => {}
                        }
                    }
                    ranges.push((c, c));
                }
                out.push(Token::Class { negated, ranges });
            }
            c => out.push(Token::Char(c)),
        }
    }
    Some(out)
}

fn match_from(segs: &[Segment], parts: &[&str]) -> bool {
    match segs.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => (0..=parts.len()).any(|i| match_from(rest, &parts[i..])),
        Some((Segment::Part(t), rest)) => match parts.split_first() {
            Some((p, more)) => match_segment(t, p) && match_from(rest, more),
            None => false,
        },
    }
}

fn match_segment(tokens: &[Token], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    // Classic wildcard matching with one backtrack point for the last star.
    let (mut t, mut c) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while c < chars.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, c));
                t += 1;
                continue;
            }
            Some(tok) if one(tok, chars[c]) => {
                t += 1;
                c += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, sc)) => {
                t = st + 1;
                c = sc + 1;
                star = Some((st, sc + 1));
            }
            None => return false,
        }
    }
    tokens[t.min(tokens.len())..]
        .iter()
        .all(|tok| *tok == Token::Star)
}

fn one(tok: &Token, ch: char) -> bool {
    match tok {
        Token::Char(x) => *x == ch,
        Token::Question => true,
        Token::Star => false,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= ch && ch <= hi) != *negated
        }
    }
}
