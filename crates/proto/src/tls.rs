//! TLS for calling a Berth server. Every caller (the typed client, agents,
//! servers calling each other, the benchmark, the end-to-end tests) trusts
//! only the cluster CA and, where it has one, presents a certificate that CA
//! issued; this is the one place that says so.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Trusts only `ca_pem` (the cluster CA) and, with `client_identity`
/// (certificate and key, PEM), authenticates with that certificate. Nothing
/// is parsed here: a client key that does not parse shows when an
/// endpoint takes the settings, a CA without certificates only in the
/// handshake (so callers that can check the CA first should).
pub fn client_tls(ca_pem: &str, client_identity: Option<(&str, &str)>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    match client_identity {
        Some((cert_pem, key_pem)) => tls.identity(Identity::from_pem(cert_pem, key_pem)),
        None => tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tonic::transport::Endpoint;

    #[test]
    fn an_endpoint_takes_the_ca_with_and_without_a_client_certificate() {
        let ca = berth_pki::CertificateAuthority::generate("tls-test").unwrap();
        let client = ca
            .issue_server(1, &["127.0.0.1".into()], Duration::from_secs(60))
            .unwrap();
        let endpoint = || Endpoint::from_static("https://127.0.0.1:7400");
        endpoint()
            .tls_config(client_tls(&ca.cert_pem, None))
            .expect("CA only");
        endpoint()
            .tls_config(client_tls(
                &ca.cert_pem,
                Some((&client.cert_pem, &client.key_pem)),
            ))
            .expect("CA and client certificate");
        assert!(
            endpoint()
                .tls_config(client_tls(
                    &ca.cert_pem,
                    Some((&client.cert_pem, "not a key"))
                ))
                .is_err(),
            "a client key that does not parse is refused when the endpoint is built"
        );
    }
}
