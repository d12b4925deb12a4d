//! Intercepts on the hub: nodes start and stop them over the control channel, the catalog's
//! fronts say which services can be intercepted, and the front listeners get their routing
//! from [`Hub::front_routes`]. An intercept ends when its node stops it, leaves, stops its
//! instance, or has been silent for [`SILENCE`]; every end is written like a registration.

use super::{Event, Hub, HubError, Now};
use crate::intercept::{FrontPlan, HeaderMatch, Intercept, NewIntercept};
use crate::names::registry::{Protocol, ServiceInstance};
use crate::relay::catalog::Front;
use crate::relay::peers::PeerId;
use crate::transport::control::InterceptStarted;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

/// A node silent this long loses its intercepts (a node pings the relay every 3 s).
pub const SILENCE: Duration = Duration::from_secs(10);

/// A front with its routing: what the relay's front listeners need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontRoute {
    /// The service.
    pub service: String,
    /// Where the relay listens for its callers.
    pub listen: SocketAddr,
    /// Where callers go without an intercept.
    pub address: String,
    /// The intercepts.
    pub plan: FrontPlan,
}

impl Hub {
    /// Sets the catalog's fronts; intercepts of services that no longer have one end.
    pub fn set_fronts(&mut self, fronts: Vec<Front>, now: Now) {
        if fronts == self.fronts {
            return;
        }
        self.fronts = fronts;
        let fronts = &self.fronts;
        let ended = self
            .intercepts
            .remove_where(|i| !fronts.iter().any(|f| f.service == i.service));
        for i in &ended {
            tracing::info!(service = %i.service, node = %i.node, "intercept ended: the catalog has no front for the service any more");
        }
        if !ended.is_empty() {
            self.changed();
        }
        self.events.push(Event::FrontsChanged);
        self.after_input(now);
    }

    /// Every front with how it routes now.
    pub fn front_routes(&self) -> Vec<FrontRoute> {
        self.fronts
            .iter()
            .map(|f| FrontRoute {
                service: f.service.clone(),
                listen: f.listen,
                address: f.address.clone(),
                plan: FrontPlan::build(&self.intercepts, &f.service, |i| {
                    self.instance_of(&i.node, &i.service, i.tag.as_deref())
                        .map(|inst| SocketAddrV4::new(inst.address, inst.port))
                }),
            })
            .collect()
    }

    /// Every active intercept, oldest first.
    pub fn intercepts(&self) -> &[Intercept] {
        self.intercepts.list()
    }

    /// `node`'s TCP instance of `service`: the one with `tag` when given, else the untagged one,
    /// else the first tagged one.
    fn instance_of(
        &self,
        node: &str,
        service: &str,
        tag: Option<&str>,
    ) -> Option<&ServiceInstance> {
        let mut mine: Vec<&ServiceInstance> = self
            .registry
            .instances()
            .filter(|i| {
                i.node.as_deref() == Some(node) && i.name == service && i.protocol == Protocol::Tcp
            })
            .collect();
        mine.sort_by(|a, b| a.tag.cmp(&b.tag));
        match tag {
            Some(t) => mine.into_iter().find(|i| i.tag.as_deref() == Some(t)),
            None => mine.into_iter().next(),
        }
    }

    /// Starts (or changes) `from`'s intercept of `service`.
    pub(super) fn start_intercept(
        &mut self,
        from: PeerId,
        service: &str,
        header: Option<HeaderMatch>,
        now: Now,
    ) -> Result<InterceptStarted, HubError> {
        let node = self
            .table
            .get(from)
            .map(|e| e.name.clone())
            .ok_or_else(|| HubError::NoSuchPeer(format!("#{from}")))?;
        let header = header
            .map(|h| h.checked())
            .transpose()
            .map_err(|e| HubError::Intercept(e.to_string()))?;
        let front = self
            .fronts
            .iter()
            .find(|f| f.service == service)
            .map(|f| f.listen)
            .ok_or_else(|| {
                HubError::Intercept(format!(
                    "the relay has no front for a service named '{service}': only catalog services with front = \"ADDR:PORT\" can be intercepted ({})",
                    self.front_names()
                ))
            })?;
        let inst = self.instance_of(&node, service, None).ok_or_else(|| {
            HubError::Intercept(format!(
                "node {node} runs no instance of {service}: start it with `overlay dev` or `overlay run {service} -- COMMAND` first"
            ))
        })?;
        let (tag, target) = (inst.tag.clone(), SocketAddrV4::new(inst.address, inst.port));
        let before = self.intercepts.clone();
        let intercept = self
            .intercepts
            .add(
                NewIntercept {
                    service: service.to_string(),
                    node: node.clone(),
                    tag,
                    header,
                },
                now.unix,
            )
            .map_err(|e| HubError::Intercept(e.to_string()))?
            .clone();
        if self.intercepts != before {
            self.intercepts_changed();
            tracing::info!(%service, %node, header = ?intercept.header.as_ref().map(ToString::to_string), %target, "intercept started");
        }
        Ok(InterceptStarted {
            intercept,
            front: front.to_string(),
            target: target.to_string(),
        })
    }

    /// Ends `from`'s own intercept of `service`; whether there was one.
    pub(super) fn stop_intercept(&mut self, from: PeerId, service: &str) -> Result<bool, HubError> {
        let node = self
            .table
            .get(from)
            .map(|e| e.name.clone())
            .ok_or_else(|| HubError::NoSuchPeer(format!("#{from}")))?;
        let stopped = self.intercepts.remove(&node, service).is_some();
        if stopped {
            self.intercepts_changed();
            tracing::info!(%service, %node, "intercept stopped");
        }
        Ok(stopped)
    }

    /// The names of the services with a front, for messages.
    fn front_names(&self) -> String {
        if self.fronts.is_empty() {
            return "this relay's catalog has none".into();
        }
        let names: Vec<&str> = self.fronts.iter().map(|f| f.service.as_str()).collect();
        format!("these have one: {}", names.join(", "))
    }

    /// Records a change of the intercepts: written like a registration, the fronts follow.
    fn intercepts_changed(&mut self) {
        self.changed();
        self.events.push(Event::FrontsChanged);
    }

    /// Ends the intercepts whose node is gone or whose instance stopped (after a registry
    /// change or a node's leave).
    pub(super) fn prune_intercepts(&mut self) {
        if self.intercepts.list().is_empty() {
            return;
        }
        let gone: Vec<Intercept> = self
            .intercepts
            .list()
            .iter()
            .filter(|i| {
                self.table.by_name(&i.node).is_none()
                    || self
                        .instance_of(&i.node, &i.service, i.tag.as_deref())
                        .is_none()
            })
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        self.intercepts.remove_where(|i| gone.contains(i));
        for i in &gone {
            tracing::info!(service = %i.service, node = %i.node, "intercept ended: the node or its instance is gone");
        }
        self.intercepts_changed();
    }

    /// Ends the intercepts of nodes silent for [`SILENCE`] (a node not heard from since the
    /// relay started counts from the start).
    pub(super) fn expire_silent_intercepts(&mut self, now: Now) {
        if self.intercepts.list().is_empty() {
            return;
        }
        let silent = |node: &str| {
            let heard = self
                .table
                .by_name(node)
                .and_then(|e| self.live.get(&e.id))
                .and_then(|l| l.last_rx)
                .unwrap_or(self.started_at);
            now.instant.saturating_duration_since(heard) >= SILENCE
        };
        let ended: Vec<Intercept> = self
            .intercepts
            .list()
            .iter()
            .filter(|i| silent(&i.node))
            .cloned()
            .collect();
        if ended.is_empty() {
            return;
        }
        self.intercepts.remove_where(|i| ended.contains(i));
        for i in &ended {
            tracing::info!(service = %i.service, node = %i.node, "intercept ended: the node has been silent for {} s", SILENCE.as_secs());
        }
        self.intercepts_changed();
    }
}
