use std::time::{Duration, SystemTime};

use cambox_mesh::identity::Identity;

use super::*;
use crate::authority::{Authority, NodeClaims};
use crate::revocation::RevocationList;
use crate::token::JoinToken;

const DAY: Duration = Duration::from_secs(86_400);

fn now() -> SystemTime {
    crate::from_unix_secs(1_800_000_000)
}

fn root() -> Authority {
    Authority::create_root("Example GmbH cameras", 3650, now()).unwrap()
}

fn claims(node: u8) -> NodeClaims {
    NodeClaims {
        node: Identity::from_seed([node; 32]).node_id(),
        site: "berlin".into(),
        name: "hall".into(),
        days: 30,
    }
}

fn admission(ca: &Authority) -> Admission {
    Admission::new(ca.certificate().clone()).unwrap()
}

#[test]
fn a_node_certificate_from_the_root_admits_its_node_and_names_its_site_and_box() {
    let ca = root();
    let chain = ca.issue_node(&claims(7), now()).unwrap();
    let got = admission(&ca)
        .check(claims(7).node, &chain, now() + DAY)
        .unwrap();
    assert_eq!(
        (got.node, got.site.as_str(), got.name.as_str()),
        (claims(7).node, "berlin", "hall")
    );
    assert_eq!(admission(&ca).ca_name(), "Example GmbH cameras");
}

#[test]
fn an_enrolment_key_issues_chains_that_carry_its_own_certificate() {
    let ca = root();
    let enroller = ca.create_enroller("registry", 365, now()).unwrap();
    let chain = enroller.issue_node(&claims(7), now()).unwrap();
    assert_eq!(chain.len(), 2);
    assert!(admission(&ca).check(claims(7).node, &chain, now()).is_ok());
    let without = admission(&ca).check(claims(7).node, &chain[..1], now());
    assert!(
        matches!(without, Err(Refused::Untrusted { .. })),
        "{without:?}"
    );
    // An enrolment key makes neither another authority nor tokens nor revocations.
    assert!(enroller.create_enroller("x", 1, now()).is_err());
    assert!(JoinToken::issue(&enroller, "berlin", now() + DAY).is_err());
    assert!(RevocationList::default()
        .revoke(claims(7).node, &enroller, now())
        .is_err());
}

#[test]
fn another_cas_certificate_and_no_certificate_are_refused() {
    let ours = root();
    let theirs = root();
    let chain = theirs.issue_node(&claims(7), now()).unwrap();
    let got = admission(&ours).check(claims(7).node, &chain, now());
    assert!(matches!(got, Err(Refused::Untrusted { .. })), "{got:?}");
    let none = admission(&ours).check(claims(7).node, &[], now());
    assert!(
        matches!(none, Err(Refused::NoCertificate { .. })),
        "{none:?}"
    );
    assert_eq!(none.unwrap_err().label(), "no_certificate");
}

#[test]
fn a_certificate_with_an_altered_signature_or_subject_is_refused() {
    let ca = root();
    let chain = ca.issue_node(&claims(7), now()).unwrap();
    let mut forged = chain[0].to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let got = admission(&ca).check(claims(7).node, &[forged.into()], now());
    assert!(matches!(got, Err(Refused::Untrusted { .. })), "{got:?}");

    let mut renamed = chain[0].to_vec();
    let at = renamed
        .windows(6)
        .position(|w| w == b"berlin")
        .expect("the site is in the subject");
    renamed[at..at + 6].copy_from_slice(b"munich");
    let got = admission(&ca).check(claims(7).node, &[renamed.into()], now());
    assert!(matches!(got, Err(Refused::Untrusted { .. })), "{got:?}");
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let ca = root();
    let chain = ca.issue_node(&claims(7), now()).unwrap();
    let got = admission(&ca).check(claims(8).node, &chain, now());
    assert!(matches!(got, Err(Refused::WrongKey { .. })), "{got:?}");
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused() {
    let ca = root();
    let chain = ca.issue_node(&claims(7), now()).unwrap();
    let late = admission(&ca).check(claims(7).node, &chain, now() + DAY * 31);
    assert!(matches!(late, Err(Refused::Expired { .. })), "{late:?}");
    assert!(late.unwrap_err().to_string().contains("UTC"));
    let early = admission(&ca).check(claims(7).node, &chain, now() - DAY);
    assert_eq!(early, Err(Refused::NotYetValid));
}

#[test]
fn a_revoked_node_is_refused_once_the_list_is_adopted_and_only_newer_lists_are() {
    let ca = root();
    let chain = ca.issue_node(&claims(7), now()).unwrap();
    let mut rule = admission(&ca);
    let first = RevocationList::default()
        .revoke(claims(8).node, &ca, now())
        .unwrap();
    let second = first.revoke(claims(7).node, &ca, now()).unwrap();
    assert_eq!(rule.adopt(second.text()), Ok(true));
    let got = rule.check(claims(7).node, &chain, now());
    assert!(
        matches!(got, Err(Refused::Revoked { list: 2, .. })),
        "{got:?}"
    );
    assert_eq!(
        rule.adopt(first.text()),
        Ok(false),
        "an older list is not taken"
    );
    assert_eq!(rule.revocations().number, 2);

    let altered = second.text().replace("number 2", "number 9");
    assert!(rule.adopt(&altered).unwrap_err().contains("signature"));
    let other = RevocationList::default()
        .revoke(claims(7).node, &root(), now())
        .unwrap();
    assert!(rule.adopt(other.text()).unwrap_err().contains("another CA"));
    assert!(rule.adopt("garbage").is_err());
}

#[test]
fn join_tokens_round_trip_and_refuse_tampering_expiry_and_other_cas() {
    let ca = root();
    let token = JoinToken::issue(&ca, "São Paulo.2", now() + DAY).unwrap();
    let text = token.to_string();
    assert!(!text.contains(' ') && text.starts_with("cambox-join1."));
    let back = JoinToken::parse(&text).unwrap();
    assert_eq!(back, token);
    assert_eq!(back.site, "São Paulo.2");
    assert!(back.verify(&ca.public_key(), now()).is_ok());
    assert!(back
        .verify(&ca.public_key(), now() + DAY * 2)
        .unwrap_err()
        .contains("expired"));
    assert!(back
        .verify(&root().public_key(), now())
        .unwrap_err()
        .contains("another CA"));
    // Another site in an otherwise genuine token.
    let mut parts: Vec<&str> = text.split('.').collect();
    let munich = cambox_mesh::hex::to_hex(b"munich");
    parts[1] = &munich;
    let forged = JoinToken::parse(&parts.join(".")).unwrap();
    assert!(forged
        .verify(&ca.public_key(), now())
        .unwrap_err()
        .contains("forged"));
    for bad in ["", "cambox-join1", "cambox-join1.zz.1.00.00", "x.y"] {
        assert!(JoinToken::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn an_authority_survives_its_pem_files_and_refuses_a_key_not_its_own() {
    let ca = root();
    let back = Authority::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    assert!(back.is_root());
    assert_eq!(back.public_key(), ca.public_key());
    let chain = back.issue_node(&claims(7), now()).unwrap();
    assert!(admission(&ca).check(claims(7).node, &chain, now()).is_ok());
    let enroller = ca.create_enroller("registry", 365, now()).unwrap();
    let back = Authority::from_pem(&enroller.cert_pem(), &enroller.key_pem()).unwrap();
    assert!(!back.is_root());
    let err = Authority::from_pem(&ca.cert_pem(), &root().key_pem()).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
}

#[test]
fn a_node_certificate_is_not_a_ca_certificate() {
    let ca = root();
    let chain = ca.issue_node(&claims(7), now()).unwrap();
    assert!(Admission::new(chain[0].clone()).is_err());
}

mod https {
    use super::*;
    use crate::https_cert::{self, HttpsClaims, WebKey};

    fn web_key() -> WebKey {
        WebKey::of_private_pem(&WebKey::generate_pem().unwrap()).unwrap()
    }

    fn web_claims(dns: &[&str], ips: &[&str]) -> HttpsClaims {
        HttpsClaims {
            site: "berlin".into(),
            name: "hall".into(),
            dns: dns.iter().map(|d| d.to_string()).collect(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            days: 30,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_enrolment_key_certifies_a_web_key_for_exactly_its_names_and_addresses() {
        let ca = root();
        let enroller = ca.create_enroller("registry", 365, now()).unwrap();
        let key = web_key();
        let chain = enroller
            .issue_https(
                &web_claims(&["hall.local"], &["10.0.0.7", "::1"]),
                &key,
                now(),
            )
            .unwrap();
        let check = |names: &[&str]| {
            https_cert::check(
                ca.certificate(),
                &chain,
                &key,
                &self::names(names),
                now() + DAY,
            )
        };
        assert!(check(&["hall.local", "10.0.0.7", "::1"]).is_ok());
        let other = check(&["intranet.example.com"]).unwrap_err();
        assert!(
            other.contains("does not name intranet.example.com"),
            "{other}"
        );
        assert!(check(&["10.0.0.8"]).is_err());
        // Another key, another CA, an expired certificate.
        assert!(
            https_cert::check(ca.certificate(), &chain, &web_key(), &[], now())
                .unwrap_err()
                .contains("another key")
        );
        assert!(https_cert::check(root().certificate(), &chain, &key, &[], now()).is_err());
        assert!(https_cert::check(ca.certificate(), &chain, &key, &[], now() + DAY * 31).is_err());
        // An HTTPS certificate is no node certificate: it admits nobody to the mesh.
        let refused = admission(&ca).check(claims(7).node, &chain, now());
        assert!(
            matches!(refused, Err(Refused::Untrusted { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn a_box_may_have_only_its_mdns_name_and_its_box_name_certified() {
        let node = claims(7).node;
        let mdns = format!("cambox-{}.local", node.short());
        assert_eq!(
            https_cert::allowed_dns(&node, "Hall"),
            vec![mdns.clone(), "hall.local".into(), "hall".into()]
        );
        assert_eq!(https_cert::allowed_dns(&node, "Hall 2"), vec![mdns.clone()]);
        let ip = |s: &str| s.parse().unwrap();
        assert!(https_cert::check_request(
            &node,
            "hall",
            &names(&[&mdns, "hall"]),
            &[ip("10.1.2.3")]
        )
        .is_ok());
        let err = https_cert::check_request(&node, "hall", &names(&["intranet.example.com"]), &[])
            .unwrap_err();
        assert!(err.contains("not \"intranet.example.com\""), "{err}");
        assert!(https_cert::check_request(&node, "hall", &[], &[ip("0.0.0.0")]).is_err());
        assert!(https_cert::check_request(&node, "hall", &[], &[ip("224.0.0.251")]).is_err());
    }
}
