//! `.env` files: `KEY=VALUE` lines, as most tools write them.
//!
//! - blank lines and lines starting with `#` are skipped; an `export ` prefix is allowed;
//! - unquoted values are trimmed and end at ` #` (a comment);
//! - `'single'` quotes are literal; `"double"` quotes understand `\n`, `\t`, `\"` and `\\`;
//! - no variable expansion, no multi-line values.

use super::{valid_env_name, ConfigError};

/// Parses the text of a `.env` file, in file order (a later duplicate wins when applied).
pub fn parse(file: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
        let Some((key, rest)) = l.split_once('=') else {
            return Err(ConfigError::new(
                file,
                line,
                "expected KEY=VALUE; add '=' after the name",
            ));
        };
        let key = key.trim();
        if !valid_env_name(key) {
            return Err(ConfigError::new(
                file,
                line,
                format!("'{key}' is not a valid environment variable name"),
            ));
        }
        let value = value(rest.trim_start()).map_err(|r| ConfigError::new(file, line, r))?;
        if value.contains('\0') {
            return Err(ConfigError::new(
                file,
                line,
                "the value contains a NUL byte",
            ));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn value(v: &str) -> Result<String, String> {
    if let Some(body) = v.strip_prefix('\'') {
        let Some(end) = body.find('\'') else {
            return Err("the single quote is not closed; close it on the same line".into());
        };
        trailing(&body[end + 1..])?;
        return Ok(body[..end].to_string());
    }
    if let Some(body) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    trailing(&body[i + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, other)) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("the double quote is not closed; close it on the same line".into());
    }
    let end = v.find(" #").unwrap_or(v.len());
    Ok(v[..end].trim_end().to_string())
}

fn trailing(rest: &str) -> Result<(), String> {
    let r = rest.trim();
    if r.is_empty() || r.starts_with('#') {
        Ok(())
    } else {
        Err(format!(
            "unexpected '{r}' after the quoted value; quote the whole value"
        ))
    }
}
