//! Random identifiers, secret tokens and their hashes.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A new id such as `cv_5f1c2a9e0b7d43e8a1c6f09b` (96 random bits, hex).
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// A new id that sorts by creation time, such as `cv_019ad9a4c3e85f1c2a9e0b7d43e8`:
/// the milliseconds of `now_ms` (12 hex digits), then 64 random bits. Rows keyed by
/// it are inserted next to each other at the end of their index, so a batch of new
/// conversations dirties a few pages instead of about one page per row (see
/// docs/BENCHMARKS.md, "Timers").
pub fn new_sorted_id(prefix: &str, now_ms: i64) -> String {
    let random: u64 = rand::random();
    format!(
        "{prefix}_{:012x}{random:016x}",
        now_ms.clamp(0, 0xffff_ffff_ffff)
    )
}

/// A new secret token (256 random bits, URL-safe base64), e.g. a contact token.
pub fn new_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// SHA-256 hex of a secret: what the database keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// HMAC-SHA256(key, message) as lowercase hex.
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_reference_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(
            constant_time_eq("abc", "abc")
                && !constant_time_eq("abc", "abd")
                && !constant_time_eq("ab", "abc")
        );
        assert_ne!(new_id("cv"), new_id("cv"));
        let (a, b) = (new_sorted_id("cv", 1_000), new_sorted_id("cv", 1_001));
        assert!(a < b && a.len() == 3 + 28, "{a} {b}");
        assert_ne!(new_sorted_id("cv", 5), new_sorted_id("cv", 5));
        assert_eq!(new_token("t_").len(), 2 + 43);
    }
}
