//! The pure core: which HAProxy server slot holds which endpoint, and the
//! runtime API commands that take HAProxy from the current slots to the
//! desired ones. No I/O here.
//!
//! Assignment is stable: an endpoint that stays keeps its slot, one that
//! leaves puts its slot in maintenance, and new ones fill free slots,
//! lowest first. New endpoints are made ready before leaving ones are put
//! in maintenance, so a change that adds and removes at once never has
//! fewer servers than either set.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use berth_types::endpoints::Endpoint;
use berth_types::Protocol;

use crate::config::LoadBalancer;

/// Where one server sends traffic: an endpoint's address and host port.
pub type Target = SocketAddr;

/// What one slot holds: `None` is a free slot (in maintenance).
pub type Slots = Vec<Option<Target>>;

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
    /// `set server B/S state ready`
    Ready { slot: usize },
    /// `set server B/S state maint`
    Maint { slot: usize },
}

impl SlotCommand {
    pub fn slot(&self) -> usize {
        match self {
            SlotCommand::SetAddr { slot, .. }
            | SlotCommand::Ready { slot }
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
            SlotCommand::Ready { .. } => format!("set server {server} state ready"),
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
    /// In order: fill previously free slots, then put leaving endpoints'
    /// slots in maintenance, then fill those.
    pub commands: Vec<SlotCommand>,
    /// Desired targets that found no slot (the backend needs more).
    pub unplaced: Vec<Target>,
}

/// The targets of `lb` in an endpoint set: TCP endpoints of its container
/// and port, with a parseable address and port, sorted and deduplicated.
/// Endpoints that cannot be used are returned as the second value (for a
/// warning), never a panic.
pub fn targets(lb: &LoadBalancer, endpoints: &[Endpoint]) -> (Vec<Target>, Vec<String>) {
    let mut targets = BTreeSet::new();
    let mut unusable = Vec::new();
    for e in endpoints {
        if e.container_name != lb.container_name
            || e.container_port != u32::from(lb.container_port)
            || e.protocol != Protocol::Tcp
        {
            continue;
        }
        let ip: Option<IpAddr> = e.address.trim().parse().ok();
        let port = u16::try_from(e.port).ok().filter(|p| *p != 0);
        match (ip, port) {
            (Some(ip), Some(port)) => {
                targets.insert(SocketAddr::new(ip, port));
            }
            _ => unusable.push(format!(
                "task {}: address {:?} port {}",
                e.task_id, e.address, e.port
            )),
        }
    }
    (targets.into_iter().collect(), unusable)
}

/// Commands and slots taking `current` to `desired` (see the module docs).
pub fn plan(current: &[Option<Target>], desired: &[Target]) -> Plan {
    let wanted: BTreeSet<Target> = desired.iter().copied().collect();
    let mut slots: Slots = current.to_vec();
    // Kept: a target already in a slot stays there (its first slot, if it
    // somehow holds two: the other one is freed).
    let mut placed = BTreeSet::new();
    let mut freed = Vec::new();
    for (index, slot) in slots.iter_mut().enumerate() {
        if let Some(target) = *slot {
            if !wanted.contains(&target) || !placed.insert(target) {
                *slot = None;
                freed.push(index);
            }
        }
    }
    let mut new: Vec<Target> = wanted
        .iter()
        .filter(|t| !placed.contains(*t))
        .copied()
        .collect();
    new.reverse(); // pop() takes the lowest first
    let mut commands = Vec::new();
    // 1. New targets into slots that were already free.
    for index in 0..slots.len() {
        if current[index].is_some() {
            continue;
        }
        let Some(target) = new.pop() else { break };
        slots[index] = Some(target);
        commands.push(SlotCommand::SetAddr {
            slot: index,
            target,
        });
        commands.push(SlotCommand::Ready { slot: index });
    }
    // 2. Leaving targets' slots into maintenance.
    for &index in &freed {
        commands.push(SlotCommand::Maint { slot: index });
    }
    // 3. What is left into the slots just freed.
    for &index in &freed {
        let Some(target) = new.pop() else { break };
        slots[index] = Some(target);
        commands.push(SlotCommand::SetAddr {
            slot: index,
            target,
        });
        commands.push(SlotCommand::Ready { slot: index });
    }
    new.reverse();
    Plan {
        slots,
        commands,
        unplaced: new,
    }
}

/// Commands that put HAProxy in exactly `slots`' state whatever it was
/// (after a failed command, when berth-lb no longer knows).
pub fn resync(slots: &[Option<Target>]) -> Vec<SlotCommand> {
    let mut commands = Vec::new();
    for (slot, target) in slots.iter().enumerate() {
        match target {
            Some(target) => {
                commands.push(SlotCommand::SetAddr {
                    slot,
                    target: *target,
                });
                commands.push(SlotCommand::Ready { slot });
            }
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

    #[test]
    fn an_empty_backend_fills_from_the_first_slot() {
        let p = plan(&[None, None, None], &[t(2), t(1)]);
        assert_eq!(p.slots, vec![Some(t(1)), Some(t(2)), None]);
        assert_eq!(
            p.commands,
            vec![
                SetAddr {
                    slot: 0,
                    target: t(1)
                },
                Ready { slot: 0 },
                SetAddr {
                    slot: 1,
                    target: t(2)
                },
                Ready { slot: 1 },
            ]
        );
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn unchanged_sets_need_no_commands() {
        let current = vec![None, Some(t(2)), Some(t(1))];
        let p = plan(&current, &[t(1), t(2)]);
        assert_eq!(p.slots, current);
        assert!(p.commands.is_empty());
    }

    #[test]
    fn staying_endpoints_keep_their_slots_and_leaving_ones_go_to_maint() {
        let current = vec![Some(t(1)), Some(t(2)), Some(t(3)), None];
        let p = plan(&current, &[t(3), t(1)]);
        assert_eq!(p.slots, vec![Some(t(1)), None, Some(t(3)), None]);
        assert_eq!(p.commands, vec![Maint { slot: 1 }]);
    }

    #[test]
    fn added_endpoints_fill_free_slots_before_leaving_ones_are_removed() {
        let current = vec![Some(t(1)), None, Some(t(2))];
        let p = plan(&current, &[t(2), t(3)]);
        assert_eq!(p.slots, vec![None, Some(t(3)), Some(t(2))]);
        assert_eq!(
            p.commands,
            vec![
                SetAddr {
                    slot: 1,
                    target: t(3)
                },
                Ready { slot: 1 },
                Maint { slot: 0 },
            ]
        );
    }

    #[test]
    fn a_full_backend_reuses_a_freed_slot_after_putting_it_in_maint() {
        let current = vec![Some(t(1)), Some(t(2))];
        let p = plan(&current, &[t(2), t(3)]);
        assert_eq!(p.slots, vec![Some(t(3)), Some(t(2))]);
        assert_eq!(
            p.commands,
            vec![
                Maint { slot: 0 },
                SetAddr {
                    slot: 0,
                    target: t(3)
                },
                Ready { slot: 0 },
            ]
        );
    }

    #[test]
    fn too_many_endpoints_are_reported_unplaced() {
        let p = plan(&[Some(t(1)), None], &[t(1), t(2), t(3), t(4)]);
        assert_eq!(p.slots, vec![Some(t(1)), Some(t(2))]);
        assert_eq!(p.unplaced, vec![t(3), t(4)]);
        // With more slots everything fits, and the kept one stays put.
        let mut bigger = p.slots.clone();
        bigger.resize(grown(2, 4, MAX), None);
        let p = plan(&bigger, &[t(1), t(2), t(3), t(4)]);
        assert!(p.unplaced.is_empty());
        assert_eq!(
            p.slots,
            vec![Some(t(1)), Some(t(2)), Some(t(3)), Some(t(4))]
        );
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
        let p = plan(&[Some(t(1)), None, Some(t(2))], &[]);
        assert_eq!(p.slots, vec![None, None, None]);
        assert_eq!(p.commands, vec![Maint { slot: 0 }, Maint { slot: 2 }]);
    }

    #[test]
    fn a_target_held_twice_keeps_one_slot() {
        let p = plan(&[Some(t(1)), Some(t(1))], &[t(1)]);
        assert_eq!(p.slots, vec![Some(t(1)), None]);
        assert_eq!(p.commands, vec![Maint { slot: 1 }]);
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
            resync(&[Some(t(7)), None]),
            vec![
                SetAddr {
                    slot: 0,
                    target: t(7)
                },
                Ready { slot: 0 },
                Maint { slot: 1 }
            ]
        );
    }

    fn endpoint(address: &str, port: u32, container: &str, container_port: u32) -> Endpoint {
        Endpoint {
            draining: false,
            load_balancers: Vec::new(),
            weight: 100,
            address: address.into(),
            port,
            protocol: Protocol::Tcp,
            container_name: container.into(),
            container_port,
            task_id: "t".into(),
            instance_id: "i".into(),
        }
    }

    #[test]
    fn targets_are_this_containers_port_only_and_bad_ones_are_reported() {
        let lb = LoadBalancer {
            name: "web".into(),
            bind: "127.0.0.1:80".parse().unwrap(),
            cluster: "default".into(),
            service: "web".into(),
            container_name: "web".into(),
            container_port: 8080,
            mode: crate::config::Mode::Tcp,
            slots: 4,
        };
        let mut udp = endpoint("10.0.0.1", 49160, "web", 8080);
        udp.protocol = Protocol::Udp;
        let (targets, bad) = targets(
            &lb,
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
        assert_eq!(
            targets,
            vec![t_at("10.0.0.1", 49153), t_at("10.0.0.1", 49154)]
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    fn t_at(ip: &str, port: u16) -> Target {
        SocketAddr::new(ip.parse().unwrap(), port)
    }
}
