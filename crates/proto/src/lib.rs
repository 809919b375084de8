//! Berth's gRPC API, generated from `proto/berth/v1`, plus conversions
//! between the wire messages and the domain types in `berth-types`, and the
//! TLS settings every caller of the API uses.

pub mod codec;
pub mod convert;
pub mod tls;

pub mod v1 {
    #![allow(clippy::all, clippy::unwrap_used)]
    tonic::include_proto!("berth.v1");

    /// The encoded `FileDescriptorSet` of every file in `proto/berth/v1`,
    /// which berthd's gRPC server reflection serves.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("berth_descriptor");
}

pub use v1 as pb;
