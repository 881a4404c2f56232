//! Fuzz target for access-token verification: arbitrary text and forgeries made from validly
//! issued tokens (bytes flipped, inserted or deleted, segments swapped or spliced between
//! tokens, base64 re-encoded or padded, the header rewritten to `alg: none`, HS256 or another
//! key id, the claims rewritten under the old signature, tokens signed with another key or
//! with the public key as an HMAC secret). `verify` never panics and accepts a token only
//! when it is byte for byte one that was issued and is still in time.
//!
//! `PROPTEST_CASES` sets the number of cases; `scripts/fuzz` runs it long.

use std::sync::OnceLock;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use axon_control_plane::identity::auth::{AUDIENCE, Claims, ISSUER, JwtKeys};
use axon_control_plane::model::{Role, Store, User, now};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Relative to the crate directory, where `cargo test` runs; committed, so a case
        // that once failed replays on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_jwt.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// The server's keys and what it issued; an attacker's key pair of the same kind.
struct World {
    keys: JwtKeys,
    kid: String,
    public_key: Vec<u8>,
    /// Issued and in time: the only texts `verify` may accept.
    valid: Vec<String>,
    /// Issued, but expired past the leeway.
    expired: Vec<String>,
    /// Signed by another server's key.
    foreign: Vec<String>,
    foreign_encoding: EncodingKey,
}

fn user(id: &str, role: Role) -> User {
    User {
        id: id.into(),
        email: format!("{id}@example.com"),
        name: id.into(),
        role,
        tenant_id: (role == Role::Client).then(|| "t1".to_owned()),
        password_hash: String::new(),
        disabled: false,
        demo_tag: None,
        created_at: now(),
        updated_at: now(),
    }
}

/// Loads keys from a store in a temp dir that is gone when this returns: the keys live in
/// memory from then on.
fn load_keys() -> (JwtKeys, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let keys = JwtKeys::load(&store, std::time::Duration::from_secs(900)).expect("keys");
    let stored = store.signing_keys.values().expect("signing keys");
    let key = stored.first().expect("one signing key");
    let der = STANDARD.decode(&key.pkcs8).expect("pkcs8 base64");
    let pair = Ed25519KeyPair::from_pkcs8(&der).expect("pkcs8");
    (keys, key.kid.clone(), pair.public_key().as_ref().to_vec())
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let (keys, kid, public_key) = load_keys();
        let (other, _, _) = load_keys();
        let issue = |k: &JwtKeys, who: &str, role, minutes| {
            k.issue(&user(who, role), "s1", time::Duration::minutes(minutes))
                .expect("token")
        };
        let valid = vec![
            issue(&keys, "alice", Role::Operator, 1440),
            issue(&keys, "bob", Role::Viewer, 1440),
            issue(&keys, "carol", Role::Client, 1440),
        ];
        let expired = vec![
            issue(&keys, "alice", Role::Admin, -10),
            issue(&keys, "root", Role::Admin, -1),
        ];
        let foreign = vec![issue(&other, "mallory", Role::Admin, 10)];
        // The attacker's own signing key, to sign forged claims under the server's kid.
        let attacker_dir = tempfile::tempdir().expect("tempdir");
        let attacker_store = Store::open(attacker_dir.path()).expect("store");
        JwtKeys::generate(&attacker_store).expect("attacker key");
        let attacker = attacker_store.signing_keys.values().expect("keys");
        let der = STANDARD
            .decode(&attacker.first().expect("key").pkcs8)
            .expect("pkcs8");
        World {
            keys,
            kid,
            public_key,
            valid,
            expired,
            foreign,
            foreign_encoding: EncodingKey::from_ed_der(&der),
        }
    })
}

fn claims(sub: &str, role: Role, exp_minutes: i64) -> Claims {
    let t = now().unix_timestamp();
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: sub.into(),
        role,
        tenant: None,
        sid: "s1".into(),
        exp: t + exp_minutes * 60,
        nbf: t,
        iat: t,
        jti: "forged".into(),
    }
}

const ALGS: &[&str] = &[
    "none", "None", "NONE", "HS256", "RS256", "ES256", "EdDSA", "eddsa", "Ed25519",
];

#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, char),
    Delete(Index, usize),
    Duplicate(Index, usize),
    Truncate(Index),
}

#[derive(Debug, Clone)]
enum Forgery {
    /// Byte-level edits of the whole text.
    Edits(Vec<Edit>),
    /// The three segments in another order, or some of them repeated.
    Segments(Vec<usize>),
    /// One segment taken from another token.
    Splice(usize, Index),
    /// The last base64 character of a segment swapped for one that differs only in bits the
    /// decoder should not ignore.
    TrailingBits(usize, u8),
    /// A segment re-encoded with padding or the standard alphabet.
    Reencode(usize, bool),
    /// The header rewritten, the rest kept.
    Header(&'static str, Option<&'static str>, bool),
    /// The claims rewritten under the original signature.
    Claims(&'static str, Value),
    /// A fourth segment, or whitespace around.
    Extra(&'static str, bool),
    /// Freshly signed forgeries.
    AlgNone(bool),
    HmacWithPublicKey,
    AttackerKeyWithServerKid,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (
            any::<Index>(),
            prop_oneof![
                select(&['.', '=', '-', '_', '+', '/', 'A', ' ', '\0', 'é'][..]),
                any::<char>()
            ]
        )
            .prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<Index>(), 1usize..8).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<Index>(), 1usize..16).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn forgery() -> impl Strategy<Value = Forgery> {
    let claim_edit = prop_oneof![
        Just(("sub", Value::from("admin"))),
        Just(("role", Value::from("admin"))),
        Just(("exp", Value::from(i64::MAX))),
        Just(("exp", Value::from(4_102_444_800_i64))),
        Just(("aud", Value::from("axon-api "))),
        Just(("iss", Value::from("someone-else"))),
        Just(("nbf", Value::Null)),
        Just(("tenant", Value::from("t2"))),
    ];
    prop_oneof![
        6 => prop::collection::vec(edit(), 1..5).prop_map(Forgery::Edits),
        2 => prop::collection::vec(0usize..3, 1..5).prop_map(Forgery::Segments),
        2 => (0usize..3, any::<Index>()).prop_map(|(s, i)| Forgery::Splice(s, i)),
        2 => (0usize..3, 1u8..64).prop_map(|(s, x)| Forgery::TrailingBits(s, x)),
        1 => (0usize..3, any::<bool>()).prop_map(|(s, std)| Forgery::Reencode(s, std)),
        3 => (
            select(ALGS),
            prop::option::of(select(&["", "../x", "server", "server ", "SERVER"][..])),
            any::<bool>(),
        )
            .prop_map(|(alg, kid, typ)| Forgery::Header(alg, kid, typ)),
        2 => claim_edit.prop_map(|(k, v)| Forgery::Claims(k, v)),
        1 => (select(&[".", ".x", " ", "\n", "=", ".."][..]), any::<bool>())
            .prop_map(|(s, front)| Forgery::Extra(s, front)),
        1 => any::<bool>().prop_map(Forgery::AlgNone),
        1 => Just(Forgery::HmacWithPublicKey),
        1 => Just(Forgery::AttackerKeyWithServerKid),
    ]
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn b64_json(segment: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).ok()?).ok()
}

fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn forge(w: &World, base: &str, forgery: &Forgery) -> String {
    let mut parts = segments(base);
    let pick = |i: usize| i.min(parts.len().saturating_sub(1));
    match forgery {
        Forgery::Edits(edits) => {
            let mut bytes = base.as_bytes().to_vec();
            for e in edits {
                let at = |i: &Index, len: usize| i.index(len + 1);
                match e {
                    Edit::Flip(i, bit) if !bytes.is_empty() => {
                        let p = i.index(bytes.len());
                        bytes[p] ^= 1 << bit;
                    }
                    Edit::Flip(..) => {}
                    Edit::Insert(i, c) => {
                        let p = at(i, bytes.len());
                        let mut buf = [0u8; 4];
                        bytes.splice(p..p, c.encode_utf8(&mut buf).bytes());
                    }
                    Edit::Delete(i, n) => {
                        let p = at(i, bytes.len());
                        bytes.drain(p..(p + n).min(bytes.len()));
                    }
                    Edit::Duplicate(i, n) => {
                        let p = at(i, bytes.len());
                        let end = (p + n).min(bytes.len());
                        let copy = bytes[p..end].to_vec();
                        bytes.splice(end..end, copy);
                    }
                    Edit::Truncate(i) => bytes.truncate(at(i, bytes.len())),
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Forgery::Segments(order) => order
            .iter()
            .map(|&i| parts[pick(i)].as_str())
            .collect::<Vec<_>>()
            .join("."),
        Forgery::Splice(s, other) => {
            let pool: Vec<&String> = w.valid.iter().chain(&w.expired).chain(&w.foreign).collect();
            let donor = segments(pool[other.index(pool.len())]);
            let s = pick(*s);
            parts[s] = donor[s.min(donor.len() - 1)].clone();
            parts.join(".")
        }
        Forgery::TrailingBits(s, x) => {
            let s = pick(*s);
            if let Some(last) = parts[s].pop() {
                let v = B64.iter().position(|&b| b == last as u8).unwrap_or(0);
                parts[s].push(B64[(v ^ usize::from(*x)) % 64] as char);
            }
            parts.join(".")
        }
        Forgery::Reencode(s, standard) => {
            let s = pick(*s);
            if let Ok(raw) = URL_SAFE_NO_PAD.decode(&parts[s]) {
                parts[s] = if *standard {
                    STANDARD.encode(raw)
                } else {
                    URL_SAFE.encode(raw)
                };
            }
            parts.join(".")
        }
        Forgery::Header(alg, kid, typ) => {
            let mut header = b64_json(&parts[0]).unwrap_or_else(|| serde_json::json!({}));
            header["alg"] = Value::from(*alg);
            match kid {
                Some("server") => header["kid"] = Value::from(w.kid.clone()),
                Some("server ") => header["kid"] = Value::from(format!("{} ", w.kid)),
                Some("SERVER") => header["kid"] = Value::from(w.kid.to_lowercase()),
                Some(k) => header["kid"] = Value::from(*k),
                None => {
                    if let Some(h) = header.as_object_mut() {
                        h.remove("kid");
                    }
                }
            }
            if *typ {
                header["typ"] = Value::from("JWT");
                header["crit"] = serde_json::json!(["exp"]);
            }
            parts[0] = encode_json(&header);
            parts.join(".")
        }
        Forgery::Claims(key, value) => {
            if parts.len() > 1 {
                let mut body = b64_json(&parts[1]).unwrap_or_else(|| serde_json::json!({}));
                body[*key] = value.clone();
                parts[1] = encode_json(&body);
            }
            parts.join(".")
        }
        Forgery::Extra(text, front) => {
            if *front {
                format!("{text}{base}")
            } else {
                format!("{base}{text}")
            }
        }
        Forgery::AlgNone(empty_signature) => {
            let header = serde_json::json!({"alg": "none", "kid": w.kid, "typ": "JWT"});
            let body = serde_json::to_value(claims("admin", Role::Admin, 60)).unwrap_or_default();
            let sig = if *empty_signature {
                ""
            } else {
                parts.last().map_or("", String::as_str)
            };
            format!("{}.{}.{sig}", encode_json(&header), encode_json(&body))
        }
        Forgery::HmacWithPublicKey => {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(w.kid.clone());
            jsonwebtoken::encode(
                &header,
                &claims("admin", Role::Admin, 60),
                &EncodingKey::from_secret(&w.public_key),
            )
            .unwrap_or_default()
        }
        Forgery::AttackerKeyWithServerKid => {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(w.kid.clone());
            jsonwebtoken::encode(
                &header,
                &claims("admin", Role::Admin, 60),
                &w.foreign_encoding,
            )
            .unwrap_or_default()
        }
    }
}

/// `verify` accepts exactly the issued, in-time tokens, with their own claims.
fn check(w: &World, text: &str) -> Result<(), TestCaseError> {
    let verdict = w.keys.verify(text);
    let issued = w.valid.iter().any(|t| t == text);
    if let Some(claims) = verdict {
        prop_assert!(
            issued,
            "accepted a token that was never issued: {text:?} as {claims:?}"
        );
        prop_assert!(["alice", "bob", "carol"].contains(&claims.sub.as_str()));
    } else {
        prop_assert!(!issued, "refused an issued token: {text:?}");
    }
    Ok(())
}

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[A-Za-z0-9_.=+/-]{0,300}"]
}

fn check_arbitrary_text(text: String) -> Result<(), TestCaseError> {
    check(world(), &text)
}

fn forged() -> impl Strategy<Value = (Index, Vec<Forgery>, bool)> {
    (
        any::<Index>(),
        prop::collection::vec(forgery(), 1..3),
        any::<bool>(),
    )
}

fn check_forged(
    (base, forgeries, remembered): (Index, Vec<Forgery>, bool),
) -> Result<(), TestCaseError> {
    let w = world();
    let pool: Vec<&String> = w.valid.iter().chain(&w.expired).chain(&w.foreign).collect();
    let original = pool[base.index(pool.len())];
    if remembered {
        // The issued tokens are in the verified-token memory: forgeries must not ride it.
        for t in &w.valid {
            check(w, t)?;
        }
    }
    let mut text = original.clone();
    for f in &forgeries {
        text = forge(w, &text, f);
        check(w, &text)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn fuzz_arbitrary_text(text in arbitrary_text()) {
        check_arbitrary_text(text)?;
    }

    #[test]
    fn fuzz_forged_tokens(case in forged()) {
        check_forged(case)?;
    }
}

/// Coverage-guided entry (`fuzz/`). A first byte below 64: the rest is the token's text.
/// Otherwise it picks a token the tests hold (issued, expired, another server's), and the rest
/// edits it, three bytes an edit: where, what (insert, delete, replace, or splice in a part
/// of another token) and the byte. The issued tokens verify first when its bit 5 is set, so
/// the forgeries meet the verified-token memory.
pub fn fuzz_bytes(data: &[u8]) {
    let w = world();
    let mut b = axon_fuzzkit::Bytes::new(data);
    let pick = b.u8();
    if pick < 64 {
        axon_fuzzkit::holds(check(w, &String::from_utf8_lossy(b.rest())));
        return;
    }
    let pool: Vec<&String> = w.valid.iter().chain(&w.expired).chain(&w.foreign).collect();
    if pick & 0x20 != 0 {
        for t in &w.valid {
            axon_fuzzkit::holds(check(w, t));
        }
    }
    let mut text = pool[usize::from(pick) % pool.len()].clone().into_bytes();
    while !b.is_empty() {
        let at = usize::from(b.u16()) % (text.len() + 1);
        let (what, byte) = (b.u8(), b.u8());
        match what % 4 {
            0 => text.insert(at, byte),
            1 if at < text.len() => {
                text.remove(at);
            }
            2 if at < text.len() => text[at] = byte,
            3 => {
                let donor = pool[usize::from(byte) % pool.len()].as_bytes();
                let from = usize::from(what) % donor.len();
                let to = text.len().min(at + usize::from(what >> 2));
                text.splice(at..to, donor[from..].iter().copied().take(64));
            }
            _ => {}
        }
    }
    axon_fuzzkit::holds(check(w, &String::from_utf8_lossy(&text)));
}

/// What the coverage-guided fuzzer found (`fuzz/regressions/jwt/`), its seeds, and fixed
/// inputs, through the same entry.
#[test]
fn coverage_guided_inputs_replay() {
    let fuzz_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz"));
    assert!(axon_fuzzkit::replay(fuzz_dir, "jwt", 512, fuzz_bytes) >= 512);
}

/// Issued tokens verify, expired and foreign ones do not; sanity for the properties above.
#[test]
fn the_world_is_what_the_properties_assume() {
    let w = world();
    for t in &w.valid {
        assert!(w.keys.verify(t).is_some(), "{t}");
    }
    for t in w.expired.iter().chain(&w.foreign) {
        assert!(w.keys.verify(t).is_none(), "{t}");
    }
}
