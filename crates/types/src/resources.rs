//! What a task reserves and what an instance has left. The same functions are
//! used by the scheduler (on a working copy) and by the state machine (on the
//! replicated record), so the two can never disagree about what fits.

use std::cmp::Ordering;
use std::fmt;

use crate::{ContainerDefinition, NetworkMode, Protocol, TaskDefinitionSpec};
use serde::{Deserialize, Serialize};

/// CPU units (1024 = one core) and memory in MiB. Kept as `u64` so that sums
/// over many containers or tasks cannot overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu: u64,
    pub memory_mib: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu: 0,
        memory_mib: 0,
    };

    pub fn new(cpu: u64, memory_mib: u64) -> Self {
        Self { cpu, memory_mib }
    }

    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu: self.cpu.saturating_sub(other.cpu),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
        }
    }

    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu: self.cpu.saturating_add(other.cpu),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
        }
    }
}

/// A host port and protocol: 8080/tcp and 8080/udp do not conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub port: u32,
    pub protocol: Protocol,
}

impl HostPort {
    pub fn new(port: u32, protocol: Protocol) -> Self {
        Self { port, protocol }
    }

    pub fn tcp(port: u32) -> Self {
        Self::new(port, Protocol::Tcp)
    }

    pub fn udp(port: u32) -> Self {
        Self::new(port, Protocol::Udp)
    }

    // `Protocol` lives in berth-types and has no `Ord`/`Hash`; this key gives
    // ports a total order without changing that crate.
    fn key(&self) -> (u32, u8) {
        let proto = match self.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        };
        (self.port, proto)
    }
}

impl PartialOrd for HostPort {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HostPort {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl std::hash::Hash for HostPort {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

/// Everything one task takes from the instance it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub cpu: u64,
    pub memory_mib: u64,
    /// Sorted and without duplicates when built by [`reserve`] or
    /// [`Reservation::with_port`].
    pub ports: Vec<HostPort>,
}

impl Reservation {
    pub fn new(cpu: u64, memory_mib: u64) -> Self {
        Self {
            cpu,
            memory_mib,
            ports: Vec::new(),
        }
    }

    pub fn with_port(mut self, port: HostPort) -> Self {
        if let Err(at) = self.ports.binary_search(&port) {
            self.ports.insert(at, port);
        }
        self
    }

    pub fn resources(&self) -> Resources {
        Resources::new(self.cpu, self.memory_mib)
    }
}

/// What a task of this definition reserves on its instance.
///
/// Task-level `cpu`/`memory`, when set, are what is reserved (each on its
/// own: a task may set only one of them). Otherwise the containers' values
/// are summed; a container's memory is its hard limit `memory`, or its
/// `memoryReservation` when only that is set.
///
/// Host ports count in `host` and `bridge` network mode: with `none` nothing
/// is published. Only fixed ports are here: a bridge-mode mapping without a
/// `hostPort` gets one from [`crate::DYNAMIC_HOST_PORTS`] when the task is
/// placed ([`InstanceCapacity::with_dynamic_ports`]).
pub fn reserve(spec: &TaskDefinitionSpec) -> Reservation {
    let containers = &spec.container_definitions;
    let cpu = match spec.cpu {
        Some(cpu) => u64::from(cpu),
        None => containers
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(u64::from(c.cpu))),
    };
    let memory_mib = match spec.memory {
        Some(memory) => u64::from(memory),
        None => containers
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(container_memory(c))),
    };
    let mut ports: Vec<HostPort> = containers
        .iter()
        .flat_map(|c| c.port_mappings.iter())
        .filter_map(|m| {
            m.fixed_host_port(spec.network_mode)
                .map(|port| HostPort::new(port, m.protocol))
        })
        .collect();
    ports.sort();
    ports.dedup();
    Reservation {
        cpu,
        memory_mib,
        ports,
    }
}

/// The bridge-mode mappings of `spec` whose host port is picked at
/// placement, in definition order (container by container).
pub fn dynamic_mappings(
    spec: &TaskDefinitionSpec,
) -> impl Iterator<Item = (&ContainerDefinition, &crate::PortMapping)> {
    let bridge = spec.network_mode == NetworkMode::Bridge;
    spec.container_definitions
        .iter()
        .flat_map(|c| c.port_mappings.iter().map(move |m| (c, m)))
        .filter(move |(_, m)| bridge && m.fixed_host_port(NetworkMode::Bridge).is_none())
}

/// Where each port mapping of a task is published, from its definition and
/// its reservation: a placed bridge-mode task's reservation holds its fixed
/// ports (sorted, as [`reserve`] made them) followed by the dynamic ones in
/// [`dynamic_mappings`] order, which is how the placement recorded them.
/// Dynamic mappings of a task not placed yet have no binding.
pub fn network_bindings(
    spec: &TaskDefinitionSpec,
    reservation: &Reservation,
) -> Vec<crate::NetworkBinding> {
    let mode = spec.network_mode;
    let fixed = reserve(spec).ports.len();
    let mut dynamic = reservation.ports.iter().skip(fixed);
    let mut bindings = Vec::new();
    for c in &spec.container_definitions {
        for m in &c.port_mappings {
            let host_port = match m.fixed_host_port(mode) {
                Some(port) => Some(port),
                None if mode == NetworkMode::Bridge => dynamic.next().map(|p| p.port),
                None => None,
            };
            if let Some(host_port) = host_port {
                bindings.push(crate::NetworkBinding {
                    container_name: c.name.clone(),
                    container_port: m.container_port,
                    host_port,
                    protocol: m.protocol,
                });
            }
        }
    }
    bindings
}

// Note: ECS itself reserves `memoryReservation` whenever it is set (the soft
// limit); Berth reserves the hard limit when there is one, so an instance is
// never promised more memory than its tasks may actually use.
fn container_memory(c: &ContainerDefinition) -> u64 {
    u64::from(c.memory.or(c.memory_reservation).unwrap_or(0))
}

/// Why a task cannot be put on an instance right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementConflict {
    #[error("instance {instance} is {status}; only ACTIVE instances take new tasks")]
    NotActive { instance: String, status: String },
    #[error(
        "every host port of the dynamic range {}-{}/{} is in use",
        crate::DYNAMIC_HOST_PORTS.start(),
        crate::DYNAMIC_HOST_PORTS.end(),
        protocol.as_str()
    )]
    NoDynamicPort { protocol: Protocol },
    #[error("needs {needed} CPU units but only {free} are free")]
    InsufficientCpu { needed: u64, free: u64 },
    #[error("needs {needed} MiB of memory but only {free} MiB are free")]
    InsufficientMemory { needed: u64, free: u64 },
    #[error("host port {port} is already in use (by another task, or bound on the host)")]
    PortInUse { port: HostPort },
    #[error("instance {instance} is not in the cluster view")]
    UnknownInstance { instance: String },
}

/// A release that does not match what was allocated: a bookkeeping bug in the
/// caller. Nothing is changed when it is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("releasing {releasing} CPU units but only {allocated} are allocated")]
    CpuUnderflow { releasing: u64, allocated: u64 },
    #[error("releasing {releasing} MiB of memory but only {allocated} MiB are allocated")]
    MemoryUnderflow { releasing: u64, allocated: u64 },
    #[error("releasing host port {port}, which is not allocated")]
    PortNotHeld { port: HostPort },
}

/// An instance's registered resources and what its tasks hold.
///
/// The allocated amount is tracked rather than the remaining one so that
/// allocate/release round trips are exact even when the registered size
/// changes underneath (an agent re-registering with less memory): remaining is
/// derived and never negative.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCapacity {
    registered: Resources,
    allocated: Resources,
    /// Sorted; duplicates appear only through [`InstanceCapacity::record`]
    /// (reality that was over-committed), so that releases stay exact.
    ports: Vec<HostPort>,
    /// Sorted: ports something other than Berth's tasks had bound on the
    /// host when its agent last connected. Never handed out.
    host_ports: Vec<HostPort>,
}

impl InstanceCapacity {
    pub fn new(registered: Resources) -> Self {
        Self {
            registered,
            allocated: Resources::ZERO,
            ports: Vec::new(),
            host_ports: Vec::new(),
        }
    }

    pub fn registered(&self) -> Resources {
        self.registered
    }

    pub fn allocated(&self) -> Resources {
        self.allocated
    }

    pub fn remaining(&self) -> Resources {
        self.registered.saturating_sub(self.allocated)
    }

    pub fn used_ports(&self) -> &[HostPort] {
        &self.ports
    }

    /// Held by a task here, or bound on the host by something else.
    pub fn port_in_use(&self, port: HostPort) -> bool {
        self.ports.binary_search(&port).is_ok() || self.host_ports.binary_search(&port).is_ok()
    }

    pub fn host_ports(&self) -> &[HostPort] {
        &self.host_ports
    }

    /// What the agent found bound on the host (sorted and de-duplicated
    /// here).
    pub fn set_host_ports(&mut self, mut ports: Vec<HostPort>) {
        ports.sort();
        ports.dedup();
        self.host_ports = ports;
    }

    pub fn set_registered(&mut self, registered: Resources) {
        self.registered = registered;
    }

    /// `reservation` (of a task not placed yet) with a host port from
    /// [`crate::DYNAMIC_HOST_PORTS`] appended for each of `protocols`, in
    /// order: the lowest ports no task here holds. Deterministic, so every
    /// server applying a placement picks the same ports.
    pub fn with_dynamic_ports(
        &self,
        reservation: &Reservation,
        protocols: &[Protocol],
    ) -> Result<Reservation, PlacementConflict> {
        let mut with = reservation.clone();
        for &protocol in protocols {
            let free = crate::DYNAMIC_HOST_PORTS
                .map(|port| HostPort::new(port, protocol))
                .find(|p| !self.port_in_use(*p) && !with.ports.contains(p))
                .ok_or(PlacementConflict::NoDynamicPort { protocol })?;
            with.ports.push(free);
        }
        Ok(with)
    }

    /// Whether a task with this reservation fits now.
    pub fn fits(&self, reservation: &Reservation) -> bool {
        self.check(reservation).is_ok()
    }

    /// Like [`fits`](Self::fits), with the first reason it does not.
    pub fn check(&self, reservation: &Reservation) -> Result<(), PlacementConflict> {
        let free = self.remaining();
        if reservation.cpu > free.cpu {
            return Err(PlacementConflict::InsufficientCpu {
                needed: reservation.cpu,
                free: free.cpu,
            });
        }
        if reservation.memory_mib > free.memory_mib {
            return Err(PlacementConflict::InsufficientMemory {
                needed: reservation.memory_mib,
                free: free.memory_mib,
            });
        }
        if let Some(&port) = reservation.ports.iter().find(|p| self.port_in_use(**p)) {
            return Err(PlacementConflict::PortInUse { port });
        }
        Ok(())
    }

    /// Takes the reservation if it fits; otherwise changes nothing.
    pub fn allocate(&mut self, reservation: &Reservation) -> Result<(), PlacementConflict> {
        self.check(reservation)?;
        self.record(reservation);
        Ok(())
    }

    /// Takes the reservation unconditionally: for rebuilding the accounting
    /// of tasks that are already running, which must be counted even if the
    /// instance is now over-committed.
    pub fn record(&mut self, reservation: &Reservation) {
        self.allocated = self.allocated.saturating_add(reservation.resources());
        for &port in &reservation.ports {
            let at = self.ports.partition_point(|p| *p <= port);
            self.ports.insert(at, port);
        }
    }

    /// Gives back what a stopped task held. Either everything is released or,
    /// on a mismatch, nothing is.
    pub fn release(&mut self, reservation: &Reservation) -> Result<(), CapacityError> {
        if reservation.cpu > self.allocated.cpu {
            return Err(CapacityError::CpuUnderflow {
                releasing: reservation.cpu,
                allocated: self.allocated.cpu,
            });
        }
        if reservation.memory_mib > self.allocated.memory_mib {
            return Err(CapacityError::MemoryUnderflow {
                releasing: reservation.memory_mib,
                allocated: self.allocated.memory_mib,
            });
        }
        let mut ports = self.ports.clone();
        for &port in &reservation.ports {
            match ports.binary_search(&port) {
                Ok(at) => {
                    ports.remove(at);
                }
                Err(_) => return Err(CapacityError::PortNotHeld { port }),
            }
        }
        self.ports = ports;
        self.allocated = self.allocated.saturating_sub(reservation.resources());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortMapping, TaskDefinitionSpec};

    fn container(cpu: u32, memory: Option<u32>, reservation: Option<u32>) -> ContainerDefinition {
        let mut c = ContainerDefinition::new("c", "img");
        c.cpu = cpu;
        c.memory = memory;
        c.memory_reservation = reservation;
        c
    }

    fn spec(containers: Vec<ContainerDefinition>) -> TaskDefinitionSpec {
        TaskDefinitionSpec {
            family: "web".into(),
            container_definitions: containers,
            cpu: None,
            memory: None,
            network_mode: NetworkMode::Host,
            volumes: Vec::new(),
            tags: Vec::new(),
        }
    }

    #[test]
    fn containers_are_summed_with_hard_limit_first() {
        let s = spec(vec![
            container(256, Some(512), Some(128)),
            container(128, None, Some(64)),
            container(0, None, None),
        ]);
        let r = reserve(&s);
        assert_eq!((r.cpu, r.memory_mib), (384, 576));
    }

    #[test]
    fn task_level_values_win_each_on_its_own() {
        let mut s = spec(vec![container(256, Some(512), None)]);
        s.cpu = Some(1024);
        assert_eq!((reserve(&s).cpu, reserve(&s).memory_mib), (1024, 512));
        s.cpu = None;
        s.memory = Some(2048);
        assert_eq!((reserve(&s).cpu, reserve(&s).memory_mib), (256, 2048));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let s = spec(vec![
            container(u32::MAX, Some(u32::MAX), None),
            container(u32::MAX, Some(u32::MAX), None),
        ]);
        let r = reserve(&s);
        assert_eq!(r.cpu, 2 * u64::from(u32::MAX));
        assert_eq!(r.memory_mib, 2 * u64::from(u32::MAX));
    }

    #[test]
    fn ports_only_in_host_mode_sorted_and_deduplicated() {
        let mut a = container(0, Some(64), None);
        a.port_mappings = vec![
            PortMapping {
                container_port: 9090,
                host_port: None,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                container_port: 8080,
                host_port: Some(8080),
                protocol: Protocol::Udp,
            },
            PortMapping {
                container_port: 8080,
                host_port: None,
                protocol: Protocol::Tcp,
            },
        ];
        let mut b = container(0, Some(64), None);
        b.port_mappings = vec![PortMapping {
            container_port: 9090,
            host_port: Some(9090),
            protocol: Protocol::Tcp,
        }];
        let mut s = spec(vec![a, b]);
        assert_eq!(
            reserve(&s).ports,
            vec![
                HostPort::tcp(8080),
                HostPort::udp(8080),
                HostPort::tcp(9090)
            ]
        );
        s.network_mode = NetworkMode::None;
        assert!(reserve(&s).ports.is_empty());
    }

    #[test]
    fn allocate_release_round_trip_is_exact() {
        let mut cap = InstanceCapacity::new(Resources::new(2048, 4096));
        let before = cap.clone();
        let a = Reservation::new(512, 1000).with_port(HostPort::tcp(80));
        let b = Reservation::new(1536, 3096).with_port(HostPort::udp(80));
        cap.allocate(&a).unwrap();
        cap.allocate(&b).unwrap();
        assert_eq!(cap.remaining(), Resources::ZERO);
        assert!(!cap.fits(&Reservation::new(1, 0)));
        cap.release(&a).unwrap();
        assert_eq!(cap.remaining(), Resources::new(512, 1000));
        cap.release(&b).unwrap();
        assert_eq!(cap, before);
    }

    #[test]
    fn allocate_refuses_and_changes_nothing() {
        let mut cap = InstanceCapacity::new(Resources::new(1024, 1024));
        cap.allocate(&Reservation::new(0, 0).with_port(HostPort::tcp(80)))
            .unwrap();
        let before = cap.clone();
        assert_eq!(
            cap.allocate(&Reservation::new(2048, 0)),
            Err(PlacementConflict::InsufficientCpu {
                needed: 2048,
                free: 1024
            })
        );
        assert_eq!(
            cap.allocate(&Reservation::new(0, 2048)),
            Err(PlacementConflict::InsufficientMemory {
                needed: 2048,
                free: 1024
            })
        );
        assert_eq!(
            cap.allocate(&Reservation::new(1, 1).with_port(HostPort::tcp(80))),
            Err(PlacementConflict::PortInUse {
                port: HostPort::tcp(80)
            })
        );
        assert_eq!(cap, before);
    }

    #[test]
    fn release_mismatch_changes_nothing() {
        let mut cap = InstanceCapacity::new(Resources::new(1024, 1024));
        cap.allocate(&Reservation::new(100, 100).with_port(HostPort::tcp(80)))
            .unwrap();
        let before = cap.clone();
        assert!(matches!(
            cap.release(&Reservation::new(200, 0)),
            Err(CapacityError::CpuUnderflow { .. })
        ));
        assert!(matches!(
            cap.release(&Reservation::new(0, 200)),
            Err(CapacityError::MemoryUnderflow { .. })
        ));
        assert_eq!(
            cap.release(&Reservation::new(100, 100).with_port(HostPort::udp(80))),
            Err(CapacityError::PortNotHeld {
                port: HostPort::udp(80)
            })
        );
        assert_eq!(cap, before);
    }

    #[test]
    fn recorded_overcommit_still_releases_exactly() {
        let mut cap = InstanceCapacity::new(Resources::new(1024, 1024));
        let r = Reservation::new(800, 800).with_port(HostPort::tcp(80));
        cap.record(&r);
        cap.record(&r);
        assert_eq!(cap.remaining(), Resources::ZERO);
        assert_eq!(cap.allocated(), Resources::new(1600, 1600));
        cap.release(&r).unwrap();
        assert!(cap.port_in_use(HostPort::tcp(80)));
        cap.release(&r).unwrap();
        assert_eq!(cap, InstanceCapacity::new(Resources::new(1024, 1024)));
    }

    #[test]
    fn shrinking_registration_leaves_nothing_negative() {
        let mut cap = InstanceCapacity::new(Resources::new(4096, 4096));
        cap.allocate(&Reservation::new(2048, 2048)).unwrap();
        cap.set_registered(Resources::new(1024, 1024));
        assert_eq!(cap.remaining(), Resources::ZERO);
        cap.release(&Reservation::new(2048, 2048)).unwrap();
        assert_eq!(cap.remaining(), Resources::new(1024, 1024));
    }
}
