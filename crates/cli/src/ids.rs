//! Ids as people handle them: short in tables, and any unique prefix
//! accepted where a command takes one.

/// The kinds of generated id the CLI shows, with the shape the servers
/// give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 32 hex digits.
    Task,
    /// `i-` and 16 hex digits.
    Instance,
    /// `ecs-svc/` and 19 digits, as ECS prints them.
    Deployment,
}

impl Kind {
    /// What every id of the kind starts with.
    fn fixed(self) -> &'static str {
        match self {
            Kind::Task => "",
            Kind::Instance => "i-",
            Kind::Deployment => "ecs-svc/",
        }
    }

    /// How many characters follow the fixed part, and which.
    fn body(self) -> (usize, fn(char) -> bool) {
        match self {
            Kind::Task => (32, is_lower_hex),
            Kind::Instance => (16, is_lower_hex),
            Kind::Deployment => (19, |c| c.is_ascii_digit()),
        }
    }

    /// How much of the body a short id keeps: as much as `docker ps` for
    /// tasks, which are many; less for instances and a service's
    /// deployments, of which there are few, so collisions stay unlikely.
    fn short_body(self) -> usize {
        match self {
            Kind::Task => 12,
            Kind::Instance | Kind::Deployment => 8,
        }
    }

    /// Whether `id` has the exact shape the servers generate.
    pub fn is_full(self, id: &str) -> bool {
        let (len, allowed) = self.body();
        id.strip_prefix(self.fixed())
            .is_some_and(|body| body.len() == len && body.chars().all(allowed))
    }
}

fn is_lower_hex(c: char) -> bool {
    c.is_ascii_digit() || ('a'..='f').contains(&c)
}

/// `id` cut to its short form. Ids of any other shape (made by hand, or by
/// an older server) are left whole: cutting them could make two look alike.
pub fn short(kind: Kind, id: &str) -> String {
    if !kind.is_full(id) {
        return id.to_string();
    }
    id.chars()
        .take(kind.fixed().len() + kind.short_body())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "3f2a0c9e1b7d4e2f8a6b5c4d3e2f1a0b";
    const INSTANCE: &str = "i-0123456789abcdef";
    const DEPLOYMENT: &str = "ecs-svc/0123456789012345678";

    #[test]
    fn full_ids_have_the_generated_shape() {
        assert!(Kind::Task.is_full(TASK));
        assert!(!Kind::Task.is_full(&TASK[..31]));
        assert!(!Kind::Task.is_full(&TASK.to_uppercase()));
        assert!(!Kind::Task.is_full("t-1"));
        assert!(Kind::Instance.is_full(INSTANCE));
        assert!(!Kind::Instance.is_full(&INSTANCE[2..]));
        assert!(!Kind::Instance.is_full("i-1"));
        assert!(Kind::Deployment.is_full(DEPLOYMENT));
        assert!(!Kind::Deployment.is_full("ecs-svc/1"));
    }

    #[test]
    fn short_ids_keep_the_fixed_part_and_the_start_of_the_rest() {
        assert_eq!(short(Kind::Task, TASK), "3f2a0c9e1b7d");
        assert_eq!(short(Kind::Instance, INSTANCE), "i-01234567");
        assert_eq!(short(Kind::Deployment, DEPLOYMENT), "ecs-svc/01234567");
        for odd in [
            "t-1",
            "i-1",
            "ecs-svc/1",
            "",
            "3F2A0C9E1B7D4E2F8A6B5C4D3E2F1A0B",
        ] {
            assert_eq!(short(Kind::Task, odd), odd);
            assert_eq!(short(Kind::Instance, odd), odd);
        }
    }
}
