//! The command-line reference, generated from the clap definitions: markdown for
//! docs/configuration.md (checked by a test so it cannot drift), man pages and completions.

use clap::{Arg, ArgAction, Command};
use std::fmt::Write as _;

/// A markdown reference of `cmd` and every subcommand: usage, flags, defaults, env vars.
pub fn markdown(cmd: &Command) -> String {
    let mut out = String::new();
    let mut cmd = cmd.clone();
    cmd.build();
    section(&mut out, &cmd, cmd.get_name());
    out
}

fn section(out: &mut String, cmd: &Command, path: &str) {
    if cmd.is_hide_set() {
        return;
    }
    let _ = writeln!(out, "### `{path}`\n");
    if let Some(about) = cmd.get_about() {
        let _ = writeln!(out, "{about}\n");
    }
    let args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
        .collect();
    if !args.is_empty() {
        let _ = writeln!(
            out,
            "| argument | env | default | meaning |\n| --- | --- | --- | --- |"
        );
        for a in args {
            let name = match (a.get_long(), a.get_short()) {
                (Some(l), _) => {
                    let takes = !matches!(
                        a.get_action(),
                        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
                    );
                    if takes {
                        format!("`--{l} {}`", value_name(a))
                    } else {
                        format!("`--{l}`")
                    }
                }
                (None, Some(s)) => format!("`-{s}`"),
                (None, None) => format!("`{}`", value_name(a)),
            };
            let env = a
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let is_switch = matches!(
                a.get_action(),
                ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
            );
            let default: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let default = if default.is_empty() || is_switch {
                String::new()
            } else {
                format!("`{}`", default.join(","))
            };
            let help = a
                .get_help()
                .map(|h| h.to_string())
                .unwrap_or_default()
                .replace('|', "\\|");
            let _ = writeln!(out, "| {name} | {env} | {default} | {help} |");
        }
        out.push('\n');
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        section(out, sub, &format!("{path} {}", sub.get_name()));
    }
}

fn value_name(a: &Arg) -> String {
    a.get_value_names()
        .and_then(|v| v.first().map(|s| s.to_string()))
        .unwrap_or_else(|| a.get_id().to_string().to_uppercase())
}

/// The man page of `cmd` (roff).
pub fn man_page(cmd: &Command) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    Ok(buf)
}

/// Shell completions for `shell` (bash, zsh, fish, elvish, powershell).
pub fn completions(cmd: &Command, shell: &str) -> Result<Vec<u8>, String> {
    let shell: clap_complete::Shell = shell.parse().map_err(|_| {
        format!("'{shell}' is not a shell I know: use bash, zsh, fish, elvish or powershell")
    })?;
    let mut cmd = cmd.clone();
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_flags_with_env_and_defaults() {
        let cmd = Command::new("tool").subcommand(
            Command::new("serve").about("Serve things.").arg(
                Arg::new("listen")
                    .long("listen")
                    .env("TOOL_LISTEN")
                    .default_value("0.0.0.0:1")
                    .help("Where"),
            ),
        );
        let md = markdown(&cmd);
        assert!(md.contains("### `tool serve`"), "{md}");
        assert!(
            md.contains("| `--listen LISTEN` | `TOOL_LISTEN` | `0.0.0.0:1` | Where |"),
            "{md}"
        );
        assert!(completions(&cmd, "bash").unwrap().len() > 100);
        assert!(completions(&cmd, "tcsh").is_err());
        assert!(String::from_utf8(man_page(&cmd).unwrap())
            .unwrap()
            .contains(".TH"));
    }
}
