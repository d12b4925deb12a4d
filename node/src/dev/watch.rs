//! `watch` globs: polls the files every 500 ms (no inotify dependency, works on every file
//! system) and restarts a service once its files stop changing for a moment.

use super::supervisor::{Cmd, Handle};
use overlay_core::devconfig::Glob;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often files are looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// Files looked at per glob and poll, at most.
const MAX_FILES: usize = 20_000;

/// Directories skipped unless a glob names them.
const SKIP: [&str; 3] = [".git", "target", "node_modules"];

/// What one poll saw for a service: a fingerprint of its files and the newest changed one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    print: u64,
    newest: Option<(std::time::SystemTime, String)>,
}

/// Watches the globs of every service that has some, until the task is dropped.
pub async fn run(dir: PathBuf, services: Vec<(Handle, Vec<Glob>)>) {
    let services: Vec<_> = services
        .into_iter()
        .filter(|(_, g)| !g.is_empty())
        .collect();
    if services.is_empty() {
        return;
    }
    let mut last: Vec<Option<Seen>> = vec![None; services.len()];
    // A change is acted on at the first poll that sees no further change (the debounce).
    let mut pending: Vec<Option<String>> = vec![None; services.len()];
    loop {
        tokio::time::sleep(POLL).await;
        for (i, (handle, globs)) in services.iter().enumerate() {
            let (d, g) = (dir.clone(), globs.clone());
            let Ok(seen) = tokio::task::spawn_blocking(move || scan(&d, &g)).await else {
                continue;
            };
            match &last[i] {
                None => {}
                Some(prev) if prev.print != seen.print => {
                    let file = seen
                        .newest
                        .as_ref()
                        .map(|(_, f)| f.clone())
                        .unwrap_or_else(|| "a watched file".into());
                    pending[i] = Some(file);
                }
                Some(_) => {
                    if let Some(file) = pending[i].take() {
                        // Full queue: a restart is already on its way.
                        let _ = handle.tx.try_send(Cmd::Changed(file));
                    }
                }
            }
            last[i] = Some(seen);
        }
    }
}

fn scan(dir: &Path, globs: &[Glob]) -> Seen {
    let mut print = 0u64;
    let mut newest: Option<(std::time::SystemTime, String)> = None;
    for g in globs {
        let base = g.base();
        let start = if base.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(&base)
        };
        let mut count = 0usize;
        let mut stack = vec![(start, base.clone())];
        while let Some((path, rel)) = stack.pop() {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                let Ok(entries) = std::fs::read_dir(&path) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child = if rel.is_empty() {
                        name.clone()
                    } else {
                        format!("{rel}/{name}")
                    };
                    if SKIP.contains(&name.as_str()) && !g.as_str().contains(name.as_str()) {
                        continue;
                    }
                    stack.push((e.path(), child));
                }
                continue;
            }
            if !g.matches(&rel) {
                continue;
            }
            count += 1;
            if count > MAX_FILES {
                break;
            }
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let mut h = DefaultHasher::new();
            (&rel, mtime, meta.len()).hash(&mut h);
            // Order-independent: the walk order does not matter.
            print = print.wrapping_add(h.finish());
            if newest.as_ref().is_none_or(|(t, _)| mtime > *t) {
                newest = Some((mtime, rel));
            }
        }
    }
    Seen { print, newest }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_sees_changes_of_matching_files_only() {
        let dir = std::env::temp_dir().join(format!("overlay-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/deep")).expect("mkdir");
        std::fs::create_dir_all(dir.join("target")).expect("mkdir");
        std::fs::write(dir.join("src/deep/a.rs"), "1").expect("write");
        std::fs::write(dir.join("README"), "x").expect("write");
        let globs = vec![
            Glob::new("src/**/*.rs").expect("glob"),
            Glob::new("**/*.toml").expect("glob"),
        ];
        let a = scan(&dir, &globs);
        std::fs::write(dir.join("README"), "changed").expect("write");
        std::fs::write(dir.join("target/x.toml"), "skipped").expect("write");
        assert_eq!(
            scan(&dir, &globs).print,
            a.print,
            "unwatched and skipped files"
        );
        std::fs::write(dir.join("src/deep/a.rs"), "22").expect("write");
        let b = scan(&dir, &globs);
        assert_ne!(b.print, a.print);
        assert_eq!(b.newest.map(|(_, f)| f).as_deref(), Some("src/deep/a.rs"));
        std::fs::write(dir.join("Cargo.toml"), "").expect("write");
        assert_ne!(scan(&dir, &globs).print, b.print, "new file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
