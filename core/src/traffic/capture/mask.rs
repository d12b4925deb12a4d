//! Masking of credentials in captured records, for the inspector's views.
//!
//! Records keep the real bytes (replay must send them); what the inspector and
//! `overlay traffic` show goes through [`mask_record`] or [`mask_target`] unless the owner asks
//! for the revealed view. A masked value keeps what helps debugging (the auth scheme, cookie
//! names and attributes, the length) and hides the secret: `Bearer ••••(len 40)`.

use super::record::{MessageRecord, Record, RecordKind};
use crate::traffic::http1::Fields;

/// What replaces a secret; the length follows it.
pub const MARK: &str = "••••";

/// Headers that always carry credentials (lower case).
const HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-amz-security-token",
    "x-goog-api-key",
];

/// Parts of a header or query parameter name that mark it as a credential (lower case).
const MARKERS: &[&str] = &[
    "token", "secret", "password", "passwd", "apikey", "api-key", "api_key", "session",
];

/// Query parameters that are credentials by their exact name (lower case).
const PARAMS: &[&str] = &["key", "auth", "sig", "signature", "pass", "pwd", "code"];

/// Set-Cookie attributes, shown as they are.
const COOKIE_ATTRIBUTES: &[&str] = &[
    "path",
    "domain",
    "expires",
    "max-age",
    "samesite",
    "secure",
    "httponly",
    "partitioned",
    "priority",
];

/// An auth scheme (`Bearer`, `Basic`, `AWS4-HMAC-SHA256`): a short token, never the secret.
fn is_scheme(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A cookie name as RFC 6265 allows it (an HTTP token), short; anything else may be a
/// misplaced value and is hidden with it.
fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn has_marker(lower: &str) -> bool {
    MARKERS.iter().any(|m| lower.contains(m))
}

/// Whether a header's value is a credential (the name in any case).
pub fn is_sensitive_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    HEADERS.contains(&lower.as_str()) || has_marker(&lower)
}

/// Whether a query parameter's value is a credential.
pub fn is_sensitive_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    PARAMS.contains(&lower.as_str()) || has_marker(&lower)
}

/// `••••(len N)`, N in bytes; empty values stay empty (nothing to hide, and it shows).
fn hidden(secret: &str) -> String {
    if secret.is_empty() {
        return String::new();
    }
    format!("{MARK}(len {})", secret.len())
}

/// `name=value` pairs separated by `;`, each value masked: `a=••••(len 3); b=••••(len 5)`.
fn mask_pairs(value: &str) -> String {
    value
        .split(';')
        .map(|pair| {
            let pair = pair.trim();
            match pair.split_once('=') {
                Some((k, v)) if is_cookie_name(k) => format!("{k}={}", hidden(v)),
                _ => hidden(pair),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The masked form of header `name`'s value; values of other headers come back unchanged.
pub fn mask_header(name: &str, value: &str) -> String {
    if !is_sensitive_header(name) {
        return value.to_string();
    }
    match name.to_ascii_lowercase().as_str() {
        // Keep the scheme: `Bearer`, `Basic`, `Digest` tell what went wrong often enough.
        "authorization" | "proxy-authorization" => match value.trim().split_once(' ') {
            Some((scheme, rest)) if is_scheme(scheme) => {
                format!("{scheme} {}", hidden(rest.trim()))
            }
            _ => hidden(value),
        },
        "cookie" => mask_pairs(value),
        // The first pair is the cookie; the attributes (Path, HttpOnly, ...) are no secret,
        // anything else after it is treated as one.
        "set-cookie" => {
            let mut parts = value.split(';');
            let cookie = parts.next().unwrap_or("").trim();
            let mut out = match cookie.split_once('=') {
                Some((k, v)) if is_cookie_name(k) => format!("{k}={}", hidden(v)),
                _ => hidden(cookie),
            };
            for attr in parts {
                let attr = attr.trim();
                let name = attr.split_once('=').map_or(attr, |(k, _)| k);
                let known = COOKIE_ATTRIBUTES
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(name.trim()));
                out.push_str("; ");
                out.push_str(&if known {
                    attr.to_string()
                } else {
                    hidden(attr)
                });
            }
            out
        }
        _ => hidden(value),
    }
}

/// The masked header list.
pub fn mask_headers(headers: &Fields) -> Fields {
    let mut out = Fields::with_capacity(headers.len(), headers.text_len());
    for (k, v) in headers {
        out.push(k, &mask_header(k, v));
    }
    out
}

/// A request target with the values of credential query parameters masked
/// (`/cb?code=••••(len 8)&state=x`); the path and other parameters are unchanged.
pub fn mask_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let query = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, v)) if is_sensitive_param(k) => format!("{k}={}", hidden(v)),
            _ => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(f) => format!("{path}?{query}#{f}"),
        None => format!("{path}?{query}"),
    }
}

fn mask_message(m: &MessageRecord) -> MessageRecord {
    let mut m = m.clone();
    m.head.headers = mask_headers(&m.head.headers);
    m.head.target = m.head.target.as_deref().map(mask_target);
    // HTTP/2 and gRPC metadata sent as trailers are headers like any other.
    m.trailers = mask_headers(&m.trailers);
    m
}

/// The record as the inspector shows it by default: credentials in headers and the target's
/// query masked. Bodies are shown as captured.
pub fn mask_record(r: &Record) -> Record {
    let mut out = r.clone();
    if let RecordKind::Exchange {
        request, response, ..
    } = &mut out.kind
    {
        *request = mask_message(request);
        if let Some(resp) = response {
            *resp = mask_message(resp);
        }
    }
    out
}

/// Undoes masking in replay edits: an edited header whose value is still exactly the masked
/// form of the captured one (the UI pre-fills its edit form from the masked view) gets the
/// captured value back, so an edited replay still carries the real credentials.
pub fn unmask_headers(captured: &Fields, edited: Vec<(String, String)>) -> Vec<(String, String)> {
    edited
        .into_iter()
        .map(|(k, v)| {
            let original = captured
                .iter()
                .filter(|(ck, _)| ck.eq_ignore_ascii_case(&k))
                .find(|(ck, cv)| mask_header(ck, cv) == v && *cv != v);
            match original {
                Some((_, cv)) => (k, cv.to_string()),
                None => (k, v),
            }
        })
        .collect()
}

/// Undoes masking of an edited target: the masked form of the captured target gives the
/// captured target back.
pub fn unmask_target(captured: &str, edited: String) -> String {
    if edited != captured && mask_target(captured) == edited {
        captured.to_string()
    } else {
        edited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keeps_the_scheme_and_the_length() {
        let secret = "secret-0123456789abcdef0123456789abcdef";
        assert_eq!(
            mask_header("Authorization", &format!("Bearer {secret}")),
            format!("Bearer ••••(len {})", secret.len())
        );
        assert_eq!(
            mask_header("PROXY-AUTHORIZATION", "Basic dXNlcjpwdw=="),
            "Basic ••••(len 12)"
        );
        assert_eq!(mask_header("authorization", "opaque"), "••••(len 6)");
    }

    #[test]
    fn cookies_keep_names_and_attributes() {
        assert_eq!(
            mask_header("Cookie", "sid=abc; theme=dark"),
            "sid=••••(len 3); theme=••••(len 4)"
        );
        assert_eq!(
            mask_header("Set-Cookie", "sid=abcdef; Path=/; HttpOnly"),
            "sid=••••(len 6); Path=/; HttpOnly"
        );
    }

    #[test]
    fn api_keys_and_the_like_are_masked_and_other_headers_are_not() {
        for name in [
            "X-Api-Key",
            "x-auth-token",
            "X-Session-Id",
            "My-Secret",
            "X-Amz-Security-Token",
        ] {
            assert_eq!(mask_header(name, "k123"), "••••(len 4)", "{name}");
        }
        for name in ["Content-Type", "Host", "Accept", "WWW-Authenticate"] {
            assert_eq!(mask_header(name, "text/plain"), "text/plain", "{name}");
        }
        assert_eq!(mask_header("X-Api-Key", ""), "");
    }

    #[test]
    fn credential_query_parameters_are_masked() {
        assert_eq!(
            mask_target("/cb?code=abcdefgh&state=x"),
            "/cb?code=••••(len 8)&state=x"
        );
        assert_eq!(
            mask_target("/a?access_token=t0k&API_KEY=k&page=2"),
            "/a?access_token=••••(len 3)&API_KEY=••••(len 1)&page=2"
        );
        assert_eq!(mask_target("/orders/7?x=1"), "/orders/7?x=1");
        assert_eq!(mask_target("/plain"), "/plain");
        assert_eq!(mask_target("/x?key"), "/x?key");
    }

    #[test]
    fn masked_edits_get_the_captured_values_back() {
        let captured: Fields = [("Authorization", "Bearer s3cret"), ("Accept", "*/*")]
            .into_iter()
            .collect();
        let edited = mask_headers(&captured);
        assert_ne!(edited, captured);
        assert_eq!(
            unmask_headers(&captured, edited.to_vec()),
            captured.to_vec()
        );
        // A value the owner changed is sent as typed.
        let typed = vec![("Authorization".to_string(), "Bearer other".to_string())];
        assert_eq!(unmask_headers(&captured, typed.clone()), typed);
        // A masked-looking value for a header that was not captured stays as typed.
        let foreign = vec![("Cookie".to_string(), "a=••••(len 3)".to_string())];
        assert_eq!(unmask_headers(&captured, foreign.clone()), foreign);
        let target = "/cb?code=abc&x=1";
        assert_eq!(unmask_target(target, mask_target(target)), target);
        assert_eq!(unmask_target(target, "/other".into()), "/other");
    }

    #[test]
    fn odd_values_never_panic_nor_leak() {
        for v in ["", " ", ";", "=", "a=;=b", "Bearer", "Bearer ", "é=ü; ☃"] {
            for n in ["Authorization", "Cookie", "Set-Cookie", "X-Api-Key"] {
                let _ = mask_header(n, v);
                let leaky = format!("{v}zzsecretzz{v}");
                let leaky = if n == "Set-Cookie" {
                    format!("{leaky}; Path=/")
                } else {
                    leaky
                };
                assert!(
                    !mask_header(n, &leaky).contains("zzsecretzz"),
                    "{n}: {leaky}"
                );
            }
            let _ = mask_target(&format!("/?{v}&token={v}#{v}"));
        }
    }
}
