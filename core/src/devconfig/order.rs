//! Whole-file checks: unique (name, tag), known dependencies, no cycles; and the start order.

use super::{ConfigError, ServiceSpec};
use std::collections::{BTreeSet, HashMap};

/// Refuses two services with the same key or the same (name, tag).
pub(super) fn check_unique(file: &str, services: &[ServiceSpec]) -> Result<(), ConfigError> {
    for (i, s) in services.iter().enumerate() {
        for earlier in &services[..i] {
            if earlier.key == s.key {
                return Err(ConfigError::new(
                    file,
                    s.line,
                    format!(
                        "service {} is defined twice (first on line {}); rename one",
                        s.key, earlier.line
                    ),
                ));
            }
            if earlier.name == s.name && earlier.tag == s.tag {
                let what = match &s.tag {
                    Some(t) => format!("name {} and tag {t}", s.name),
                    None => format!("name {} and no tag", s.name),
                };
                return Err(ConfigError::new(
                    file,
                    s.line,
                    format!(
                        "services {} and {} (line {}) both have {what}; give one a different \
                         name or a tag",
                        s.key, earlier.key, earlier.line
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Orders services so every dependency starts first; independent services keep file order.
/// Refuses unknown dependencies and cycles (naming the cycle).
pub(super) fn start_order(
    file: &str,
    services: Vec<ServiceSpec>,
) -> Result<Vec<ServiceSpec>, ConfigError> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(services.len());
    for s in &services {
        let mut d = Vec::new();
        for dep in &s.depends_on {
            match index.get(dep.key.as_str()) {
                Some(&j) => d.push(j),
                None => {
                    return Err(ConfigError::new(
                        file,
                        dep.line,
                        format!(
                            "service {} depends on {}, which is not defined here; add \
                             [services.{}] or remove it from depends_on",
                            s.key, dep.key, dep.key
                        ),
                    ))
                }
            }
        }
        deps.push(d);
    }
    if let Some(cycle) = find_cycle(&deps) {
        let names: Vec<&str> = cycle.iter().map(|&i| services[i].key.as_str()).collect();
        let first = cycle[0];
        let last = cycle[cycle.len() - 2];
        let line = services[last]
            .depends_on
            .iter()
            .find(|d| d.key == services[first].key)
            .map(|d| d.line)
            .unwrap_or(services[last].line);
        return Err(ConfigError::new(
            file,
            line,
            format!(
                "dependency cycle: {}; remove one of these depends_on entries",
                names.join(" -> ")
            ),
        ));
    }
    // Kahn's algorithm, always taking the ready service that comes first in the file.
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..services.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(services.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for (j, d) in deps.iter().enumerate() {
            if d.contains(&i) {
                waiting[j] -= 1;
                if waiting[j] == 0 {
                    ready.insert(j);
                }
            }
        }
    }
    let mut slots: Vec<Option<ServiceSpec>> = services.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect())
}

/// A cycle as a path that starts and ends with the same index, in file order of discovery.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    for start in 0..deps.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to look at).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut edge)) = path.last_mut() {
            if let Some(&next) = deps[node].get(*edge) {
                *edge += 1;
                match mark[next] {
                    Mark::OnPath => {
                        let from = path.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    Mark::New => {
                        mark[next] = Mark::OnPath;
                        path.push((next, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}
