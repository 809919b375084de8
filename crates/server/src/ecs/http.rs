//! The ECS endpoint's HTTP side: TLS (or plain HTTP on loopback), SigV4,
//! roles and audit, in front of [`super::EcsApi`].
