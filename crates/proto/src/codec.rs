//! The gRPC codec every Berth service and client is generated with:
//! tonic's prost codec with smaller starting buffers.
//!
//! tonic gives each call an encode and a decode buffer of 8 KiB up front.
//! An agent session is one call that lasts as long as the agent is
//! connected, so with 10,000 agents the leader held 160 MiB in those
//! buffers alone, most of it never used: a heartbeat is a few bytes. The
//! buffers grow as a message needs (and large messages are no slower to
//! encode into a grown buffer), so a small start only costs a few
//! reallocations for the rare large message.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, ProstCodec};

/// Initial size of each call's encode and decode buffer.
pub const BUFFER_BYTES: usize = 1024;
/// How much an encoder fills before it hands a chunk to the transport:
/// tonic's default, kept so that large replies stream as before.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// Prost encoding with [`BUFFER_BYTES`] starting buffers (see the module
/// docs); named by `build.rs` as the codec of the generated code.
#[derive(Debug, Clone)]
pub struct BerthCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for BerthCodec<T, U> {
    fn default() -> Self {
        Self {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for BerthCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use tonic::codec::{Decoder, Encoder};

    #[test]
    fn calls_start_with_the_small_buffers() {
        // The generated code takes its buffers from these settings; every
        // gRPC test of the workspace goes through this codec, large
        // messages (Raft payloads, long task lists) included.
        let mut codec = BerthCodec::<pb::RaftPayload, pb::RaftPayload>::default();
        let expected = format!("{:?}", settings());
        assert!(expected.contains(&BUFFER_BYTES.to_string()), "{expected}");
        assert_eq!(format!("{:?}", codec.encoder().buffer_settings()), expected);
        assert_eq!(format!("{:?}", codec.decoder().buffer_settings()), expected);
    }
}
