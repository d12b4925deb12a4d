//! `overlay.toml`: serde with spans, then the checks serde cannot express, each with its line.

use super::{
    dns_name, env::is_reserved, line_of, valid_env_name, valid_key, valid_label, ConfigError,
    Dependency, Glob, Health, ServiceSpec, DEFAULT_DRAIN, DEFAULT_HEALTH_TIMEOUT, DEFAULT_PORT,
    DEFAULT_STOP_TIMEOUT,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    services: BTreeMap<Spanned<String>, Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: Option<Spanned<String>>,
    build: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    env: Option<BTreeMap<Spanned<String>, Spanned<Scalar>>>,
    depends_on: Option<Vec<Spanned<String>>>,
    health: Option<Spanned<RawHealth>>,
    watch: Option<Vec<Spanned<String>>>,
    tag: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<Seconds>>,
    drain: Option<Spanned<Seconds>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    http: Option<Spanned<String>>,
    tcp: Option<bool>,
    timeout: Option<Spanned<Seconds>>,
}

/// An env value: strings, numbers and booleans are all written out as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::String(s) => s,
            Scalar::Integer(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// A duration: `"30s"`, `"2m"` or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(i64),
    Text(String),
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn err_at(&self, offset: usize, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, line_of(self.text, offset), reason)
    }

    fn err<T>(&self, at: &Spanned<T>, reason: impl Into<String>) -> ConfigError {
        self.err_at(at.span().start, reason)
    }

    fn duration(&self, v: &Spanned<Seconds>, what: &str) -> Result<Duration, ConfigError> {
        let secs = match v.get_ref() {
            Seconds::Number(n) if *n >= 0 => Some(*n as u64),
            Seconds::Number(_) => None,
            Seconds::Text(t) => crate::duration::parse_secs(t).ok(),
        };
        match secs {
            Some(s) if s <= 3600 => Ok(Duration::from_secs(s)),
            _ => Err(self.err(
                v,
                format!("{what} must be a duration up to 1h, like \"30s\" or 30"),
            )),
        }
    }
}

/// Parses the text of an `overlay.toml` into services in file order.
pub(super) fn parse(file: &str, text: &str) -> Result<Vec<ServiceSpec>, ConfigError> {
    let ctx = Ctx { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        ConfigError::new(file, line, toml_reason(e.message()))
    })?;
    let mut entries: Vec<_> = raw.services.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
        .into_iter()
        .map(|(key, svc)| service(&ctx, key, svc.into_inner()))
        .collect()
}

/// Turns serde's wording into a sentence that says what to do.
fn toml_reason(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let m = joined.trim_end_matches('.');
    if m.starts_with("unknown field") {
        format!("{m}; remove or rename the key")
    } else if m.starts_with("missing field") {
        format!("{m}; add it")
    } else if m.starts_with("data did not match any variant") {
        "this value has the wrong type; env values are strings, numbers or booleans, durations \
         are like \"30s\""
            .to_string()
    } else {
        format!("{m}; fix the TOML syntax")
    }
}

fn label(ctx: &Ctx, v: &Spanned<String>, what: &str) -> Result<String, ConfigError> {
    let s = v.get_ref();
    if valid_label(s) {
        Ok(s.clone())
    } else {
        Err(ctx.err(
            v,
            format!(
                "'{s}' is not a valid {what}: use 1-63 characters of a-z, 0-9 and '-', not \
                 starting or ending with '-'"
            ),
        ))
    }
}

fn service(ctx: &Ctx, key: Spanned<String>, raw: RawService) -> Result<ServiceSpec, ConfigError> {
    let k = key.get_ref().clone();
    if !valid_key(&k) {
        return Err(ctx.err(
            &key,
            format!(
                "'{k}' is not a valid service key: use 1-63 characters of letters, digits, '-' \
                 and '_'"
            ),
        ));
    }
    let command = match &raw.command {
        // A NUL cannot reach `sh -c`: refuse it here, as the Procfile parser does.
        Some(c) if c.get_ref().contains('\0') => {
            return Err(ctx.err(c, format!("service {k} has a NUL byte in its command")))
        }
        Some(c) if !c.get_ref().trim().is_empty() => c.get_ref().clone(),
        Some(c) => return Err(ctx.err(c, format!("service {k} has an empty command"))),
        None => {
            return Err(ctx.err(
                &key,
                format!("service {k} has no command; add command = \"...\" to [services.{k}]"),
            ))
        }
    };
    let name = match &raw.name {
        Some(n) => label(ctx, n, "service name")?,
        None => match dns_name(&k) {
            Ok(n) => n,
            Err(mapped) => {
                return Err(ctx.err(
                    &key,
                    format!(
                        "'{k}' would be '{mapped}' on the overlay, which is no DNS name (a-z, \
                         0-9 and '-', not starting or ending with '-'); rename the table or add \
                         name = \"...\""
                    ),
                ))
            }
        },
    };
    let tag = raw.tag.as_ref().map(|t| label(ctx, t, "tag")).transpose()?;
    let port = match &raw.port {
        None => DEFAULT_PORT,
        Some(p) => match u16::try_from(*p.get_ref()) {
            Ok(n) if n != 0 => n,
            _ => return Err(ctx.err(p, "port must be between 1 and 65535")),
        },
    };
    let build = match &raw.build {
        Some(b) if b.get_ref().trim().is_empty() => {
            return Err(ctx.err(
                b,
                format!("service {k} has an empty build command; remove it"),
            ))
        }
        Some(b) if b.get_ref().contains('\0') => {
            return Err(ctx.err(
                b,
                format!("service {k} has a NUL byte in its build command"),
            ))
        }
        Some(b) => Some(b.get_ref().clone()),
        None => None,
    };
    let mut env = Vec::new();
    for (name, value) in raw.env.unwrap_or_default() {
        let n = name.get_ref();
        if !valid_env_name(n) {
            return Err(ctx.err(
                &name,
                format!("'{n}' is not a valid environment variable name"),
            ));
        }
        if is_reserved(n) {
            return Err(ctx.err(
                &name,
                format!("{n} is set by overlay for every service; remove it from env"),
            ));
        }
        let span = value.span().start;
        let v = value.into_inner().into_string();
        if v.contains('\0') {
            return Err(ctx.err_at(span, format!("the value of {n} contains a NUL byte")));
        }
        env.push((n.clone(), v));
    }
    let mut depends_on: Vec<Dependency> = Vec::new();
    for d in raw.depends_on.unwrap_or_default() {
        let dep = d.get_ref();
        if dep == &k {
            return Err(ctx.err(
                &d,
                format!("service {k} depends on itself; remove it from depends_on"),
            ));
        }
        if depends_on.iter().any(|x| &x.key == dep) {
            return Err(ctx.err(&d, format!("{dep} is listed twice in depends_on")));
        }
        depends_on.push(Dependency {
            key: dep.clone(),
            line: line_of(ctx.text, d.span().start),
        });
    }
    let (health, health_explicit, health_timeout) = match raw.health {
        None => (Health::Tcp, false, DEFAULT_HEALTH_TIMEOUT),
        Some(h) => {
            let at = h.span().start;
            let h = h.into_inner();
            let timeout = match &h.timeout {
                Some(t) => ctx.duration(t, "health.timeout")?,
                None => DEFAULT_HEALTH_TIMEOUT,
            };
            let kind = match (h.http, h.tcp) {
                (Some(_), Some(_)) => {
                    return Err(ctx.err_at(at, "health has both http and tcp; keep one of them"))
                }
                (Some(p), None) => {
                    let path = p.get_ref();
                    if !path.starts_with('/')
                        || path.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(ctx.err(
                            &p,
                            format!("health.http must be a path like \"/healthz\", not '{path}'"),
                        ));
                    }
                    Health::Http(path.clone())
                }
                (None, Some(true)) => Health::Tcp,
                (None, Some(false)) => Health::None,
                (None, None) => {
                    return Err(ctx.err_at(
                        at,
                        "health needs http = \"/path\" or tcp = true (or tcp = false for no check)",
                    ))
                }
            };
            (kind, true, timeout)
        }
    };
    let stop_timeout = match &raw.stop_timeout {
        Some(t) => ctx.duration(t, "stop_timeout")?,
        None => DEFAULT_STOP_TIMEOUT,
    };
    let drain = match &raw.drain {
        Some(t) => ctx.duration(t, "drain")?,
        None => DEFAULT_DRAIN,
    };
    let mut watch = Vec::new();
    for w in raw.watch.unwrap_or_default() {
        let g = Glob::new(w.get_ref()).map_err(|e| ctx.err(&w, e.to_string()))?;
        watch.push(g);
    }
    Ok(ServiceSpec {
        line: line_of(ctx.text, key.span().start),
        key: k,
        name,
        tag,
        command,
        build,
        port,
        env,
        depends_on,
        health,
        health_explicit,
        health_timeout,
        stop_timeout,
        drain,
        watch,
    })
}
