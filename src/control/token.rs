//! API tokens. A token is 32 random bytes from the kernel, written as `vgl_` and URL-safe
//! base64; the config holds only its SHA-256, so a leaked config gives no access. A presented
//! token is hashed and compared with every configured hash in constant time (no early exit on
//! the first differing byte, none on the first match), and never logged.

use crate::config::{Scope, TokenConfig};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::io::Read;

/// A fresh random token.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "vgl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// SHA-256 of a token as 64 lower-case hex digits (the config's `sha256`).
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The configured tokens.
pub struct Tokens {
    entries: Vec<(String, [u8; 32], Scope)>,
}

impl Tokens {
    pub fn new(cfg: &[TokenConfig]) -> Tokens {
        Tokens {
            entries: cfg
                .iter()
                .filter_map(|t| Some((t.name.clone(), parse_hex(&t.sha256)?, t.scope)))
                .collect(),
        }
    }

    /// No tokens configured: the API is open (a loopback listener only; checked at start).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Who holds `presented`, and what they may do.
    pub fn check(&self, presented: &str) -> Option<(&str, Scope)> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, hash, scope) in &self.entries {
            let diff = hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            // Every entry is compared; the match is remembered without branching early.
            if std::hint::black_box(diff) == 0 && found.is_none() {
                found = Some((name.as_str(), *scope));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_checks_against_its_hash_and_nothing_else_does() {
        let t = new_token().unwrap();
        assert!(t.starts_with("vgl_") && t.len() > 40);
        assert_ne!(t, new_token().unwrap());
        let tokens = Tokens::new(&[TokenConfig {
            name: "ops".into(),
            sha256: sha256_hex(&t),
            scope: Scope::Read,
        }]);
        assert_eq!(tokens.check(&t), Some(("ops", Scope::Read)));
        assert_eq!(tokens.check(&format!("{t}x")), None);
        assert_eq!(tokens.check(""), None);
        // The well-known digest of "abc".
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
