//! Procfiles: one `name: command` per line; blank lines and `#` comments are skipped.
//! Every entry gets [`DEFAULT_PORT`](super::DEFAULT_PORT) and the default health check; its
//! name on the overlay is the process type mapped by [`dns_name`] (`clock_worker` is
//! `clock-worker`), so a Heroku-style Procfile works unchanged.

use super::{dns_name, valid_key, ConfigError, ServiceSpec};

/// Parses a Procfile into services in file order.
pub(super) fn parse(file: &str, text: &str) -> Result<Vec<ServiceSpec>, ConfigError> {
    let mut services: Vec<ServiceSpec> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((name, command)) = l.split_once(':') else {
            return Err(ConfigError::new(
                file,
                line,
                "expected 'name: command'; add the process name and a colon",
            ));
        };
        let (name, command) = (name.trim(), command.trim());
        if !valid_key(name) {
            return Err(ConfigError::new(
                file,
                line,
                format!("'{name}' is not a valid process name: use letters, digits, '-' and '_'"),
            ));
        }
        let label = match dns_name(name) {
            Ok(l) => l,
            Err(mapped) => {
                return Err(ConfigError::new(
                    file,
                    line,
                    format!(
                        "'{name}' would be '{mapped}' on the overlay, which is no DNS name (it \
                         may not start or end with '-' or '_'); rename it, e.g. '{}'",
                        mapped.trim_matches('-')
                    ),
                ))
            }
        };
        if command.is_empty() {
            return Err(ConfigError::new(
                file,
                line,
                format!("process {name} has no command; write it after the colon"),
            ));
        }
        if command.contains('\0') {
            return Err(ConfigError::new(
                file,
                line,
                "the command contains a NUL byte",
            ));
        }
        let mut s = ServiceSpec::new(name, command);
        s.name = label;
        s.line = line;
        services.push(s);
    }
    Ok(services)
}
