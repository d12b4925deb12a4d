//! The relay's authoritative registry: registration, remote services, change log, persistence.

use super::alloc::Allocator;
use super::state::{
    AllocationRecord, OnDemandRecord, RegistryConfig, RegistryState, RemoteEntry, RemoteUpdate,
};
use super::sync::Change;
use super::{
    check_key, valid_callback_url, valid_label, valid_target, NameOwner, Protocol, RegistryError,
    ServiceInstance, ServiceKey, RESERVED_NAMES,
};
use crate::net::prefix::Ipv4Prefix;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;

/// Service addresses start at this host index of a prefix (.0 is the network, .1 the node or relay).
const FIRST_SERVICE_HOST: u32 = 2;

/// The relay's service registry.
#[derive(Clone, Debug)]
pub struct Registry {
    config: RegistryConfig,
    reserved: BTreeSet<Ipv4Addr>,
    epoch: u64,
    seq: u64,
    instances: BTreeMap<ServiceKey, ServiceInstance>,
    alloc: Allocator,
    /// Live remote services by name: `None` from the catalog, `Some(expiry)` on demand.
    remote: BTreeMap<String, Option<u64>>,
    log: VecDeque<(u64, Change)>,
    /// The log holds exactly the changes with sequence numbers in `(log_base, seq]`.
    log_base: u64,
    /// Names of the joined nodes (the hub keeps them; not persisted here): no service may
    /// take one.
    nodes: BTreeSet<String>,
}

impl Registry {
    /// An empty registry; `epoch` must differ between process starts (random or start time).
    pub fn new(config: RegistryConfig, epoch: u64) -> Self {
        let mut reserved: BTreeSet<Ipv4Addr> = config.reserved.iter().copied().collect();
        // The relay itself.
        if let Some(relay) = config.remote_pool.nth(1) {
            reserved.insert(relay);
        }
        Registry {
            config,
            reserved,
            epoch,
            seq: 0,
            instances: BTreeMap::new(),
            alloc: Allocator::default(),
            remote: BTreeMap::new(),
            log: VecDeque::new(),
            log_base: 0,
            nodes: BTreeSet::new(),
        }
    }

    /// Rebuilds a registry from a persisted state; fails on a state that contradicts itself.
    pub fn restore(
        state: RegistryState,
        config: RegistryConfig,
        epoch: u64,
    ) -> Result<Self, RegistryError> {
        let corrupt = |m: String| RegistryError::CorruptState(m);
        let mut r = Registry::new(config, epoch);
        r.seq = state.seq;
        r.log_base = state.seq;
        for a in state.allocations {
            if !r.alloc.insert(a.key.clone(), a.address, a.last_used) {
                return Err(corrupt(format!(
                    "address {} or service {} is allocated twice",
                    a.address, a.key
                )));
            }
        }
        let on_demand: BTreeMap<String, u64> = state
            .on_demand
            .into_iter()
            .map(|o| (o.name, o.expires))
            .collect();
        for inst in state.instances {
            let key = inst.key();
            match r.alloc.get(&key) {
                Some(a) if a == inst.address => {}
                Some(a) => {
                    return Err(corrupt(format!(
                        "service {key} has address {} but its allocation is {a}",
                        inst.address
                    )))
                }
                None => {
                    if !r.alloc.insert(key.clone(), inst.address, state.seq) {
                        return Err(corrupt(format!(
                            "address {} of service {key} belongs to another service",
                            inst.address
                        )));
                    }
                }
            }
            if inst.is_remote() {
                r.remote
                    .insert(inst.name.clone(), on_demand.get(&inst.name).copied());
            }
            if r.instances.insert(key.clone(), inst).is_some() {
                return Err(corrupt(format!("service {key} is listed twice")));
            }
        }
        Ok(r)
    }

    /// The state to persist.
    pub fn snapshot(&self) -> RegistryState {
        RegistryState {
            seq: self.seq,
            instances: self.instances.values().cloned().collect(),
            allocations: self
                .alloc
                .iter()
                .map(|(key, address, last_used)| AllocationRecord {
                    key: key.clone(),
                    address,
                    last_used,
                })
                .collect(),
            on_demand: self
                .remote
                .iter()
                .filter_map(|(name, exp)| {
                    exp.map(|expires| OnDemandRecord {
                        name: name.clone(),
                        expires,
                    })
                })
                .collect(),
        }
    }

    /// This process's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number of the last change.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The oldest sequence number [`Registry::changes_since`] can answer with changes.
    pub fn log_base(&self) -> u64 {
        self.log_base
    }

    /// The current position (epoch and sequence number).
    pub fn position(&self) -> super::Position {
        super::Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// Every live instance, in key order.
    pub fn instances(&self) -> impl Iterator<Item = &ServiceInstance> {
        self.instances.values()
    }

    /// The number of live instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether no instance is live.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// One instance.
    pub fn get(&self, key: &ServiceKey) -> Option<&ServiceInstance> {
        self.instances.get(key)
    }

    /// The address remembered for `key`, live or not.
    pub fn allocation(&self, key: &ServiceKey) -> Option<Ipv4Addr> {
        self.alloc.get(key)
    }

    /// The live instances of `node`.
    pub fn node_instances<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = &'a ServiceInstance> + 'a {
        self.instances
            .values()
            .filter(move |i| i.node.as_deref() == Some(node))
    }

    /// Records that a node of this name joined: from now on no service may take the name.
    pub fn add_node(&mut self, name: &str) {
        self.nodes.insert(name.to_string());
    }

    /// Records that the node left: its name is free again.
    pub fn forget_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Who holds `name` in the one namespace of nodes and services: a joined node, a reserved
    /// label, or a live service (node or remote, any tag), in that order; `None` if it is free.
    pub fn name_owner(&self, name: &str) -> Option<NameOwner> {
        if self.nodes.contains(name) {
            return Some(NameOwner::Node(name.to_string()));
        }
        if RESERVED_NAMES.contains(&name) {
            return Some(NameOwner::Reserved);
        }
        self.instances
            .values()
            .find(|i| i.name == name)
            .map(|i| NameOwner::Service(i.key()))
    }

    /// Refuses a service name a node or the DNS holds.
    fn check_service_name(&self, name: &str) -> Result<(), RegistryError> {
        match self.name_owner(name) {
            Some(owner @ (NameOwner::Node(_) | NameOwner::Reserved)) => {
                Err(RegistryError::NameTaken {
                    name: name.to_string(),
                    owner,
                })
            }
            _ => Ok(()),
        }
    }

    /// Removes live services whose name is a node's or reserved (saved before names were one
    /// namespace); returns their keys.
    pub fn evict_taken_names(&mut self) -> Vec<ServiceKey> {
        let keys: Vec<ServiceKey> = self
            .instances
            .values()
            .filter(|i| self.check_service_name(&i.name).is_err())
            .map(|i| i.key())
            .collect();
        keys.into_iter().filter(|k| self.remove(k)).collect()
    }

    pub(super) fn log_entries(&self) -> &VecDeque<(u64, Change)> {
        &self.log
    }

    pub(super) fn instance_map(&self) -> &BTreeMap<ServiceKey, ServiceInstance> {
        &self.instances
    }

    fn record(&mut self, change: Change) {
        self.seq += 1;
        self.log.push_back((self.seq, change));
        while self.log.len() > self.config.log_capacity.max(1) {
            if let Some((s, _)) = self.log.pop_front() {
                self.log_base = s;
            }
        }
    }

    fn upsert(&mut self, inst: ServiceInstance) {
        self.instances.insert(inst.key(), inst.clone());
        self.record(Change::Upsert(inst));
    }

    fn remove(&mut self, key: &ServiceKey) -> bool {
        if self.instances.remove(key).is_none() {
            return false;
        }
        if key.node.is_none() {
            self.remote.remove(&key.name);
        }
        self.record(Change::Remove(key.clone()));
        self.alloc.touch(key, self.seq);
        true
    }

    fn check_room(&self, node: Option<&str>) -> Result<(), RegistryError> {
        if self.instances.len() >= self.config.max_total {
            return Err(RegistryError::GlobalLimit(self.config.max_total));
        }
        if let Some(node) = node {
            if self.node_instances(node).count() >= self.config.max_per_node {
                return Err(RegistryError::NodeLimit {
                    node: node.to_string(),
                    max: self.config.max_per_node,
                });
            }
        }
        Ok(())
    }

    /// Registers (or re-registers) a node service at a stable address inside `node_prefix`.
    pub fn register(
        &mut self,
        node: &str,
        node_prefix: Ipv4Prefix,
        name: &str,
        tag: Option<&str>,
        port: u16,
        protocol: Protocol,
    ) -> Result<ServiceInstance, RegistryError> {
        check_key(node, name, tag)?;
        self.check_service_name(name)?;
        let key = ServiceKey::node(node, name, tag);
        if port == 0 {
            return Err(RegistryError::InvalidPort(key.to_string()));
        }
        if node_prefix.size() <= u64::from(FIRST_SERVICE_HOST) {
            return Err(RegistryError::PrefixTooSmall(node_prefix));
        }
        let existing = self.instances.get(&key).cloned();
        if let Some(old) = &existing {
            if node_prefix.contains(old.address) {
                if old.port == port && old.protocol == protocol {
                    return Ok(old.clone());
                }
                let inst = ServiceInstance {
                    port,
                    protocol,
                    ..old.clone()
                };
                self.upsert(inst.clone());
                return Ok(inst);
            }
        } else {
            self.check_room(Some(node))?;
        }
        let live = &self.instances;
        let address = self
            .alloc
            .allocate(
                &key,
                node_prefix,
                FIRST_SERVICE_HOST,
                &self.reserved,
                |k| live.contains_key(k),
                self.seq + 1,
            )
            .ok_or_else(|| RegistryError::PrefixFull {
                node: node.to_string(),
                prefix: node_prefix,
            })?;
        let inst = ServiceInstance {
            name: name.to_string(),
            tag: tag.map(str::to_string),
            node: Some(node.to_string()),
            address,
            port,
            protocol,
            // A live instance keeps its rank; a new one gets this upsert's sequence number.
            registered: existing.as_ref().map_or(self.seq + 1, |e| e.registered),
            callback_url: existing.and_then(|e| e.callback_url),
            target: None,
        };
        self.upsert(inst.clone());
        Ok(inst)
    }

    /// Sets or clears the callback URL of a registered service.
    pub fn set_callback_url(
        &mut self,
        key: &ServiceKey,
        url: Option<String>,
    ) -> Result<(), RegistryError> {
        if let Some(u) = &url {
            if !valid_callback_url(u) {
                return Err(RegistryError::InvalidCallbackUrl(u.clone()));
            }
        }
        let Some(old) = self.instances.get(key) else {
            return Err(RegistryError::NotRegistered(key.clone()));
        };
        if old.callback_url != url {
            let inst = ServiceInstance {
                callback_url: url,
                ..old.clone()
            };
            self.upsert(inst);
        }
        Ok(())
    }

    /// Removes a node service; its address stays reserved for it. Returns whether it was live.
    pub fn unregister(&mut self, node: &str, name: &str, tag: Option<&str>) -> bool {
        self.remove(&ServiceKey::node(node, name, tag))
    }

    /// Removes every service of `node` (allocations stay); returns how many were removed.
    pub fn remove_node(&mut self, node: &str) -> usize {
        let keys: Vec<ServiceKey> = self.node_instances(node).map(|i| i.key()).collect();
        keys.iter().filter(|k| self.remove(k)).count()
    }

    fn put_remote(
        &mut self,
        name: &str,
        port: u16,
        target: &str,
        origin: Option<u64>,
    ) -> Result<(ServiceInstance, bool), RegistryError> {
        if !valid_label(name) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        self.check_service_name(name)?;
        // Port 0 is an on-demand name's: a host without a port of its own (`host:0`).
        let any_port = port == 0 && origin.is_some();
        if port == 0 && !any_port {
            return Err(RegistryError::InvalidPort(name.to_string()));
        }
        let target_ok = match target.strip_suffix(":0") {
            Some(host) if any_port => valid_target(&format!("{host}:1")),
            _ => valid_target(target),
        };
        if !target_ok {
            return Err(RegistryError::InvalidTarget(
                target.to_string(),
                name.to_string(),
            ));
        }
        let key = ServiceKey::remote(name);
        if let Some(old) = self.instances.get(&key).cloned() {
            self.remote.insert(name.to_string(), origin);
            if old.port == port && old.target.as_deref() == Some(target) {
                return Ok((old, false));
            }
            let inst = ServiceInstance {
                port,
                target: Some(target.to_string()),
                ..old
            };
            self.upsert(inst.clone());
            return Ok((inst, true));
        }
        self.check_room(None)?;
        let live = &self.instances;
        let pool = self.config.remote_pool;
        let address = self
            .alloc
            .allocate(
                &key,
                pool,
                FIRST_SERVICE_HOST,
                &self.reserved,
                |k| live.contains_key(k),
                self.seq + 1,
            )
            .ok_or(RegistryError::RemotePoolFull(pool))?;
        let inst = ServiceInstance {
            name: name.to_string(),
            tag: None,
            node: None,
            address,
            port,
            protocol: Protocol::Tcp,
            callback_url: None,
            target: Some(target.to_string()),
            registered: self.seq + 1,
        };
        self.remote.insert(name.to_string(), origin);
        self.upsert(inst.clone());
        Ok((inst, true))
    }

    /// Replaces the catalog's remote services; unchanged entries keep their address silently.
    pub fn set_remote(&mut self, entries: Vec<RemoteEntry>) -> RemoteUpdate {
        let mut out = RemoteUpdate::default();
        let mut wanted = BTreeSet::new();
        let mut valid = Vec::new();
        for e in entries {
            if !wanted.insert(e.name.clone()) {
                out.rejected.push(RegistryError::DuplicateRemote(e.name));
                continue;
            }
            valid.push(e);
        }
        let gone: Vec<String> = self
            .remote
            .iter()
            .filter(|(name, origin)| origin.is_none() && !wanted.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if self.remove(&ServiceKey::remote(&name)) {
                out.changes += 1;
            }
        }
        for e in valid {
            match self.put_remote(&e.name, e.port, &e.target, None) {
                Ok((_, changed)) => out.changes += usize::from(changed),
                Err(err) => out.rejected.push(err),
            }
        }
        out
    }

    /// Adds (or refreshes) a remote service found on demand; it expires at `now + ttl`.
    ///
    /// A catalog entry of the same name wins and is returned unchanged.
    pub fn add_on_demand(
        &mut self,
        name: &str,
        target: &str,
        port: u16,
        now: u64,
        ttl: u64,
    ) -> Result<ServiceInstance, RegistryError> {
        if let (Some(None), Some(inst)) = (
            self.remote.get(name),
            self.instances.get(&ServiceKey::remote(name)),
        ) {
            return Ok(inst.clone());
        }
        let expires = now.saturating_add(ttl);
        self.put_remote(name, port, target, Some(expires))
            .map(|(inst, _)| inst)
    }

    /// Removes on-demand services that expired at or before `now`; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let due: Vec<String> = self
            .remote
            .iter()
            .filter(|(_, e)| matches!(e, Some(t) if *t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        due.iter()
            .filter(|n| self.remove(&ServiceKey::remote(n)))
            .count()
    }

    /// When [`Registry::expire`] next has something to do.
    pub fn next_expiry(&self) -> Option<u64> {
        self.remote.values().filter_map(|e| *e).min()
    }
}
