//! Why a task could not be placed, phrased so that a person knows what to
//! change. The reason names the filter that removed the last candidates (the
//! binding constraint), and how many instances each filter removed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resources::HostPort;

/// How many instances of the cluster are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub active: u32,
    pub draining: u32,
    pub disconnected: u32,
    pub inactive: u32,
}

impl StatusCounts {
    pub(crate) fn from_array(counts: [u32; 4]) -> Self {
        Self {
            active: counts[0],
            draining: counts[1],
            disconnected: counts[2],
            inactive: counts[3],
        }
    }

    fn others(&self) -> Vec<String> {
        [
            (self.draining, "DRAINING"),
            (self.disconnected, "DISCONNECTED"),
            (self.inactive, "INACTIVE"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, s)| format!("{n} {s}"))
        .collect()
    }
}

/// `3 ACTIVE instances (2 satisfy the placement constraints), 1 DRAINING`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    pub statuses: StatusCounts,
    /// ACTIVE instances that pass the placement constraints, when the
    /// constraints excluded any.
    pub eligible: Option<u32>,
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let active = self.statuses.active;
        write!(
            f,
            "{active} ACTIVE {}",
            plural(active, "instance", "instances")
        )?;
        if let Some(eligible) = self.eligible {
            write!(
                f,
                " ({eligible} {} the placement constraints)",
                plural(eligible, "satisfies", "satisfy")
            )?;
        }
        for other in self.statuses.others() {
            write!(f, ", {other}")?;
        }
        Ok(())
    }
}

/// How many ACTIVE instances one constraint excluded (instances are charged
/// to the first constraint, in request order, that they fail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    pub constraint: String,
    pub instances: u32,
}

/// Why a task stays unplaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Unplaceable {
    #[error("no container instances are registered in the cluster")]
    NoInstances,
    #[error("no ACTIVE container instance to place on ({})", statuses.others().join(", "))]
    NoActiveInstance { statuses: StatusCounts },
    #[error("{}", constraints_message(.group, .excluded, *.checked))]
    Constraints {
        group: String,
        excluded: Vec<Exclusion>,
        checked: u32,
    },
    #[error("{}", resources_message(self))]
    Resources {
        cpu_needed: u64,
        memory_needed: u64,
        /// ACTIVE instances that passed the constraints; each lacks CPU,
        /// memory or both.
        candidates: u32,
        lacking_cpu: u32,
        lacking_memory: u32,
        /// The most any of them has free.
        most_free_cpu: u64,
        most_free_memory: u64,
        census: Census,
    },
    #[error("{}", ports_message(.ports, *.on_every, *.checked))]
    Ports {
        /// The requested ports that block every candidate, or, when no
        /// single port does, those taken on at least one candidate.
        ports: Vec<HostPort>,
        on_every: bool,
        checked: u32,
    },
}

fn plural<'a>(n: u32, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn constraints_message(group: &str, excluded: &[Exclusion], checked: u32) -> String {
    if let [only] = excluded {
        if only.constraint == "distinctInstance" {
            return format!(
                "every ACTIVE instance that matches the constraints already runs a task of group {group} (distinctInstance; {checked} checked)"
            );
        }
        return format!(
            "no ACTIVE instance matches {} ({checked} checked)",
            only.constraint
        );
    }
    let parts: Vec<String> = excluded
        .iter()
        .map(|e| format!("{} excluded {}", e.constraint, e.instances))
        .collect();
    format!(
        "no ACTIVE instance satisfies all placement constraints: {} ({checked} checked)",
        parts.join(", ")
    )
}

fn resources_message(reason: &Unplaceable) -> String {
    let Unplaceable::Resources {
        cpu_needed,
        memory_needed,
        candidates,
        lacking_cpu,
        lacking_memory,
        most_free_cpu,
        most_free_memory,
        census,
    } = reason
    else {
        return String::new();
    };
    // Every candidate lacks at least one resource; the binding one is the
    // resource that every candidate lacks, or both if neither is universal.
    let all_cpu = lacking_cpu >= candidates;
    let all_memory = lacking_memory >= candidates;
    match (all_cpu, all_memory) {
        (true, true) => format!(
            "no instance has {cpu_needed} CPU units and {memory_needed} MiB memory free (at most {most_free_cpu} CPU units and {most_free_memory} MiB free; {census})"
        ),
        (false, true) => format!(
            "no instance has {memory_needed} MiB free memory (at most {most_free_memory} MiB free; {census})"
        ),
        (true, false) => format!(
            "no instance has {cpu_needed} free CPU units (at most {most_free_cpu} free; {census})"
        ),
        (false, false) => format!(
            "no instance has both {cpu_needed} CPU units and {memory_needed} MiB memory free ({lacking_cpu} lack CPU, {lacking_memory} lack memory; {census})"
        ),
    }
}

fn ports_message(ports: &[HostPort], on_every: bool, checked: u32) -> String {
    let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
    match (list.as_slice(), on_every) {
        ([one], true) => format!(
            "host port {one} is in use on every ACTIVE instance that has room ({checked} checked)"
        ),
        (_, true) => format!(
            "host ports {} are in use on every ACTIVE instance that has room ({checked} checked)",
            list.join(", ")
        ),
        (_, false) => format!(
            "every ACTIVE instance that has room has one of host ports {} in use ({checked} checked)",
            list.join(", ")
        ),
    }
}

/// How many instances each filter ruled out for an unplaced task, in the
/// order the filters apply: not ACTIVE, each constraint (an instance counts
/// toward the first it fails), then memory, CPU (an instance short of both
/// counts toward both) and host ports among those with room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filtered {
    pub not_active: u32,
    pub constraints: Vec<Exclusion>,
    pub memory: u32,
    pub cpu: u32,
    pub ports: u32,
}

impl Filtered {
    pub fn is_empty(&self) -> bool {
        self.not_active == 0
            && self.constraints.iter().all(|c| c.instances == 0)
            && self.memory == 0
            && self.cpu == 0
            && self.ports == 0
    }
}

/// `instances filtered out: 1 not ACTIVE, 2 by memberOf(...), 3 lacking memory`
impl fmt::Display for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.not_active > 0 {
            parts.push(format!("{} not ACTIVE", self.not_active));
        }
        for c in self.constraints.iter().filter(|c| c.instances > 0) {
            parts.push(format!("{} by {}", c.instances, c.constraint));
        }
        if self.memory > 0 {
            parts.push(format!("{} lacking memory", self.memory));
        }
        if self.cpu > 0 {
            parts.push(format!("{} lacking CPU", self.cpu));
        }
        if self.ports > 0 {
            parts.push(format!("{} with a needed host port in use", self.ports));
        }
        write!(f, "instances filtered out: {}", parts.join(", "))
    }
}
