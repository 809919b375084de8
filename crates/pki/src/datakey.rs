//! The cluster data key: 32 random bytes every server holds in its PKI
//! directory (`data.key`, hex, 0600), beside the CA. Secret values are
//! sealed with it (AES-256-GCM) by the server that receives them, before
//! they are proposed, so the Raft log and snapshots only hold ciphertext.
//! The secret's name is authenticated as associated data: a ciphertext
//! copied onto another secret's record does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

/// The data key's file in a PKI directory.
pub const DATA_KEY: &str = "data.key";

/// AES-GCM's standard nonce length.
pub const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataKeyError {
    #[error("{DATA_KEY} must hold 64 hex digits (32 bytes)")]
    BadKey,
    /// Wrong key, another secret's ciphertext, or tampering: GCM cannot
    /// tell which, and saying more would not help an attacker anyway.
    #[error("the secret does not open with this server's data key (a different {DATA_KEY} than the server that stored it?)")]
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

#[derive(Clone)]
pub struct DataKey {
    key: [u8; 32],
}

// Never print the key, even in debug output.
impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self { key }
    }

    /// The file's text: hex and a newline.
    pub fn encode(&self) -> String {
        format!("{}\n", hex::encode(self.key))
    }

    pub fn parse(text: &str) -> Result<Self, DataKeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| DataKeyError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| DataKeyError::BadKey)?;
        Ok(Self { key })
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.key.into())
    }

    /// Seals `value` for the secret `name` under a fresh random nonce
    /// (random 96-bit nonces are safe far beyond any secret count here).
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Sealed, DataKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
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

    pub fn open(
        &self,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, DataKeyError> {
        if nonce.len() != NONCE_LEN {
            return Err(DataKeyError::Open);
        }
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| DataKeyError::Open)
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(DataKey::parse("abcd").err(), Some(DataKeyError::BadKey));
        assert_eq!(DataKey::parse("zz").err(), Some(DataKeyError::BadKey));
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }
}
