//! The network as init's event loop runs it: the service started from the build's plan, its
//! events on the console (with the time since init started on a first lease), and the DNS
//! resolver kept on the servers the service reports.

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hostdecl::NetworkPlan;
use hostnet::dns::Resolver;

use super::from_plan::{self, dns_socket_addrs};
use super::{NetEvent, NetworkService, RunPaths};
use crate::console::{self, Line};
use crate::fatal;

pub struct BootNet {
    service: NetworkService,
    resolver: Arc<Resolver>,
    init_started: Instant,
}

impl BootNet {
    /// Starts the network the plan declares; `None` (said on the console) when it declares
    /// none or the service cannot start (init serves on without a network).
    pub fn start(plan: &NetworkPlan, hostname: &str, init_started: Instant) -> Option<BootNet> {
        if plan.interfaces.is_empty() {
            return None;
        }
        let config = match from_plan::net_config(plan) {
            Ok(c) => c,
            Err(e) => {
                console::warn(&format!("network not started: {e}"));
                return None;
            }
        };
        let paths = RunPaths {
            resolv_conf: PathBuf::from(hostimg::RESOLV_CONF_PATH),
            hosts: PathBuf::from(hostimg::HOSTS_PATH),
        };
        match NetworkService::start(config, paths, hostname, Instant::now()) {
            Ok(service) => {
                let resolver = from_plan::resolver(plan);
                resolver.set_servers(dns_socket_addrs(&service.dns_servers()));
                Some(BootNet {
                    service,
                    resolver,
                    init_started,
                })
            }
            Err(e) => {
                console::warn(&format!("network not started: {}", fatal::chain(&e)));
                None
            }
        }
    }

    /// The resolver init's fetches use.
    pub fn resolver(&self) -> Arc<Resolver> {
        self.resolver.clone()
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.service.fds()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.service.next_deadline()
    }

    /// After a poll: reads what is readable when `readable`, fires due timers, says what
    /// happened. Returns whether the host's DNS servers changed (a fetch waiting for the
    /// network may go on).
    pub fn serve(&mut self, readable: bool) -> bool {
        let now = Instant::now();
        let mut events = Vec::new();
        if readable {
            events.extend(self.service.on_ready(now));
        }
        if self.next_deadline().is_some_and(|at| at <= now) {
            events.extend(self.service.on_timer(now));
        }
        let mut changed = false;
        for event in &events {
            let line = match event {
                NetEvent::LeaseAcquired { .. } => format!(
                    "{event} ({} ms after init start)",
                    now.duration_since(self.init_started).as_millis()
                ),
                _ => event.to_string(),
            };
            console::emit(&Line::Net(&line));
            changed |= matches!(
                event,
                NetEvent::LeaseAcquired { .. }
                    | NetEvent::LeaseRenewed { .. }
                    | NetEvent::LeaseLost { .. }
                    | NetEvent::StaticConfigured { .. }
            );
        }
        if changed {
            self.resolver
                .set_servers(dns_socket_addrs(&self.service.dns_servers()));
        }
        changed
    }
}
