//! The PID1 lifecycle: bring the host up, wait for events, shut down in order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::time::{ClockId, clock_gettime};

use crate::clock;
use crate::console::{self, Line, PodEvent, ShutdownReason};
use crate::decl::{self, Settings};
use crate::error::InitError;
use crate::fatal;
use crate::fetch::{self, FetchOutcome, Fetcher};
use crate::hostname;
use crate::mount::{self, EARLY_MOUNTS, RealMountOps};
use crate::net::boot::BootNet;
use crate::net::from_plan;
use crate::net::from_plan::DnsSeam;
use crate::pod::pending::{Pending, Progress, Wanted};
use crate::pod::runtime::{self, Runtime};
use crate::power_button::{Activity, INPUT_DIR, PowerButtons};
use crate::reap;
use crate::shutdown::{self, PowerAction, RealShutdown};
use crate::signals::{Event, Signals};
use crate::storage::{self, RealStorage};
use crate::supervise::Supervisor;
use hostdecl::NetworkPlan;

/// How often /dev/input is scanned again while drivers may still be probing, and for how long.
const RESCAN_INTERVAL: Duration = Duration::from_millis(250);
const RESCAN_WINDOW: Duration = Duration::from_secs(10);

/// Refuses to run unless this process is PID 1: everything below remounts and powers off the
/// machine it runs on.
pub fn check_pid1() -> Result<(), InitError> {
    let pid = nix::unistd::getpid().as_raw();
    if pid == 1 {
        Ok(())
    } else {
        Err(InitError::NotPid1 { pid })
    }
}

/// Runs init. Never returns: every way out is a power-off or a reboot.
pub fn run() -> ! {
    fatal::install_panic_hook();
    let started = Instant::now();
    let boottime = clock_gettime(ClockId::CLOCK_BOOTTIME).ok();
    let error = match boot(started, boottime) {
        Ok(mut host) => host.serve(),
        Err(e) => e,
    };
    fatal::die(&error)
}

/// The state of a running host.
struct Host {
    settings: Settings,
    signals: Signals,
    buttons: PowerButtons,
    started: Instant,
    next_scan: Option<Instant>,
    /// The pods' executor; `None` when the image declares no pods (or they could not start).
    runtime: Option<Runtime>,
    supervisor: Supervisor,
    /// The network the build's plan declares (none: no plan, or it declares no interface).
    net: Option<BootNet>,
    /// The build's network plan (its fetch policy serves the fetcher too).
    net_plan: NetworkPlan,
    /// Pods waiting for images fetched at boot.
    pending: Pending,
    /// The fetches the waiting pods need, not yet handed to the fetcher.
    wanted: Vec<Wanted>,
    /// Fetches images for the waiting pods, on its own threads.
    fetcher: Option<Fetcher>,
    /// Set once a shutdown began while apps still ran: why, and until when to wait for them.
    stopping: Option<Stopping>,
}

/// A shutdown under way: the apps got SIGTERM; SIGKILL at `deadline`, then the rest.
struct Stopping {
    deadline: Instant,
    killed: bool,
}

/// After SIGKILL, how long the apps' post-stop handlers and exits may still take.
const AFTER_KILL: Duration = Duration::from_secs(5);

fn boot(started: Instant, boottime: Option<nix::sys::time::TimeSpec>) -> Result<Host, InitError> {
    let outcomes = mount::mount_all(&mut RealMountOps, EARLY_MOUNTS)?;
    console::attach_stdio()?;
    let boottime_ms = boottime.map_or(0, |t| {
        let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
        let millis = u64::try_from(t.tv_nsec() / 1_000_000).unwrap_or(0);
        secs.saturating_mul(1000).saturating_add(millis)
    });
    console::emit(&Line::Started {
        version: env!("CARGO_PKG_VERSION"),
        arch: std::env::consts::ARCH,
        boottime_ms,
    });
    for (target, outcome) in outcomes {
        if outcome == mount::Outcome::AlreadyMounted {
            console::warn(&format!("{target} was already mounted; keeping it"));
        }
    }

    let loaded = decl::load(Path::new(hostdecl::RENDERED_PATH))?;
    fatal::set_fatal_action(loaded.settings.on_fatal);
    if loaded.defaulted {
        console::warn(&format!(
            "no host declaration at {}; using defaults (hostname {})",
            hostdecl::RENDERED_PATH,
            loaded.settings.hostname
        ));
    }
    let settings = loaded.settings;

    hostname::set_hostname(&settings.hostname)?;
    console::emit(&Line::HostnameSet(&settings.hostname));

    // Before anything that checks certificates.
    clock::apply_floor();

    // The network comes up in the background of the event loop: nothing here waits for it.
    // Started before the disk, so the DHCP server's first reply is there to read by the time
    // the loop runs.
    let net_plan = match from_plan::load(Path::new(hostimg::NETWORK_PLAN_PATH)) {
        Ok(plan) => plan.unwrap_or_default(),
        Err(e) => {
            console::warn(&e);
            NetworkPlan::default()
        }
    };
    let net = BootNet::start(&net_plan, &settings.hostname, started);

    // After the declaration, so a disk that fails ends the boot per its `on_fatal`. The
    // error is fatal on its own terms: its chain starts with the part of the disk at fault
    // (`payload /dev/vda2: dm-verity ...`).
    if let Err(e) = storage::setup_from_cmdline(&mut RealStorage::default()) {
        fatal::die(&e);
    }

    let signals = Signals::install()?;
    let mut buttons = PowerButtons::new(INPUT_DIR);
    if let Err(e) = buttons.scan() {
        console::warn(&fatal::chain(&e));
    }
    console::emit(&Line::Ready);
    let mut host = Host {
        settings,
        signals,
        buttons,
        started,
        next_scan: Some(Instant::now() + RESCAN_INTERVAL),
        runtime: None,
        supervisor: Supervisor::new(Vec::new(), started),
        net,
        net_plan,
        pending: Pending::default(),
        wanted: Vec::new(),
        fetcher: None,
        stopping: None,
    };
    host.start_pods();
    Ok(host)
}

impl Host {
    /// Prepares the declared pods and starts their apps. A failure here stops the pods, never
    /// the host: it is reported and init serves on (the power button still works).
    fn start_pods(&mut self) {
        let plan = match runtime::load_plan(Path::new(hostimg::PODS_PLAN_PATH)) {
            Ok(Some(plan)) => plan,
            Ok(None) => return,
            Err(e) => return console::warn(&e),
        };
        // The images and the store live on the disk; a direct -kernel boot has neither (the
        // marker is on the data partition, so it exists only once /var is mounted).
        if !Path::new(storage::FIRST_BOOT_MARKER).exists() {
            return console::warn(&format!(
                "pods not started: no data partition at {} (booted without the disk image)",
                hostimg::DATA_MOUNT
            ));
        }
        let mut rt = match Runtime::new(&plan) {
            Ok(rt) => rt,
            Err(e) => return console::warn(&format!("pods not started: {e}")),
        };
        let mut apps = Vec::new();
        for pod in &plan.pods {
            console::emit(&Line::Pod {
                who: &pod.name,
                event: PodEvent::Preparing,
            });
            let mut ids = BTreeMap::new();
            let missing = rt.missing_images(pod, &mut ids);
            if !missing.is_empty() {
                let wanted = self.pending.wait(pod, ids, missing);
                for w in &wanted {
                    console::emit(&Line::Pod {
                        who: &w.who,
                        event: PodEvent::WaitingForImage(&w.fetch.request().to_string()),
                    });
                }
                self.wanted.extend(wanted);
                continue;
            }
            match rt.prepare_pod(pod, &ids) {
                Ok(a) => apps.extend(a),
                Err(e) => console::emit(&Line::Pod {
                    who: &pod.name,
                    event: PodEvent::Refused(&e),
                }),
            }
        }
        self.supervisor = Supervisor::new(apps, self.started);
        self.supervisor.start_all(&mut rt);
        self.runtime = Some(rt);
        self.start_fetching();
    }

    /// Hands the waiting pods' images to the fetcher (started on first use).
    fn start_fetching(&mut self) {
        if self.wanted.is_empty() {
            return;
        }
        if self.fetcher.is_none() {
            let resolver = match &self.net {
                Some(net) => net.resolver(),
                None => from_plan::resolver(&self.net_plan),
            };
            match fetch::boot::start(&self.net_plan, Arc::new(DnsSeam(resolver))) {
                Ok(f) => self.fetcher = Some(f),
                Err(e) => {
                    console::warn(&format!("cannot fetch images: {e}"));
                    return;
                }
            }
        }
        let Some(fetcher) = self.fetcher.as_ref() else {
            return;
        };
        for w in std::mem::take(&mut self.wanted) {
            if let Err(e) = fetcher.submit(fetch::boot::request(&w.who, &w.fetch)) {
                console::warn(&format!("{}: {}", w.who, fatal::chain(&e)));
            }
        }
    }

    /// What the fetcher reported: a pod whose last image arrived is prepared and started.
    fn on_fetched(&mut self) {
        let Some(fetcher) = self.fetcher.as_ref() else {
            return;
        };
        for outcome in fetcher.drain() {
            fetch::boot::say(&outcome);
            let progress = match outcome {
                FetchOutcome::Present { app, image_id }
                | FetchOutcome::Fetched { app, image_id, .. } => {
                    self.pending.arrived(&app, image_id)
                }
                FetchOutcome::Refused { app, .. } => self.pending.refused(&app),
                FetchOutcome::Retrying { .. } => Progress::Waiting,
            };
            match progress {
                Progress::Waiting => {}
                Progress::Abandoned(pod) => console::emit(&Line::Pod {
                    who: &pod,
                    event: PodEvent::Refused("one of its images was refused (see above)"),
                }),
                Progress::Ready(pod, ids) => {
                    let Some(rt) = self.runtime.as_mut() else {
                        continue;
                    };
                    match rt.prepare_pod(&pod, &ids) {
                        Ok(apps) => self.supervisor.add_and_start(apps, rt),
                        Err(e) => console::emit(&Line::Pod {
                            who: &pod.name,
                            event: PodEvent::Refused(&e),
                        }),
                    }
                }
            }
        }
    }

    /// The event loop. Returns only the error that ends it; a shutdown never returns unless
    /// the final reboot(2) fails.
    fn serve(&mut self) -> InitError {
        loop {
            let ready = match self.wait() {
                Ok(ready) => ready,
                Err(e) => return e,
            };
            if ready.signals {
                let events = match self.signals.read() {
                    Ok(events) => events,
                    Err(e) => return e.into(),
                };
                for event in events {
                    match event {
                        Event::Child => self.reap(),
                        Event::Shutdown(reason) => self.begin_shutdown(reason),
                    }
                }
            }
            for token in ready.supervised {
                self.supervisor.on_ready(token);
            }
            if ready.fetch {
                self.on_fetched();
            }
            let dns_changed = self.net.as_mut().is_some_and(|n| n.serve(ready.net));
            if dns_changed && let Some(rt) = self.runtime.as_ref() {
                rt.refresh_resolv_conf();
            }
            // Highest index first: a device that went away is removed from the list.
            for index in ready.devices.into_iter().rev() {
                match self.buttons.read(index) {
                    Ok(Activity::Pressed(name)) => {
                        self.begin_shutdown(ShutdownReason::PowerButton(name));
                    }
                    Ok(Activity::Nothing | Activity::Gone) => {}
                    Err(e) => console::warn(&fatal::chain(&e)),
                }
            }
            if let Some(rt) = self.runtime.as_mut() {
                self.supervisor.on_timer(Instant::now(), rt);
            }
            self.rescan_if_due();
            if let Some(e) = self.shutdown_if_due() {
                return e;
            }
        }
    }

    /// Collects every exited child; the supervised ones go to the supervisor.
    fn reap(&mut self) {
        match reap::reap_zombies() {
            Ok(reaped) => {
                for status in reaped.statuses {
                    if let Some(rt) = self.runtime.as_mut() {
                        self.supervisor.on_exit(status, rt);
                    }
                }
            }
            Err(e) => console::warn(&fatal::chain(&e)),
        }
    }

    /// Starts a shutdown: with apps running, SIGTERM to each and wait (in the loop) for them.
    fn begin_shutdown(&mut self, reason: ShutdownReason) {
        if self.stopping.is_some() {
            return;
        }
        console::emit(&Line::ShutdownRequested(&reason));
        // No new fetch attempts; one in flight ends with the host (the store keeps no partial
        // image: a download becomes visible only once verified and synced).
        if let Some(f) = self.fetcher.as_ref() {
            f.stop();
        }
        self.supervisor.stop(nix::sys::signal::Signal::SIGTERM);
        self.stopping = Some(Stopping {
            deadline: Instant::now() + self.settings.shutdown_grace,
            killed: false,
        });
    }

    /// Once the apps are gone (or out of time), the rest of the shutdown; returns only if the
    /// final reboot(2) failed.
    fn shutdown_if_due(&mut self) -> Option<InitError> {
        let now = Instant::now();
        let stopping = self.stopping.as_mut()?;
        if !self.supervisor.idle() {
            if now < stopping.deadline {
                return None;
            }
            if !stopping.killed {
                stopping.killed = true;
                stopping.deadline = now + AFTER_KILL;
                console::emit(&Line::SendingSigkill);
                self.supervisor.stop(nix::sys::signal::Signal::SIGKILL);
                return None;
            }
        }
        if let Some(rt) = self.runtime.as_mut() {
            self.supervisor.finish(rt);
        }
        Some(self.shutdown())
    }

    /// Polls the signalfd, the supervised pipes and the input devices.
    fn wait(&mut self) -> Result<Ready, InitError> {
        let now = Instant::now();
        let deadline = [
            self.next_scan,
            self.supervisor.next_deadline(),
            self.stopping.as_ref().map(|s| s.deadline),
            self.net.as_ref().and_then(BootNet::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            Some(at) => {
                let ms = at.saturating_duration_since(now).as_millis();
                // Round up, so a deadline 0.4 ms away does not spin.
                PollTimeout::from(u16::try_from(ms + 1).unwrap_or(u16::MAX))
            }
            None => PollTimeout::NONE,
        };
        let supervised = self.supervisor.fds();
        let net = self.net.as_ref().map(BootNet::fds).unwrap_or_default();
        let mut fds = Vec::with_capacity(1 + supervised.len() + self.buttons.len() + net.len());
        fds.push(PollFd::new(self.signals.fd(), PollFlags::POLLIN));
        fds.extend(
            supervised
                .iter()
                .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        fds.extend(
            self.buttons
                .fds()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN)),
        );
        let net_at = fds.len();
        fds.extend(net.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
        let fetch_at = fds.len();
        if let Some(f) = self.fetcher.as_ref() {
            fds.push(PollFd::new(f.wake_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Ready::default()),
            Err(e) => return Err(InitError::Poll(e)),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let signals = fds.first().is_some_and(ready);
        let tokens = fds
            .iter()
            .skip(1)
            .zip(supervised.iter())
            .filter(|(fd, _)| ready(fd))
            .map(|(_, (_, token))| *token)
            .collect();
        let devices = fds[..net_at]
            .iter()
            .skip(1 + supervised.len())
            .enumerate()
            .filter(|(_, fd)| ready(fd))
            .map(|(index, _)| index)
            .collect();
        let net = fds[net_at..fetch_at].iter().any(ready);
        let fetch = fds[fetch_at..].iter().any(ready);
        Ok(Ready {
            signals,
            supervised: tokens,
            devices,
            net,
            fetch,
        })
    }

    fn rescan_if_due(&mut self) {
        let Some(at) = self.next_scan else {
            return;
        };
        let now = Instant::now();
        if now < at {
            return;
        }
        if let Err(e) = self.buttons.scan() {
            console::warn(&fatal::chain(&e));
        }
        self.next_scan =
            (now.duration_since(self.started) < RESCAN_WINDOW).then(|| now + RESCAN_INTERVAL);
    }

    fn shutdown(&mut self) -> InitError {
        shutdown::shutdown(
            &mut RealShutdown,
            self.settings.shutdown_grace,
            PowerAction::PowerOff,
        )
        .into()
    }
}

/// What one poll found readable.
#[derive(Default)]
struct Ready {
    signals: bool,
    supervised: Vec<crate::supervise::Token>,
    devices: Vec<usize>,
    /// One of the network service's sockets.
    net: bool,
    /// The fetcher has outcomes.
    fetch: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_run_unless_pid1() {
        // The test runner is never PID 1.
        let err = check_pid1().expect_err("not pid 1");
        assert!(matches!(err, InitError::NotPid1 { .. }));
        assert!(err.to_string().starts_with("refusing to run as process "));
    }
}
