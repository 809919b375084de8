//! Secrets in the state machine: sealed values and their metadata. The
//! machine never sees a value in the clear (the proposer sealed it).

use super::State;
use crate::command::CommandOutput;
use crate::error::{FieldError, StateError};
use crate::secrets::{check_secret_name, ResealedSecret, Secret, MAX_SECRET_VALUE_LEN};

/// GCM's tag is 16 bytes on top of the value.
const MAX_CIPHERTEXT_LEN: usize = MAX_SECRET_VALUE_LEN + 16;

impl State {
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }

    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.secrets.values()
    }

    /// Creates (`create`) or replaces a secret's sealed value.
    pub(super) fn put_secret(
        &mut self,
        sealed: Secret,
        create: bool,
        at_ms: i64,
    ) -> Result<CommandOutput, StateError> {
        check_secret_name("name", &sealed.name)?;
        if sealed.ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(FieldError::new("value", "larger than 64 KiB").into());
        }
        if sealed.description.len() > crate::limits::MAX_DESCRIPTION_LEN {
            return Err(FieldError::new("description", "too long").into());
        }
        let name = sealed.name.clone();
        let stored = match (self.secrets.get(&name), create) {
            (Some(_), true) => return Err(StateError::already_exists("secret", name)),
            (None, false) => return Err(StateError::not_found("secret", name)),
            (None, true) => Secret {
                version: 1,
                created_at_ms: at_ms,
                updated_at_ms: at_ms,
                ..sealed
            },
            (Some(old), false) => Secret {
                version: old.version + 1,
                created_at_ms: old.created_at_ms,
                updated_at_ms: at_ms,
                ..sealed
            },
        };
        let metadata = stored.metadata();
        self.secrets.insert(name, stored);
        Ok(CommandOutput::Secret(metadata))
    }

    /// Replaces the sealed value of each secret still at the version it
    /// was read at; the rest are skipped. Version, description and times
    /// are kept: the value is the same, only the key sealing it changed.
    pub(super) fn reseal_secrets(
        &mut self,
        resealed: Vec<ResealedSecret>,
    ) -> Result<CommandOutput, StateError> {
        if let Some(big) = resealed
            .iter()
            .find(|r| r.ciphertext.len() > MAX_CIPHERTEXT_LEN)
        {
            return Err(FieldError::new(
                format!("secrets[{}].value", big.name),
                "larger than 64 KiB",
            )
            .into());
        }
        let (mut done, mut skipped) = (Vec::new(), Vec::new());
        for r in resealed {
            match self.secrets.get_mut(&r.name) {
                Some(stored) if stored.version == r.version => {
                    stored.nonce = r.nonce;
                    stored.ciphertext = r.ciphertext;
                    done.push(r.name);
                }
                _ => skipped.push(r.name),
            }
        }
        Ok(CommandOutput::Resealed {
            resealed: done,
            skipped,
        })
    }

    pub(super) fn delete_secret(&mut self, name: &str) -> Result<CommandOutput, StateError> {
        self.secrets
            .remove(name)
            .map(|s| CommandOutput::Secret(s.metadata()))
            .ok_or_else(|| StateError::not_found("secret", name))
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, CommandOutput};
    use crate::secrets::Secret;
    use crate::state::State;

    fn sealed(name: &str, bytes: u8) -> Secret {
        Secret {
            name: name.into(),
            description: "d".into(),
            nonce: vec![bytes; 12],
            ciphertext: vec![bytes; 20],
            version: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn create_update_delete() {
        let mut state = State::new();
        let put = |secret, create, at_ms| Command::PutSecret {
            secret,
            create,
            at_ms,
        };
        let out = state.apply(put(sealed("db", 1), true, 10)).unwrap();
        let CommandOutput::Secret(meta) = out else {
            panic!("{out:?}")
        };
        assert_eq!((meta.version, meta.created_at_ms), (1, 10));
        assert!(state.apply(put(sealed("db", 1), true, 11)).is_err());
        assert!(state.apply(put(sealed("nope", 1), false, 11)).is_err());
        state.apply(put(sealed("db", 2), false, 12)).unwrap();
        let stored = state.secret("db").unwrap();
        assert_eq!(
            (stored.version, stored.created_at_ms, stored.updated_at_ms),
            (2, 10, 12)
        );
        assert_eq!(stored.ciphertext, vec![2; 20]);
        assert!(state.apply(put(sealed("bad name", 1), true, 13)).is_err());
        state
            .apply(Command::DeleteSecret {
                name: "db".into(),
                at_ms: 14,
            })
            .unwrap();
        assert!(state.secret("db").is_none());
        assert!(state
            .apply(Command::DeleteSecret {
                name: "db".into(),
                at_ms: 15,
            })
            .is_err());
    }

    /// Re-sealing is a compare-and-set on each secret's version: a secret
    /// updated (or deleted) after it was read is skipped, not overwritten;
    /// one still at that version gets the new sealed bytes and keeps its
    /// version, times and description, and raises no secret event.
    #[test]
    fn reseal_replaces_only_secrets_still_at_their_version() {
        use crate::journal::Actor;
        use crate::secrets::ResealedSecret;
        let mut state = State::new();
        let actor = Actor::server(1);
        let steps = [
            Command::PutSecret {
                secret: sealed("a", 1),
                create: true,
                at_ms: 10,
            },
            Command::PutSecret {
                secret: sealed("b", 2),
                create: true,
                at_ms: 11,
            },
            Command::PutSecret {
                secret: sealed("c", 3),
                create: true,
                at_ms: 12,
            },
            // b is updated after the rekey read it at version 1.
            Command::PutSecret {
                secret: sealed("b", 4),
                create: false,
                at_ms: 13,
            },
            // c is deleted after the rekey read it.
            Command::DeleteSecret {
                name: "c".into(),
                at_ms: 14,
            },
        ];
        for (index, command) in (1..).zip(steps) {
            state.begin_entry(index, 100 + index as i64);
            state.apply_by(command, &actor).unwrap();
        }
        let events_before = state
            .journal()
            .events()
            .after(None, 100, |_| true)
            .unwrap()
            .len();
        let again = |name: &str, version, bytes: u8| ResealedSecret {
            name: name.into(),
            version,
            nonce: vec![bytes; 12],
            ciphertext: vec![bytes; 20],
        };
        state.begin_entry(6, 106);
        let out = state
            .apply_by(
                Command::ResealSecrets {
                    secrets: vec![again("a", 1, 9), again("b", 1, 9), again("c", 1, 9)],
                },
                &actor,
            )
            .unwrap();
        assert_eq!(
            out,
            CommandOutput::Resealed {
                resealed: vec!["a".into()],
                skipped: vec!["b".into(), "c".into()],
            }
        );
        let a = state.secret("a").unwrap();
        assert_eq!(
            (
                a.version,
                a.created_at_ms,
                a.updated_at_ms,
                a.description.as_str()
            ),
            (1, 10, 10, "d"),
            "the version and times are unchanged"
        );
        assert_eq!(
            (a.nonce.clone(), a.ciphertext.clone()),
            (vec![9; 12], vec![9; 20])
        );
        let b = state.secret("b").unwrap();
        assert_eq!(b.version, 2);
        assert_eq!(b.ciphertext, vec![4; 20], "the concurrent update is kept");
        assert!(
            state.secret("c").is_none(),
            "a deleted secret is not brought back"
        );
        assert_eq!(
            state
                .journal()
                .events()
                .after(None, 100, |_| true)
                .unwrap()
                .len(),
            events_before,
            "re-sealing raises no secret event"
        );
        let many = Command::ResealSecrets {
            secrets: (0..25).map(|n| again(&format!("s{n}"), 1, 1)).collect(),
        };
        let resource = many.resource();
        assert!(resource.starts_with("secret/s0 secret/s1 "), "{resource}");
        assert!(resource.ends_with("secret/s19 (+5 more)"), "{resource}");
        // A value over the limit is refused as a whole.
        let mut big = again("a", 1, 5);
        big.ciphertext = vec![5; super::MAX_CIPHERTEXT_LEN + 1];
        assert!(state
            .apply(Command::ResealSecrets { secrets: vec![big] })
            .is_err());
        assert_eq!(state.secret("a").unwrap().ciphertext, vec![9; 20]);
    }

    #[test]
    fn secret_changes_are_events_without_the_value() {
        use crate::journal::{Actor, Change, EventDetail};
        let mut state = State::new();
        let actor = Actor::server(1);
        let steps = [
            Command::PutSecret {
                secret: sealed("db", 7),
                create: true,
                at_ms: 10,
            },
            Command::PutSecret {
                secret: sealed("db", 8),
                create: false,
                at_ms: 11,
            },
            Command::DeleteSecret {
                name: "db".into(),
                at_ms: 12,
            },
        ];
        for (index, command) in (1..).zip(steps) {
            state.begin_entry(index, 100 + index as i64);
            state.apply_by(command, &actor).unwrap();
        }
        let events = state.journal().events().after(None, 10, |_| true).unwrap();
        let told: Vec<(String, u64, Change)> = events
            .iter()
            .map(|e| match &e.detail {
                EventDetail::SecretChange {
                    name,
                    version,
                    change,
                } => (e.resource() + "@" + name, *version, *change),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            told,
            [
                ("secret/db@db".to_string(), 1, Change::Created),
                ("secret/db@db".to_string(), 2, Change::Updated),
                ("secret/db@db".to_string(), 2, Change::Deleted),
            ]
        );
        // Nothing of the sealed value is in what the journal keeps.
        let journal = serde_json::to_string(state.journal()).unwrap();
        assert!(!journal.contains("[7,7,7"), "{journal}");
        assert!(!journal.contains("[8,8,8"), "{journal}");
    }
}
