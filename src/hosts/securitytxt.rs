//! `/.well-known/security.txt` (RFC 9116): who to tell about a security or
//! abuse problem, and until when that is true. Read leniently, bounded, and
//! with what is wrong said in words: `Contact` is required (one or more),
//! `Expires` is required exactly once (RFC 3339; a file past it is stale),
//! `Policy` is kept; an OpenPGP cleartext signature is noticed, not checked
//! (no key is known to check it against).

use crate::store::records::SecurityTxt;

/// Bytes of a file read at most; the rest is ignored (and said).
pub const MAX_BYTES: usize = 32 * 1024;
/// Contacts and policies kept at most, each of at most [`MAX_VALUE`] bytes.
pub const MAX_VALUES: usize = 20;
pub const MAX_VALUE: usize = 512;

/// Parses a file fetched from `url`, as of `now_ms`.
pub fn parse(url: &str, body: &[u8], now_ms: i64) -> SecurityTxt {
    let mut out = SecurityTxt { url: url.to_owned(), ..SecurityTxt::default() };
    let mut problems: Vec<String> = Vec::new();
    if body.len() > MAX_BYTES {
        problems.push(format!("over {MAX_BYTES} bytes; the rest not read"));
    }
    let body = &body[..body.len().min(MAX_BYTES)];
    let text = String::from_utf8_lossy(body);
    let mut lines: Vec<&str> = text.lines().collect();
    // a cleartext-signed message: the text between the armour headers
    // and the signature, dash-escaping undone
    if lines.first().is_some_and(|l| l.trim_end() == "-----BEGIN PGP SIGNED MESSAGE-----") {
        out.signed = true;
        let start = lines.iter().position(|l| l.trim().is_empty()).map_or(lines.len(), |i| i + 1);
        let end = lines.iter().position(|l| l.trim_end() == "-----BEGIN PGP SIGNATURE-----").unwrap_or(lines.len());
        lines = lines.get(start..end.max(start)).unwrap_or_default().to_vec();
    }
    let mut expires = Vec::new();
    let mut fields = 0;
    for line in lines {
        let line = line.strip_prefix("- ").unwrap_or(line).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if value.is_empty() || value.len() > MAX_VALUE {
            continue;
        }
        fields += 1;
        match name.trim().to_ascii_lowercase().as_str() {
            "contact" if out.contacts.len() < MAX_VALUES => out.contacts.push(value.to_owned()),
            "policy" if out.policy.len() < MAX_VALUES => out.policy.push(value.to_owned()),
            "expires" => expires.push(value.to_owned()),
            _ => {}
        }
    }
    if fields == 0 {
        problems.push("no fields: not a security.txt".into());
    }
    if out.contacts.is_empty() {
        problems.push("no Contact".into());
    }
    match expires.as_slice() {
        [] => problems.push("no Expires".into()),
        [one, rest @ ..] => {
            if !rest.is_empty() {
                problems.push("Expires more than once".into());
            }
            out.expires = Some(one.clone());
            out.expires_ms = crate::clock::parse_time_us(one).map(|us| us / 1000);
            match out.expires_ms {
                None => problems.push("Expires is not an RFC 3339 time".into()),
                Some(e) if e <= now_ms => problems.push(format!("expired {one}")),
                Some(e) if e > now_ms + 366 * 86_400_000 => {
                    problems.push("Expires more than a year ahead (RFC 9116 advises less)".into())
                }
                Some(_) => {}
            }
        }
    }
    out.problems = problems;
    out
}

/// The email address of a `mailto:` contact.
pub fn mailto(contact: &str) -> Option<&str> {
    let rest = contact.strip_prefix("mailto:")?;
    let addr = rest.split('?').next().unwrap_or_default();
    crate::types::is_email(addr).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_547_200_000; // 2025-12-01

    #[test]
    fn a_valid_file() {
        let body = b"# hello\r\nContact: mailto:security@example.org\r\nContact: https://example.org/report\r\n\
            Expires: 2026-06-01T00:00:00.000Z\r\nPolicy: https://example.org/policy\r\n";
        let s = parse("https://example.org/.well-known/security.txt", body, NOW);
        assert_eq!(s.contacts, ["mailto:security@example.org", "https://example.org/report"]);
        assert_eq!(s.policy, ["https://example.org/policy"]);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert!(!s.expired(NOW) && s.expired(NOW + 365 * 86_400_000));
        assert_eq!(mailto(&s.contacts[0]), Some("security@example.org"));
        assert_eq!(mailto("mailto:x@example.org?subject=hi"), Some("x@example.org"));
        assert_eq!(mailto("https://example.org"), None);
    }

    #[test]
    fn what_is_wrong_is_said() {
        let s = parse("u", b"Contact: mailto:a@example.org\nExpires: 2020-01-01T00:00:00Z\n", NOW);
        assert_eq!(s.problems, ["expired 2020-01-01T00:00:00Z"]);
        assert!(s.expired(NOW));
        let s = parse("u", b"<html><body>Not found</body></html>", NOW);
        assert_eq!(s.problems, ["no fields: not a security.txt", "no Contact", "no Expires"]);
        let s = parse("u", b"Contact: x\nExpires: soon\nExpires: later\n", NOW);
        assert_eq!(s.problems, ["Expires more than once", "Expires is not an RFC 3339 time"]);
        let big = "Contact: mailto:a@example.org\n".repeat(5000);
        let s = parse("u", big.as_bytes(), NOW);
        assert_eq!(s.contacts.len(), MAX_VALUES);
        assert!(s.problems[0].starts_with("over "));
    }

    #[test]
    fn a_signed_file_is_read_between_its_armour() {
        let body = b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nContact: mailto:s@example.org\n\
            - Expires: 2026-06-01T00:00:00Z\n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n";
        let s = parse("u", body, NOW);
        assert!(s.signed);
        assert_eq!(s.contacts, ["mailto:s@example.org"]);
        assert_eq!(s.expires.as_deref(), Some("2026-06-01T00:00:00Z"));
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }
}
