//! Trust bundles: the root certificates a peer accepts, and how an agent
//! follows a CA rotation without a restart.
//!
//! During a rotation servers hand out different bundles for a while: one
//! not yet reloaded says `[old]`, a reloaded one `[new, old]`, and once the
//! rotation is finished `[new]`. An agent asks whichever server answers, so
//! it must move forward only: a bundle supersedes another when its newest
//! root is newer, or when it has the same newest root and fewer roots (the
//! old one dropped). It never goes back to a bundle it has moved past.

use x509_parser::prelude::X509Certificate;

use crate::{split_pem, PkiError};

/// One root of a bundle, as far as ordering and path matching need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The DER of the subject name: what certificates it issued name as
    /// their issuer.
    pub subject: Vec<u8>,
    pub not_before_s: i64,
    /// SHA-256 of the DER, hex (what join tokens pin).
    pub digest: String,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))
}

fn ders(pem: &str) -> Result<Vec<Vec<u8>>, PkiError> {
    split_pem(pem)
        .iter()
        .map(|block| crate::first_der(block))
        .collect()
}

/// The roots of a bundle, in its order. An empty bundle is an error: it
/// would trust nothing.
pub fn roots(bundle_pem: &str) -> Result<Vec<Root>, PkiError> {
    let roots = ders(bundle_pem)?
        .iter()
        .map(|der| {
            let cert = parse(der)?;
            Ok(Root {
                subject: cert.subject().as_raw().to_vec(),
                not_before_s: cert.validity().not_before.timestamp(),
                digest: crate::der_digest(der),
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    if roots.is_empty() {
        return Err(PkiError::BadCertificate(
            "the trust bundle holds no certificate".into(),
        ));
    }
    Ok(roots)
}

/// The newest root of a bundle (the latest not-before): the one a
/// finished rotation keeps.
pub fn newest(roots: &[Root]) -> Option<&Root> {
    roots.iter().max_by_key(|root| root.not_before_s)
}

/// Whether an agent holding `current` should take `offered`: see the
/// module documentation. A bundle that does not parse never supersedes.
pub fn supersedes(offered_pem: &str, current_pem: &str) -> bool {
    let (Ok(offered), Ok(current)) = (roots(offered_pem), roots(current_pem)) else {
        return false;
    };
    let rank = |roots: &[Root]| {
        let newest = newest(roots).map_or(i64::MIN, |root| root.not_before_s);
        (newest, std::cmp::Reverse(roots.len()))
    };
    rank(&offered) > rank(&current)
}

/// Which root of the bundle a certificate chain (leaf first, then its
/// intermediates) leads to, by issuer name: the first certificate of the
/// chain issued by one of the roots decides. `None` when none is.
pub fn chain_root<'a>(chain_pem: &str, roots: &'a [Root]) -> Option<&'a Root> {
    let chain = ders(chain_pem).ok()?;
    chain.iter().find_map(|der| {
        let cert = parse(der).ok()?;
        let issuer = cert.issuer().as_raw();
        roots.iter().find(|root| root.subject == issuer)
    })
}

/// Whether a chain leads to the bundle's newest root: what an agent's
/// certificate must do before the old root is dropped.
pub fn chain_is_current(chain_pem: &str, bundle_pem: &str) -> bool {
    let Ok(roots) = roots(bundle_pem) else {
        return false;
    };
    match (chain_root(chain_pem, &roots), newest(&roots)) {
        (Some(root), Some(newest)) => root == newest,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertificateAuthority;
    use std::time::Duration;

    fn agent_chain(ca: &CertificateAuthority) -> String {
        let signing = ca.issue_signing_ca(1, Duration::from_secs(600)).unwrap();
        let signing =
            CertificateAuthority::load_signing(&signing.cert_pem, &signing.key_pem).unwrap();
        let (_, csr) = crate::generate_csr("agent").unwrap();
        signing
            .sign_instance_csr(&csr, "i-1", Duration::from_secs(600))
            .unwrap()
    }

    #[test]
    fn a_rotation_started_within_the_same_second_is_still_taken() {
        let old = CertificateAuthority::generate("tie").unwrap();
        let (new, _) = old.successor().unwrap();
        let (old_root, new_root) = (
            &roots(&old.cert_pem).unwrap()[0],
            &roots(&new.cert_pem).unwrap()[0],
        );
        assert!(new_root.not_before_s > old_root.not_before_s);
        let during = format!("{}{}", new.cert_pem, old.cert_pem);
        assert!(
            supersedes(&during, &old.cert_pem),
            "the new bundle is taken"
        );
        assert!(
            !supersedes(&old.cert_pem, &during),
            "and never left for the old one"
        );
        assert_eq!(newest(&roots(&during).unwrap()), Some(new_root));
    }

    #[test]
    fn agents_move_forward_through_a_rotation_and_never_back() {
        let old = CertificateAuthority::generate("rot").unwrap();
        // Not-before has a one-second resolution.
        std::thread::sleep(Duration::from_millis(1100));
        let (new, _) = old.successor().unwrap();
        let before = old.cert_pem.clone();
        let during = format!("{}{}", new.cert_pem, old.cert_pem);
        let after = new.cert_pem.clone();

        assert!(supersedes(&during, &before), "a newer root is taken");
        assert!(
            supersedes(&after, &during),
            "dropping the old root is taken"
        );
        assert!(supersedes(&after, &before), "both steps at once");
        assert!(!supersedes(&before, &during), "never back to the old root");
        assert!(!supersedes(&during, &after), "never the old root again");
        assert!(!supersedes(&before, &after));
        assert!(
            !supersedes(&during, &during),
            "the same bundle changes nothing"
        );
        assert!(!supersedes("garbage", &before));
        assert!(!supersedes(&during, "garbage"), "nothing to compare with");
    }

    #[test]
    fn a_chain_is_matched_to_the_root_that_issued_it() {
        let old = CertificateAuthority::generate("rot").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let (new, cross) = old.successor().unwrap();
        assert_ne!(
            roots(&old.cert_pem).unwrap()[0].subject,
            roots(&new.cert_pem).unwrap()[0].subject,
            "the roots have names of their own"
        );
        let during = format!("{}{}", new.cert_pem, old.cert_pem);

        let under_old = agent_chain(&old);
        assert!(!chain_is_current(&under_old, &during));
        assert!(chain_is_current(&under_old, &old.cert_pem));

        // A chain from the new root carries the cross-signed certificate
        // after it, issued by the old root: the signing CA's issuer, which
        // comes first, decides.
        let under_new = format!("{}{cross}", agent_chain(&new));
        assert!(chain_is_current(&under_new, &during));
        assert!(chain_is_current(&under_new, &new.cert_pem));
        assert!(!chain_is_current(&under_new, "not a bundle"));
        let other = CertificateAuthority::generate("other").unwrap();
        assert!(!chain_is_current(&under_new, &other.cert_pem));
    }

    #[test]
    fn the_cross_signed_root_is_the_new_key_under_the_old_name_as_issuer() {
        let old = CertificateAuthority::generate("rot").unwrap();
        let (new, cross) = old.successor().unwrap();
        let cross_der = crate::first_der(&cross).unwrap();
        let new_der = crate::first_der(&new.cert_pem).unwrap();
        let old_der = crate::first_der(&old.cert_pem).unwrap();
        let (cross, new, old) = (
            parse(&cross_der).unwrap(),
            parse(&new_der).unwrap(),
            parse(&old_der).unwrap(),
        );
        assert_eq!(cross.subject().as_raw(), new.subject().as_raw());
        assert_eq!(cross.public_key().raw, new.public_key().raw);
        assert_eq!(cross.issuer().as_raw(), old.subject().as_raw());
        assert!(cross
            .verify_signature(Some(old.public_key()))
            .is_ok_and(|()| true));
    }
}
