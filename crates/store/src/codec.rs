use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // bincode only fails to encode types it cannot represent (maps with
    // non-string keys are fine; `skip_serializing_if` is not). The types
    // stored here are covered by round-trip tests, so this cannot happen at
    // run time with data from outside.
    bincode::serialize(value).unwrap_or_else(|e| panic!("bincode cannot encode a stored type: {e}"))
}

pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(bytes).map_err(|source| StoreError::Corrupt {
        what: what.to_string(),
        source,
    })
}
