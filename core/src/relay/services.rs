//! The relay's service registry: node registrations over the control channel, the catalog,
//! pulls of changes, and notices to every node when something changed.

use super::{Event, Hub, HubError, Now};
use crate::names::registry::{
    valid_callback_url, Protocol, Pull, Registry, RegistryError, RemoteEntry, RemoteUpdate,
    ServiceInstance, ServiceKey,
};
use crate::net::wire;
use crate::relay::gateway::CallbackPlan;
use crate::relay::peers::PeerId;
use crate::transport::control::{
    self, ControlReply, RegistryNotice, CONTROL_PORT, DELTA_BUDGET, NOTICE_ID,
};
use std::collections::HashMap;
use std::net::SocketAddrV4;

impl Hub {
    /// Applies `op` to the registry in place. When the registry moved on (even if `op` then
    /// failed), the change is recorded for the next write, nodes get a notice and the gateway's
    /// targets follow.
    pub(super) fn change_registry<T>(
        &mut self,
        op: impl FnOnce(&mut Registry) -> Result<T, RegistryError>,
    ) -> Result<T, HubError> {
        let before = self.registry.seq();
        let out = op(&mut self.registry);
        if self.registry.seq() != before {
            self.changed();
            self.notice_pending = true;
            self.refresh_remote_targets();
            self.events.push(Event::RegistryChanged);
            // Instances moved or stopped: the fronts follow, and intercepts of stopped ones end.
            self.events.push(Event::FrontsChanged);
            self.prune_intercepts();
        }
        out.map_err(|e| HubError::Registry(e.to_string()))
    }

    /// Rebuilds the gateway's address -> target map from the registry.
    pub(super) fn refresh_remote_targets(&mut self) {
        self.remote_targets = self
            .registry
            .instances()
            .filter_map(|i| i.target.clone().map(|t| (i.address, (i.port, t))))
            .collect();
    }

    /// Sets how node services get callback addresses (from the next registration on).
    pub fn set_callback_plan(&mut self, plan: CallbackPlan) {
        self.callback = plan;
    }

    /// Where callbacks go: every node service with its callback port (if it has one).
    pub fn callback_routes(&self) -> Vec<(ServiceKey, SocketAddrV4, Option<u16>)> {
        let ports: HashMap<&ServiceKey, u16> = self
            .state
            .callback_ports
            .iter()
            .map(|r| (&r.key, r.port))
            .collect();
        self.registry
            .instances()
            .filter(|i| !i.is_remote() && i.protocol == Protocol::Tcp)
            .map(|i| {
                let key = i.key();
                let port = ports.get(&key).copied();
                (key, SocketAddrV4::new(i.address, i.port), port)
            })
            .collect()
    }

    /// The registry's sequence number: it moves whenever an instance changes.
    pub fn registry_seq(&self) -> u64 {
        self.registry.seq()
    }

    /// Registers a service of peer `from` in its own prefix.
    pub(super) fn register_service(
        &mut self,
        from: PeerId,
        name: &str,
        tag: Option<&str>,
        port: u16,
        protocol: Protocol,
    ) -> Result<ServiceInstance, HubError> {
        let (node, prefix) = self.peer_identity(from)?;
        let key = ServiceKey::node(&node, name, tag);
        let assigned = if protocol == Protocol::Tcp {
            self.callback
                .assign_port(&self.state.callback_ports, &key, |k| {
                    self.registry.get(k).is_some()
                })
        } else {
            None
        };
        let url = if protocol == Protocol::Tcp {
            self.callback
                .url(&key, assigned.as_ref().map(|a| a.0), &self.cfg.domain)
        } else {
            None
        };
        // Checked before anything changes: the registration and its URL are one change.
        if let Some(u) = url.as_deref().filter(|u| !valid_callback_url(u)) {
            return Err(HubError::Registry(
                RegistryError::InvalidCallbackUrl(u.to_string()).to_string(),
            ));
        }
        let inst = self.change_registry(|r| {
            let inst = r.register(&node, prefix, name, tag, port, protocol)?;
            if inst.callback_url == url {
                return Ok(inst);
            }
            r.set_callback_url(&key, url.clone())?;
            Ok(r.get(&key).cloned().unwrap_or(inst))
        })?;
        if let Some((_, ports)) = assigned {
            if ports != self.state.callback_ports {
                self.state.callback_ports = ports;
                self.changed();
            }
        }
        tracing::info!(%node, service = %name, tag = ?tag, address = %inst.address, "service registered");
        Ok(inst)
    }

    /// Removes a service of peer `from`.
    pub(super) fn unregister_service(
        &mut self,
        from: PeerId,
        name: &str,
        tag: Option<&str>,
    ) -> Result<bool, HubError> {
        let (node, _) = self.peer_identity(from)?;
        let removed = self.change_registry(|r| Ok(r.unregister(&node, name, tag)))?;
        if removed {
            tracing::info!(%node, service = %name, tag = ?tag, "service unregistered");
        }
        Ok(removed)
    }

    fn peer_identity(
        &self,
        from: PeerId,
    ) -> Result<(String, crate::net::prefix::Ipv4Prefix), HubError> {
        self.table
            .get(from)
            .map(|e| (e.name.clone(), e.prefix))
            .ok_or_else(|| HubError::NoSuchPeer(format!("#{from}")))
    }

    /// Answers a pull with a delta that fits one datagram.
    pub(super) fn pull(&self, want: &Pull) -> serde_json::Value {
        serde_json::to_value(self.registry.pull(want, DELTA_BUDGET)).unwrap_or_default()
    }

    /// Replaces the catalog's remote services (the catalog file changed).
    pub fn set_catalog(
        &mut self,
        entries: Vec<RemoteEntry>,
        now: Now,
    ) -> Result<RemoteUpdate, HubError> {
        let update = self.change_registry(|r| Ok(r.set_remote(entries)))?;
        self.after_input(now);
        for e in &update.rejected {
            tracing::warn!("catalog entry not applied: {e}");
        }
        Ok(update)
    }

    /// Removes services saved before node and service names were one namespace whose name is
    /// now a node's (or reserved): the node's name wins.
    pub(super) fn evict_taken_names(&mut self) {
        match self.change_registry(|r| Ok(r.evict_taken_names())) {
            Ok(keys) => {
                for key in keys {
                    tracing::warn!(service = %key, "service removed: its name is a node's name");
                }
            }
            Err(e) => tracing::warn!("cannot remove services named like nodes: {e}"),
        }
    }

    /// Every service instance.
    pub fn services(&self) -> Vec<ServiceInstance> {
        self.registry.instances().cloned().collect()
    }

    /// Tells every connected node that the registry moved on, so it pulls right away.
    pub(super) fn send_notices(&mut self) {
        if !std::mem::take(&mut self.notice_pending) {
            return;
        }
        let pos = self.registry.position();
        let notice = ControlReply::Ok {
            id: NOTICE_ID,
            data: serde_json::to_value(RegistryNotice {
                epoch: pos.epoch,
                seq: pos.seq,
            })
            .unwrap_or_default(),
        };
        let payload = control::encode(&notice);
        let relay = self.cfg.plan.relay_addr();
        let targets: Vec<(PeerId, std::net::Ipv4Addr)> = self
            .table
            .iter()
            .filter(|e| self.live.get(&e.id).is_some_and(|l| l.endpoint.is_some()))
            .map(|e| {
                (
                    e.id,
                    crate::net::addressing::AddressPlan::node_addr(&e.prefix),
                )
            })
            .collect();
        for (id, addr) in targets {
            let p = wire::build_udp(relay, CONTROL_PORT, addr, CONTROL_PORT, &payload);
            self.send_to_peer(id, &p);
        }
    }
}
