//! Identifiers: ULIDs built from caller-supplied time and randomness (this crate does no I/O),
//! and lowercase hex.

/// A ULID: 48 bits of milliseconds since the epoch, then 80 random bits, in Crockford base32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ulid(u128);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl Ulid {
    /// Builds a ULID from a millisecond timestamp and random bits (only the low 80 are used).
    pub fn from_parts(unix_ms: u64, random: u128) -> Self {
        let time = u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80;
        Self(time | (random & ((1u128 << 80) - 1)))
    }

    /// The millisecond timestamp part.
    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// Parses the 26-character text form (case-insensitive).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 26 {
            return None;
        }
        let mut value: u128 = 0;
        for (i, c) in text.bytes().enumerate() {
            let digit = CROCKFORD
                .iter()
                .position(|&d| d == c.to_ascii_uppercase())? as u128;
            // The first character carries only 3 bits (26 * 5 = 130 > 128).
            if i == 0 && digit > 7 {
                return None;
            }
            value = (value << 5) | digit;
        }
        Some(Self(value))
    }
}

impl std::fmt::Display for Ulid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = [0u8; 26];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (25 - i);
            *slot = CROCKFORD[((self.0 >> shift) & 0x1F) as usize];
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xF)] as char);
    }
    out
}

/// Bytes of a hex string (either case); `None` when it is not hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulid_round_trips_and_sorts_by_time() {
        let a = Ulid::from_parts(1_700_000_000_000, 0xDEAD_BEEF);
        let b = Ulid::from_parts(1_700_000_000_001, 0);
        let text = a.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(Ulid::parse(&text), Some(a));
        assert_eq!(Ulid::parse(&text.to_lowercase()), Some(a));
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
    }

    #[test]
    fn ulid_parse_refuses_garbage() {
        assert_eq!(Ulid::parse("short"), None);
        assert_eq!(Ulid::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ"), None);
        assert_eq!(Ulid::parse("01ARZ3NDEKTSV4RRFFQ69G5FAU"), None); // U is not Crockford
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xAB, 0xFF];
        assert_eq!(hex_encode(&bytes), "0001abff");
        assert_eq!(hex_decode("0001ABff"), Some(bytes.to_vec()));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
