//! The pure core: which HAProxy server slot holds which endpoint, with what
//! weight and whether it drains, and the runtime API commands that take
//! HAProxy from the current slots to the desired ones. No I/O here.
//!
//! Assignment is stable: an endpoint that stays keeps its slot (a change of
//! only its weight or drain state is a command on that slot, never a move
//! or a maintenance), one that leaves puts its slot in maintenance, and new
//! ones fill free slots, lowest first. Everything that adds capacity runs
//! before everything that takes it away: new endpoints are made ready and
//! raised weights set before weights are lowered, servers drained and
//! leaving ones put in maintenance. So a change that adds and removes at
//! once never has fewer servers than either set, and a blue/green traffic
//! shift never passes through a moment where every weight is 0.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use berth_types::endpoints::{Endpoint, FULL_WEIGHT, MAX_WEIGHT};
use berth_types::Protocol;

use crate::config::LoadBalancer;

/// Where one server sends traffic: an endpoint's address and host port.
pub type Target = SocketAddr;

/// One server as it should be: its target, its HAProxy weight and whether
/// it drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Server {
    pub target: Target,
    /// 0 to [`MAX_WEIGHT`], relative to the backend's other servers; 0
    /// keeps the server in the pool but sends it no new traffic.
    pub weight: u32,
    /// No new connections; established ones finish (the task is
    /// DEACTIVATING).
    pub draining: bool,
}

impl Server {
    /// A server taking its full share ([`FULL_WEIGHT`], not draining).
    pub fn new(target: Target) -> Self {
        Self {
            target,
            weight: FULL_WEIGHT,
            draining: false,
        }
    }

    pub fn with_weight(self, weight: u32) -> Self {
        Self { weight, ..self }
    }

    pub fn drained(self) -> Self {
        Self {
            draining: true,
            ..self
        }
    }
}

impl From<Target> for Server {
    fn from(target: Target) -> Self {
        Self::new(target)
    }
}

/// What each slot holds: `None` is a free slot (in maintenance).
pub type Slots = Vec<Option<Server>>;

/// The HAProxy server name of slot `index` (0-based): `s1`, `s2`, ...
pub fn server_name(index: usize) -> String {
    format!("s{}", index + 1)
}

/// The HAProxy backend of a load balancer.
pub fn backend_name(lb: &str) -> String {
    format!("be_{lb}")
}

/// The HAProxy frontend of a load balancer.
pub fn frontend_name(lb: &str) -> String {
    format!("fe_{lb}")
}

/// One runtime API command on one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotCommand {
    /// `set server B/S addr IP port PORT`
    SetAddr { slot: usize, target: Target },
    /// `set server B/S weight N`
    SetWeight { slot: usize, weight: u32 },
    /// `set server B/S state ready`
    Ready { slot: usize },
    /// `set server B/S state drain`
    Drain { slot: usize },
    /// `set server B/S state maint`
    Maint { slot: usize },
}

impl SlotCommand {
    pub fn slot(&self) -> usize {
        match self {
            SlotCommand::SetAddr { slot, .. }
            | SlotCommand::SetWeight { slot, .. }
            | SlotCommand::Ready { slot }
            | SlotCommand::Drain { slot }
            | SlotCommand::Maint { slot } => *slot,
        }
    }

    /// The runtime API line for backend `backend`.
    pub fn render(&self, backend: &str) -> String {
        let server = format!("{backend}/{}", server_name(self.slot()));
        match self {
            SlotCommand::SetAddr { target, .. } => format!(
                "set server {server} addr {} port {}",
                target.ip(),
                target.port()
            ),
            SlotCommand::SetWeight { weight, .. } => {
                format!("set server {server} weight {weight}")
            }
            SlotCommand::Ready { .. } => format!("set server {server} state ready"),
            SlotCommand::Drain { .. } => format!("set server {server} state drain"),
            SlotCommand::Maint { .. } => format!("set server {server} state maint"),
        }
    }
}

impl fmt::Display for SlotCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("BACKEND"))
    }
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The slots once `commands` have run (same length as the input).
    pub slots: Slots,
    /// In order: fill previously free slots; raise weights and end drains;
    /// lower weights and start drains; put leaving endpoints' slots in
    /// maintenance; fill those.
    pub commands: Vec<SlotCommand>,
    /// Desired servers that found no slot (the backend needs more).
    pub unplaced: Vec<Server>,
}

impl Plan {
    /// Slots the desired servers need: those kept or placed, and those
    /// that found none.
    pub fn needed(&self) -> usize {
        self.slots.iter().flatten().count() + self.unplaced.len()
    }
}

/// How [`select`] picked a load balancer's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectedBy {
    /// The service declares a load balancer of this name: the endpoints
    /// that name it, narrowed by `container_name`/`container_port` where
    /// the entry gives them.
    Name,
    /// No endpoint names it: those of `container_name:container_port`.
    Container,
    /// No endpoint names it and the entry lacks `container_name` or
    /// `container_port`, so nothing is selected.
    Nothing,
}

/// What [`select`] found in an endpoint set for one load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Sorted by target, one per target.
    pub servers: Vec<Server>,
    pub by: SelectedBy,
    /// Endpoints left out or changed (a bad address, a weight above
    /// [`MAX_WEIGHT`]), one line each, for warnings.
    pub problems: Vec<String>,
    /// Why nothing was selected from a set that has endpoints, with the
    /// fix: the config and the service's `loadBalancers` disagree.
    pub mismatch: Option<String>,
}

/// The servers of `lb` in an endpoint set (see [`SelectedBy`]): TCP
/// endpoints only, with a parseable address and port, weights capped at
/// [`MAX_WEIGHT`]. Endpoints that cannot be used are reported in
/// `problems`, never a panic.
pub fn select(lb: &LoadBalancer, endpoints: &[Endpoint]) -> Selection {
    let names_it = |e: &Endpoint| e.load_balancers.contains(&lb.name);
    let filters_match = |e: &Endpoint| {
        lb.container_name
            .as_ref()
            .is_none_or(|n| *n == e.container_name)
            && lb
                .container_port
                .is_none_or(|p| u32::from(p) == e.container_port)
    };
    let by = if endpoints.iter().any(names_it) {
        SelectedBy::Name
    } else if lb.container_name.is_some() && lb.container_port.is_some() {
        SelectedBy::Container
    } else {
        SelectedBy::Nothing
    };
    let mut servers: BTreeMap<Target, Server> = BTreeMap::new();
    let mut problems = Vec::new();
    for e in endpoints {
        let chosen = match by {
            SelectedBy::Name => names_it(e) && filters_match(e),
            SelectedBy::Container => filters_match(e),
            SelectedBy::Nothing => false,
        };
        if !chosen || e.protocol != Protocol::Tcp {
            continue;
        }
        let ip: Option<IpAddr> = e.address.trim().parse().ok();
        let port = u16::try_from(e.port).ok().filter(|p| *p != 0);
        let (Some(ip), Some(port)) = (ip, port) else {
            problems.push(format!(
                "task {}: address {:?} port {}: not an IP address and port; left out",
                e.task_id, e.address, e.port
            ));
            continue;
        };
        if e.weight > MAX_WEIGHT {
            problems.push(format!(
                "task {}: weight {} is above {MAX_WEIGHT}; using {MAX_WEIGHT}",
                e.task_id, e.weight
            ));
        }
        let server = Server {
            target: SocketAddr::new(ip, port),
            weight: e.weight.min(MAX_WEIGHT),
            draining: e.draining,
        };
        // One target twice (not something Berth sends) becomes one server
        // that drains only if both do, with the larger weight.
        servers
            .entry(server.target)
            .and_modify(|s| {
                s.weight = s.weight.max(server.weight);
                s.draining &= server.draining;
            })
            .or_insert(server);
    }
    let mismatch = mismatch(lb, endpoints, by, servers.is_empty());
    Selection {
        servers: servers.into_values().collect(),
        by,
        problems,
        mismatch,
    }
}

fn mismatch(
    lb: &LoadBalancer,
    endpoints: &[Endpoint],
    by: SelectedBy,
    nothing_selected: bool,
) -> Option<String> {
    if endpoints.is_empty() || !nothing_selected {
        return None;
    }
    let name = &lb.name;
    match by {
        SelectedBy::Name => {
            let declared: std::collections::BTreeSet<String> = endpoints
                .iter()
                .filter(|e| e.load_balancers.contains(name))
                .map(|e| format!("{}:{}", e.container_name, e.container_port))
                .collect();
            Some(format!(
                "the service's load balancer {name:?} sends traffic to container port {}, \
                 which this entry's container_name/container_port ({}) exclude: correct them \
                 or leave them out",
                declared.into_iter().collect::<Vec<_>>().join(", "),
                lb.container_filter(),
            ))
        }
        SelectedBy::Container => None,
        SelectedBy::Nothing => {
            let declared: std::collections::BTreeSet<&str> = endpoints
                .iter()
                .flat_map(|e| e.load_balancers.iter().map(String::as_str))
                .collect();
            let has = if declared.is_empty() {
                "declares no load balancers".to_string()
            } else {
                format!(
                    "declares load balancers {} but none named {name:?}",
                    declared.into_iter().collect::<Vec<_>>().join(", ")
                )
            };
            Some(format!(
                "the service {has}, and this entry lacks container_name or container_port: \
                 set both, or rename the entry to one of the service's load balancers \
                 (or declare {name:?} in the service's loadBalancers)"
            ))
        }
    }
}

/// Commands and slots taking `current` to `desired` (see the module docs).
/// A draining server that has no slot gets none: it is to take no new
/// connections, and this HAProxy has none open to it.
pub fn plan(current: &[Option<Server>], desired: &[Server]) -> Plan {
    let mut wanted: BTreeMap<Target, Server> = BTreeMap::new();
    for server in desired {
        wanted.entry(server.target).or_insert(*server);
    }
    let mut slots: Slots = current.to_vec();
    // Kept: a target already in a slot stays there (its first slot, if it
    // somehow holds two: the other one is freed), whatever its weight and
    // drain state become.
    let mut placed = std::collections::BTreeSet::new();
    let mut freed = Vec::new();
    let mut changed = Vec::new();
    for (index, slot) in slots.iter_mut().enumerate() {
        let Some(old) = *slot else { continue };
        match wanted.get(&old.target) {
            Some(new) if placed.insert(old.target) => {
                if *new != old {
                    changed.push((index, old, *new));
                    *slot = Some(*new);
                }
            }
            _ => {
                *slot = None;
                freed.push(index);
            }
        }
    }
    let mut new: Vec<Server> = wanted
        .values()
        .filter(|s| !s.draining && !placed.contains(&s.target))
        .copied()
        .collect();
    new.reverse(); // pop() takes the lowest first
    let mut commands = Vec::new();
    // 1. New servers into slots that were already free.
    for index in 0..slots.len() {
        if current[index].is_some() {
            continue;
        }
        let Some(server) = new.pop() else { break };
        slots[index] = Some(server);
        fill(&mut commands, index, server);
    }
    // 2. and 3. Kept servers: first those that take more, then those that
    // take less.
    let (more, less): (Vec<_>, Vec<_>) = changed
        .iter()
        .partition(|(_, old, new)| !new.draining && (old.draining || new.weight > old.weight));
    for &(slot, old, new) in &more {
        if new.weight != old.weight {
            commands.push(SlotCommand::SetWeight {
                slot,
                weight: new.weight,
            });
        }
        // The weight first, so the server never takes traffic at the old
        // one.
        if old.draining {
            commands.push(SlotCommand::Ready { slot });
        }
    }
    for &(slot, old, new) in &less {
        if new.draining && !old.draining {
            commands.push(SlotCommand::Drain { slot });
        }
        if new.weight != old.weight {
            commands.push(SlotCommand::SetWeight {
                slot,
                weight: new.weight,
            });
        }
    }
    // 4. Leaving servers' slots into maintenance.
    for &index in &freed {
        commands.push(SlotCommand::Maint { slot: index });
    }
    // 5. What is left into the slots just freed.
    for &index in &freed {
        let Some(server) = new.pop() else { break };
        slots[index] = Some(server);
        fill(&mut commands, index, server);
    }
    new.reverse();
    Plan {
        slots,
        commands,
        unplaced: new,
    }
}

/// A free slot (in maintenance) becomes `server`: its address and weight
/// before it is made ready, so it never takes traffic as what it was.
fn fill(commands: &mut Vec<SlotCommand>, slot: usize, server: Server) {
    commands.push(SlotCommand::SetAddr {
        slot,
        target: server.target,
    });
    commands.push(SlotCommand::SetWeight {
        slot,
        weight: server.weight,
    });
    commands.push(if server.draining {
        SlotCommand::Drain { slot }
    } else {
        SlotCommand::Ready { slot }
    });
}

/// Commands that put HAProxy in exactly `slots`' state whatever it was
/// (after a failed command, when berth-lb no longer knows).
pub fn resync(slots: &[Option<Server>]) -> Vec<SlotCommand> {
    let mut commands = Vec::new();
    for (slot, server) in slots.iter().enumerate() {
        match server {
            Some(server) => fill(&mut commands, slot, *server),
            None => commands.push(SlotCommand::Maint { slot }),
        }
    }
    commands
}

/// How many slots a backend that needs `needed` gets when `current` are too
/// few: doubled until enough, at most `max`.
pub fn grown(current: usize, needed: usize, max: usize) -> usize {
    let mut n = current.max(1);
    while n < needed && n < max {
        n = n.saturating_mul(2);
    }
    n.min(max)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use SlotCommand::*;

    fn t(port: u16) -> Target {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    /// A full-weight server on port `port`.
    fn s(port: u16) -> Server {
        Server::new(t(port))
    }

    /// The commands that fill a free slot with `server`.
    fn filled(slot: usize, server: Server) -> Vec<SlotCommand> {
        let mut commands = Vec::new();
        fill(&mut commands, slot, server);
        commands
    }

    #[test]
    fn an_empty_backend_fills_from_the_first_slot_setting_weights_before_ready() {
        let p = plan(&[None, None, None], &[s(2), s(1).with_weight(25)]);
        assert_eq!(p.slots, vec![Some(s(1).with_weight(25)), Some(s(2)), None]);
        assert_eq!(
            p.commands,
            vec![
                SetAddr {
                    slot: 0,
                    target: t(1)
                },
                SetWeight {
                    slot: 0,
                    weight: 25
                },
                Ready { slot: 0 },
                SetAddr {
                    slot: 1,
                    target: t(2)
                },
                SetWeight {
                    slot: 1,
                    weight: 100
                },
                Ready { slot: 1 },
            ]
        );
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn unchanged_sets_need_no_commands() {
        let current = vec![None, Some(s(2)), Some(s(1).with_weight(0))];
        let p = plan(&current, &[s(1).with_weight(0), s(2)]);
        assert_eq!(p.slots, current);
        assert!(p.commands.is_empty());
    }

    #[test]
    fn staying_endpoints_keep_their_slots_and_leaving_ones_go_to_maint() {
        let current = vec![Some(s(1)), Some(s(2)), Some(s(3)), None];
        let p = plan(&current, &[s(3), s(1)]);
        assert_eq!(p.slots, vec![Some(s(1)), None, Some(s(3)), None]);
        assert_eq!(p.commands, vec![Maint { slot: 1 }]);
    }

    #[test]
    fn added_endpoints_fill_free_slots_before_leaving_ones_are_removed() {
        let current = vec![Some(s(1)), None, Some(s(2))];
        let p = plan(&current, &[s(2), s(3)]);
        assert_eq!(p.slots, vec![None, Some(s(3)), Some(s(2))]);
        let mut expected = filled(1, s(3));
        expected.push(Maint { slot: 0 });
        assert_eq!(p.commands, expected);
    }

    #[test]
    fn a_full_backend_reuses_a_freed_slot_after_putting_it_in_maint() {
        let current = vec![Some(s(1)), Some(s(2))];
        let p = plan(&current, &[s(2), s(3)]);
        assert_eq!(p.slots, vec![Some(s(3)), Some(s(2))]);
        let mut expected = vec![Maint { slot: 0 }];
        expected.extend(filled(0, s(3)));
        assert_eq!(p.commands, expected);
    }

    #[test]
    fn too_many_endpoints_are_reported_unplaced() {
        let all = [s(1), s(2), s(3), s(4)];
        let p = plan(&[Some(s(1)), None], &all);
        assert_eq!(p.slots, vec![Some(s(1)), Some(s(2))]);
        assert_eq!(p.unplaced, vec![s(3), s(4)]);
        assert_eq!(p.needed(), 4);
        // With more slots everything fits, and the kept one stays put.
        let mut bigger = p.slots.clone();
        bigger.resize(grown(2, p.needed(), MAX), None);
        let p = plan(&bigger, &all);
        assert!(p.unplaced.is_empty());
        assert_eq!(p.slots, all.map(Some).to_vec());
    }

    const MAX: usize = crate::config::MAX_SLOTS;

    #[test]
    fn growth_doubles_up_to_the_limit() {
        assert_eq!(grown(16, 17, MAX), 32);
        assert_eq!(grown(16, 100, MAX), 128);
        assert_eq!(grown(0, 1, MAX), 1);
        assert_eq!(grown(512, 5000, MAX), MAX);
    }

    #[test]
    fn an_empty_set_puts_everything_in_maint() {
        let p = plan(&[Some(s(1)), None, Some(s(2).drained())], &[]);
        assert_eq!(p.slots, vec![None, None, None]);
        assert_eq!(p.commands, vec![Maint { slot: 0 }, Maint { slot: 2 }]);
    }

    #[test]
    fn a_target_held_twice_keeps_one_slot() {
        let p = plan(&[Some(s(1)), Some(s(1))], &[s(1)]);
        assert_eq!(p.slots, vec![Some(s(1)), None]);
        assert_eq!(p.commands, vec![Maint { slot: 1 }]);
    }

    #[test]
    fn a_weight_change_is_one_command_on_the_same_slot() {
        let current = vec![Some(s(1)), Some(s(2)), Some(s(3))];
        let desired = [s(1).with_weight(25), s(2), s(3).with_weight(0)];
        let p = plan(&current, &desired);
        assert_eq!(p.slots, desired.map(Some).to_vec());
        assert_eq!(
            p.commands,
            vec![
                SetWeight {
                    slot: 0,
                    weight: 25
                },
                SetWeight { slot: 2, weight: 0 },
            ]
        );
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn a_traffic_shift_raises_weights_before_it_lowers_any() {
        // Blue/green all at once: green 0 -> 256 and blue 256 -> 0 in one
        // set. Lowering blue first would leave every weight at 0 (HAProxy
        // answers 503) until green is raised.
        let blue = s(1).with_weight(256);
        let green = s(2).with_weight(0);
        let p = plan(
            &[Some(blue), Some(green)],
            &[blue.with_weight(0), green.with_weight(256)],
        );
        assert_eq!(
            p.commands,
            vec![
                SetWeight {
                    slot: 1,
                    weight: 256
                },
                SetWeight { slot: 0, weight: 0 },
            ]
        );
        // A new green task is also ready before blue loses its weight.
        let p = plan(
            &[Some(blue), None],
            &[blue.with_weight(0), s(3).with_weight(256)],
        );
        let mut expected = filled(1, s(3).with_weight(256));
        expected.push(SetWeight { slot: 0, weight: 0 });
        assert_eq!(p.commands, expected);
    }

    #[test]
    fn a_draining_endpoint_keeps_its_slot_and_drains_after_its_replacement_is_ready() {
        let current = vec![Some(s(1)), None];
        let leaving = s(1).drained().with_weight(0);
        let p = plan(&current, &[leaving, s(2)]);
        assert_eq!(p.slots, vec![Some(leaving), Some(s(2))]);
        let mut expected = filled(1, s(2));
        expected.extend([Drain { slot: 0 }, SetWeight { slot: 0, weight: 0 }]);
        assert_eq!(p.commands, expected);
        // Still draining: nothing to do. Gone at last: maintenance.
        let p2 = plan(&p.slots, &[leaving, s(2)]);
        assert!(p2.commands.is_empty(), "{:?}", p2.commands);
        let p3 = plan(&p.slots, &[s(2)]);
        assert_eq!(p3.slots, vec![None, Some(s(2))]);
        assert_eq!(p3.commands, vec![Maint { slot: 0 }]);
    }

    #[test]
    fn a_draining_endpoint_without_a_slot_gets_none() {
        let p = plan(&[None, None], &[s(1).drained(), s(2)]);
        assert_eq!(p.slots, vec![Some(s(2)), None]);
        assert_eq!(p.commands, filled(0, s(2)));
        // Nor does it count towards growing the backend.
        let p = plan(&[Some(s(2))], &[s(1).drained(), s(2)]);
        assert!(p.unplaced.is_empty());
        assert_eq!(p.needed(), 1);
    }

    #[test]
    fn an_endpoint_that_stops_draining_gets_its_weight_then_ready() {
        let p = plan(
            &[Some(s(1).drained().with_weight(0))],
            &[s(1).with_weight(40)],
        );
        assert_eq!(p.slots, vec![Some(s(1).with_weight(40))]);
        assert_eq!(
            p.commands,
            vec![
                SetWeight {
                    slot: 0,
                    weight: 40
                },
                Ready { slot: 0 }
            ]
        );
    }

    #[test]
    fn commands_render_as_runtime_api_lines() {
        let v6 = SocketAddr::new("fd00::5".parse().unwrap(), 49153);
        assert_eq!(
            SetAddr {
                slot: 0,
                target: v6
            }
            .render("be_web"),
            "set server be_web/s1 addr fd00::5 port 49153"
        );
        assert_eq!(
            Ready { slot: 9 }.render("be_web"),
            "set server be_web/s10 state ready"
        );
        assert_eq!(
            Maint { slot: 1 }.render("be_x"),
            "set server be_x/s2 state maint"
        );
        assert_eq!(
            Drain { slot: 2 }.render("be_x"),
            "set server be_x/s3 state drain"
        );
        assert_eq!(
            SetWeight {
                slot: 3,
                weight: 25
            }
            .render("be_x"),
            "set server be_x/s4 weight 25"
        );
    }

    #[test]
    fn resync_sets_every_slot_whole() {
        let drained = s(8).drained().with_weight(0);
        assert_eq!(
            resync(&[Some(s(7).with_weight(3)), None, Some(drained)]),
            vec![
                SetAddr {
                    slot: 0,
                    target: t(7)
                },
                SetWeight { slot: 0, weight: 3 },
                Ready { slot: 0 },
                Maint { slot: 1 },
                SetAddr {
                    slot: 2,
                    target: t(8)
                },
                SetWeight { slot: 2, weight: 0 },
                Drain { slot: 2 },
            ]
        );
    }

    fn endpoint(address: &str, port: u32, container: &str, container_port: u32) -> Endpoint {
        Endpoint {
            draining: false,
            load_balancers: Vec::new(),
            weight: FULL_WEIGHT,
            address: address.into(),
            port,
            protocol: Protocol::Tcp,
            container_name: container.into(),
            container_port,
            task_id: "t".into(),
            instance_id: "i".into(),
        }
    }

    fn named(mut e: Endpoint, names: &[&str]) -> Endpoint {
        e.load_balancers = names.iter().map(|n| n.to_string()).collect();
        e
    }

    fn lb(container: Option<(&str, u16)>) -> LoadBalancer {
        LoadBalancer {
            name: "web".into(),
            bind: "127.0.0.1:80".parse().unwrap(),
            cluster: "default".into(),
            service: "web".into(),
            container_name: container.map(|(n, _)| n.to_string()),
            container_port: container.map(|(_, p)| p),
            mode: crate::config::Mode::Tcp,
            slots: 4,
        }
    }

    fn t_at(ip: &str, port: u16) -> Target {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn without_declared_load_balancers_the_container_and_port_select() {
        let mut udp = endpoint("10.0.0.1", 49160, "web", 8080);
        udp.protocol = Protocol::Udp;
        let chosen = select(
            &lb(Some(("web", 8080))),
            &[
                endpoint("10.0.0.1", 49154, "web", 8080),
                endpoint("10.0.0.1", 49153, "web", 8080),
                endpoint("10.0.0.1", 49153, "web", 8080),
                endpoint("10.0.0.1", 49155, "web", 9090),
                endpoint("10.0.0.1", 49156, "sidecar", 8080),
                udp,
                endpoint("not-an-ip", 49157, "web", 8080),
                endpoint("10.0.0.2", 70000, "web", 8080),
            ],
        );
        assert_eq!(chosen.by, SelectedBy::Container);
        assert_eq!(
            chosen.servers,
            vec![
                Server::new(t_at("10.0.0.1", 49153)),
                Server::new(t_at("10.0.0.1", 49154))
            ]
        );
        assert_eq!(chosen.problems.len(), 2, "{:?}", chosen.problems);
        assert_eq!(chosen.mismatch, None);
    }

    #[test]
    fn a_declared_load_balancer_selects_by_its_name_with_weights_and_drain() {
        let mut canary = named(endpoint("10.0.0.1", 49153, "web", 8080), &["web"]);
        canary.weight = 25;
        let mut old = named(endpoint("10.0.0.2", 49153, "web", 8080), &["web"]);
        old.weight = 0;
        old.draining = true;
        let endpoints = [
            canary,
            old,
            named(endpoint("10.0.0.3", 49153, "web", 8080), &["admin", "web"]),
            // Another load balancer of the service, on another port.
            named(endpoint("10.0.0.3", 49154, "web", 9090), &["admin"]),
            endpoint("10.0.0.3", 49155, "web", 7070),
        ];
        let expected = vec![
            Server::new(t_at("10.0.0.1", 49153)).with_weight(25),
            Server::new(t_at("10.0.0.2", 49153))
                .with_weight(0)
                .drained(),
            Server::new(t_at("10.0.0.3", 49153)),
        ];
        // The name alone decides; matching filters change nothing.
        for container in [None, Some(("web", 8080))] {
            let chosen = select(&lb(container), &endpoints);
            assert_eq!(chosen.by, SelectedBy::Name, "{container:?}");
            assert_eq!(chosen.servers, expected, "{container:?}");
            assert_eq!(chosen.mismatch, None);
        }
        // A filter that disagrees with the service selects nothing, and
        // says which port the service's load balancer is on.
        let chosen = select(&lb(Some(("web", 7070))), &endpoints);
        assert_eq!(chosen.by, SelectedBy::Name);
        assert!(chosen.servers.is_empty());
        let mismatch = chosen.mismatch.unwrap();
        assert!(mismatch.contains("web:8080"), "{mismatch}");
        assert!(mismatch.contains("container_port = 7070"), "{mismatch}");
    }

    #[test]
    fn an_entry_naming_no_declared_load_balancer_falls_back_to_its_container_filters() {
        let endpoints = [
            named(endpoint("10.0.0.1", 49153, "web", 8080), &["public"]),
            endpoint("10.0.0.1", 49154, "web", 9090),
        ];
        let chosen = select(&lb(Some(("web", 9090))), &endpoints);
        assert_eq!(chosen.by, SelectedBy::Container);
        assert_eq!(chosen.servers, vec![Server::new(t_at("10.0.0.1", 49154))]);
        // Without both filters there is nothing to go by: a mismatch that
        // names the service's load balancers and the fix.
        let chosen = select(&lb(None), &endpoints);
        assert_eq!(chosen.by, SelectedBy::Nothing);
        assert!(chosen.servers.is_empty());
        let mismatch = chosen.mismatch.unwrap();
        assert!(
            mismatch.contains("declares load balancers public but none named \"web\""),
            "{mismatch}"
        );
        assert!(mismatch.contains("set both"), "{mismatch}");
        let chosen = select(&lb(None), &endpoints[1..]);
        assert!(chosen
            .mismatch
            .unwrap()
            .contains("declares no load balancers"),);
        // An empty set is no mismatch: the service may just have no tasks.
        assert_eq!(select(&lb(None), &[]).mismatch, None);
    }

    #[test]
    fn weights_above_the_maximum_are_capped_and_reported() {
        let mut e = named(endpoint("10.0.0.1", 49153, "web", 8080), &["web"]);
        e.weight = 1000;
        let chosen = select(&lb(None), &[e]);
        assert_eq!(chosen.servers[0].weight, MAX_WEIGHT);
        assert_eq!(chosen.problems.len(), 1, "{:?}", chosen.problems);
        assert!(chosen.problems[0].contains("weight 1000"));
    }
}
