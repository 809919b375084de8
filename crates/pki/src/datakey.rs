//! The cluster data key ring: `data.key` in every server's PKI directory
//! (hex, one key of 32 random bytes a line, 0600), beside the CA. Secret
//! values are sealed (AES-256-GCM) by the server that receives them, before
//! they are proposed, so the Raft log and snapshots only hold ciphertext.
//! The secret's name is authenticated as associated data: a ciphertext
//! copied onto another secret's record does not open.
//!
//! The first line is the *primary* key: the only one that seals. Further
//! lines are keys that only open: an older key while secrets sealed with it
//! remain, or a newer one that other servers may already seal with. Opening
//! tries the primary first, then the others in order; GCM authenticates, so
//! a wrong key fails cleanly and the next is tried. A file of one line (all
//! that builds before rotation wrote) is a ring of one key.
//!
//! Rotation, as Kubernetes rotates its encryption configuration (every step
//! followed by a restart of each server, one at a time, with the new file):
//! [`add`] a key that only opens, [`promote`] it to primary, re-seal every
//! secret (`berth secret rekey`), [`retire`] the old keys. No server ever
//! meets a value it cannot open: a key seals only once every server opens
//! with it, and a key goes only once nothing is sealed with it.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{files, PkiError};

/// The data key ring's file in a PKI directory.
pub const DATA_KEY: &str = "data.key";

/// AES-GCM's standard nonce length.
pub const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DataKeyError {
    #[error("{DATA_KEY} line {line} must hold 64 hex digits (32 bytes)")]
    BadKey { line: usize },
    #[error("{DATA_KEY} holds no key")]
    Empty,
    /// No key of the ring opens it: wrong keys, another secret's
    /// ciphertext, or tampering. GCM cannot tell which, and saying more
    /// would not help an attacker anyway.
    #[error("the secret does not open with any key of this server's {DATA_KEY} (a different {DATA_KEY} than the server that stored it, or its key was retired before `berth secret rekey`?)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// A sealed value: what the state machine stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// A value opened, and whether the primary key opened it (a value another
/// key opened is what `berth secret rekey` re-seals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub value: Vec<u8>,
    pub by_primary: bool,
}

type Key = [u8; 32];

/// The ring: the primary key, then the keys that only open. Never empty.
#[derive(Clone)]
pub struct DataKey {
    keys: Vec<Key>,
}

// Never print a key, even in debug output.
impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataKey({} keys, primary {})",
            self.len(),
            self.primary_id()
        )
    }
}

fn random_key() -> Key {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// A key's public name: 8 hex digits of a hash, enough to compare two
/// servers' files without showing either key.
fn key_id(key: &Key) -> String {
    let digest = Sha256::new()
        .chain_update(b"berth data key id\0")
        .chain_update(key)
        .finalize();
    hex::encode(&digest[..4])
}

fn cipher(key: &Key) -> Aes256Gcm {
    Aes256Gcm::new(&(*key).into())
}

impl DataKey {
    /// A ring of one new key.
    pub fn generate() -> Self {
        Self {
            keys: vec![random_key()],
        }
    }

    /// The file's text: one key a line, the primary first.
    pub fn encode(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{}\n", hex::encode(k)))
            .collect()
    }

    /// Reads a ring: one key a line, the primary first; blank lines and
    /// lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, DataKeyError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = DataKeyError::BadKey { line: index + 1 };
            let bytes = hex::decode(line).map_err(|_| bad.clone())?;
            keys.push(Key::try_from(bytes).map_err(|_| bad)?);
        }
        if keys.is_empty() {
            return Err(DataKeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// How many keys the ring holds (at least 1).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never: a ring holds at least its primary key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The primary key's id (see [`DataKey::ids`]).
    pub fn primary_id(&self) -> String {
        self.keys.first().map(key_id).unwrap_or_default()
    }

    /// Every key's id, the primary first: 8 hex digits of a hash of the
    /// key, to compare servers' rings without showing a key.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(key_id).collect()
    }

    /// Seals `value` for the secret `name` with the primary key, under a
    /// fresh random nonce (random 96-bit nonces are safe far beyond any
    /// secret count here).
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Sealed, DataKeyError> {
        let key = self.keys.first().ok_or(DataKeyError::Empty)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher(key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| DataKeyError::Seal)?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens a sealed value with whichever key of the ring sealed it.
    pub fn open(
        &self,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, DataKeyError> {
        self.open_which(name, nonce, ciphertext).map(|o| o.value)
    }

    /// Opens a sealed value, trying the primary key first, and says
    /// whether the primary opened it.
    pub fn open_which(
        &self,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Opened, DataKeyError> {
        if nonce.len() != NONCE_LEN {
            return Err(DataKeyError::Open);
        }
        for (index, key) in self.keys.iter().enumerate() {
            let opened = cipher(key).decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            );
            if let Ok(value) = opened {
                return Ok(Opened {
                    value,
                    by_primary: index == 0,
                });
            }
        }
        Err(DataKeyError::Open)
    }
}

/// What a rotation step on a `data.key` file can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DataKeyFileError {
    #[error(transparent)]
    File(#[from] PkiError),
    #[error("{path}: {source}")]
    Key { path: String, source: DataKeyError },
    #[error("{0}")]
    Refused(String),
}

/// Reads the ring in `dir`, refusing a file others can read.
pub fn load(dir: &Path) -> Result<DataKey, DataKeyFileError> {
    files::check_private(dir, DATA_KEY)?;
    let text = files::read(dir, DATA_KEY)?;
    DataKey::parse(&text).map_err(|source| DataKeyFileError::Key {
        path: dir.join(DATA_KEY).display().to_string(),
        source,
    })
}

/// Writes the ring to `dir` atomically, mode 0600.
pub fn store(dir: &Path, ring: &DataKey) -> Result<(), DataKeyFileError> {
    files::write(dir, DATA_KEY, &ring.encode(), true)?;
    Ok(())
}

/// Rotation step 1: appends a new key that only opens. Returns the ring
/// written.
pub fn add(dir: &Path) -> Result<DataKey, DataKeyFileError> {
    let mut ring = load(dir)?;
    ring.keys.push(random_key());
    store(dir, &ring)?;
    Ok(ring)
}

/// Rotation step 2: the newest key (the last line) becomes the primary;
/// the previous primary and any other key stay, opening only.
pub fn promote(dir: &Path) -> Result<DataKey, DataKeyFileError> {
    let mut ring = load(dir)?;
    let Some(newest) = ring.keys.pop() else {
        return Err(DataKeyFileError::Refused(format!(
            "{DATA_KEY} holds no key"
        )));
    };
    if ring.keys.is_empty() {
        return Err(DataKeyFileError::Refused(format!(
            "{} holds one key, already the primary: nothing to promote (run `berthd pki data-key add` first)",
            dir.join(DATA_KEY).display()
        )));
    }
    ring.keys.insert(0, newest);
    store(dir, &ring)?;
    Ok(ring)
}

/// Rotation step 4: drops every key but the primary. Returns the ring
/// written and how many keys were dropped (0 leaves the file as it was).
pub fn retire(dir: &Path) -> Result<(DataKey, usize), DataKeyFileError> {
    let mut ring = load(dir)?;
    let dropped = ring.keys.len().saturating_sub(1);
    if dropped > 0 {
        ring.keys.truncate(1);
        store(dir, &ring)?;
    }
    Ok((ring, dropped))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn seal_open_round_trip_and_name_is_authenticated() {
        let key = DataKey::generate();
        let sealed = key.seal("db-password", b"hunter2").unwrap();
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open("db-password", &sealed.nonce, &sealed.ciphertext)
                .unwrap(),
            b"hunter2"
        );
        assert_eq!(
            key.open("other", &sealed.nonce, &sealed.ciphertext),
            Err(DataKeyError::Open),
            "a ciphertext moved to another name does not open"
        );
        assert_eq!(
            DataKey::generate().open("db-password", &sealed.nonce, &sealed.ciphertext),
            Err(DataKeyError::Open)
        );
        let mut tampered = sealed.ciphertext.clone();
        tampered[0] ^= 1;
        assert!(key.open("db-password", &sealed.nonce, &tampered).is_err());
        assert_ne!(
            key.seal("db-password", b"hunter2").unwrap().nonce,
            sealed.nonce
        );
    }

    #[test]
    fn encode_parse_and_bad_files() {
        let key = DataKey::generate();
        let again = DataKey::parse(&key.encode()).unwrap();
        let sealed = key.seal("n", b"v").unwrap();
        assert_eq!(
            again.open("n", &sealed.nonce, &sealed.ciphertext).unwrap(),
            b"v"
        );
        assert_eq!(
            DataKey::parse("abcd").err(),
            Some(DataKeyError::BadKey { line: 1 })
        );
        assert_eq!(
            DataKey::parse("zz").err(),
            Some(DataKeyError::BadKey { line: 1 })
        );
        assert_eq!(DataKey::parse("").err(), Some(DataKeyError::Empty));
        assert_eq!(
            DataKey::parse("\n# none\n").err(),
            Some(DataKeyError::Empty)
        );
        let debug = format!("{key:?}");
        assert!(debug.starts_with("DataKey(1 keys, primary "), "{debug}");
        assert!(!debug.contains(&key.encode().trim()[..8]), "{debug}");
    }

    /// The one-line file every build before rotation wrote is a ring of
    /// one key: same text back, same key.
    #[test]
    fn a_one_line_file_is_a_ring_of_one() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let ring = DataKey::parse(&format!("{hex_key}\n")).unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.encode(), format!("{hex_key}\n"));
        // No trailing newline, surrounding spaces: still one key.
        assert_eq!(DataKey::parse(&format!("  {hex_key}  ")).unwrap().len(), 1);
    }

    #[test]
    fn multi_line_ring_seals_with_the_primary_and_opens_with_any() {
        let old = DataKey::generate();
        let new = DataKey::generate();
        // The ring after `add`: old primary, new open-only.
        let added =
            DataKey::parse(&format!("{}\n# comment\n{}", old.encode(), new.encode())).unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!(added.ids(), [old.primary_id(), new.primary_id()]);
        assert_eq!(added.encode(), old.encode() + &new.encode());
        // Seals with the primary only: the old key alone opens it.
        let sealed = added.seal("s", b"value").unwrap();
        assert_eq!(
            old.open("s", &sealed.nonce, &sealed.ciphertext).unwrap(),
            b"value"
        );
        assert_eq!(
            new.open("s", &sealed.nonce, &sealed.ciphertext),
            Err(DataKeyError::Open)
        );
        // Opens what either key sealed, and says which.
        let by_new = new.seal("s", b"newer").unwrap();
        assert_eq!(
            added.open_which("s", &by_new.nonce, &by_new.ciphertext),
            Ok(Opened {
                value: b"newer".to_vec(),
                by_primary: false
            })
        );
        assert_eq!(
            added.open_which("s", &sealed.nonce, &sealed.ciphertext),
            Ok(Opened {
                value: b"value".to_vec(),
                by_primary: true
            })
        );
        // A key not in the ring, or the wrong name, still fails cleanly.
        let stranger = DataKey::generate().seal("s", b"x").unwrap();
        assert_eq!(
            added.open("s", &stranger.nonce, &stranger.ciphertext),
            Err(DataKeyError::Open)
        );
        assert_eq!(
            added.open("t", &by_new.nonce, &by_new.ciphertext),
            Err(DataKeyError::Open)
        );
        let bad_second = format!("{}nothex\n", old.encode());
        assert_eq!(
            DataKey::parse(&bad_second).err(),
            Some(DataKeyError::BadKey { line: 2 })
        );
    }

    fn mode(dir: &Path) -> u32 {
        std::fs::metadata(dir.join(DATA_KEY))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    /// add, promote and retire on a CA dir's file: each keeps 0600, and a
    /// value sealed at any step opens at every later step until its key
    /// is retired.
    #[test]
    fn add_promote_retire_rotate_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let first = DataKey::generate();
        store(dir, &first).unwrap();
        assert_eq!(mode(dir), 0o600);
        let sealed_first = first.seal("s", b"one").unwrap();

        // Nothing to promote, nothing to retire, in a ring of one.
        assert!(matches!(promote(dir), Err(DataKeyFileError::Refused(_))));
        let (ring, dropped) = retire(dir).unwrap();
        assert_eq!((ring.ids(), dropped), (first.ids(), 0));

        // add: the old primary still seals; the new key only opens.
        let added = add(dir).unwrap();
        assert_eq!(mode(dir), 0o600);
        assert_eq!(added.len(), 2);
        assert_eq!(added.primary_id(), first.primary_id());
        let on_disk = load(dir).unwrap();
        assert_eq!(on_disk.ids(), added.ids());
        let new_id = added.ids()[1].clone();
        let sealed_added = on_disk.seal("s", b"two").unwrap();
        assert_eq!(
            first
                .open("s", &sealed_added.nonce, &sealed_added.ciphertext)
                .unwrap(),
            b"two",
            "after add, servers still on the one-key file open what is sealed"
        );

        // promote: the newest key seals, the old one still opens.
        let promoted = promote(dir).unwrap();
        assert_eq!(mode(dir), 0o600);
        assert_eq!(promoted.ids(), [new_id.clone(), first.primary_id()]);
        let sealed_promoted = promoted.seal("s", b"three").unwrap();
        assert_eq!(
            added
                .open("s", &sealed_promoted.nonce, &sealed_promoted.ciphertext)
                .unwrap(),
            b"three",
            "servers still on the added ring open what a promoted server seals"
        );
        for (sealed, value) in [(&sealed_first, &b"one"[..]), (&sealed_added, &b"two"[..])] {
            let opened = promoted
                .open_which("s", &sealed.nonce, &sealed.ciphertext)
                .unwrap();
            assert_eq!((opened.value.as_slice(), opened.by_primary), (value, false));
        }

        // retire: only the primary stays; the old key's values no longer open.
        let (retired, dropped) = retire(dir).unwrap();
        assert_eq!(mode(dir), 0o600);
        assert_eq!((retired.ids(), dropped), (vec![new_id], 1));
        assert_eq!(load(dir).unwrap().ids(), retired.ids());
        assert_eq!(
            retired
                .open("s", &sealed_promoted.nonce, &sealed_promoted.ciphertext)
                .unwrap(),
            b"three"
        );
        assert_eq!(
            retired.open("s", &sealed_first.nonce, &sealed_first.ciphertext),
            Err(DataKeyError::Open)
        );
        assert_eq!(retired.encode().lines().count(), 1);
    }

    #[test]
    fn rotation_refuses_a_file_others_can_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        store(dir, &DataKey::generate()).unwrap();
        std::fs::set_permissions(dir.join(DATA_KEY), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = add(dir).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert_eq!(
            DataKey::parse(&std::fs::read_to_string(dir.join(DATA_KEY)).unwrap())
                .unwrap()
                .len(),
            1,
            "the file is left as it was"
        );
    }
}
