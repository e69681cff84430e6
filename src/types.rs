//! Syntax of the atproto identifiers instancemap stores: DIDs, handles,
//! NSIDs, record keys and TIDs. Pure checks on `&str`, no allocation, tested
//! against the official interop vectors (`tests/fixtures/syntax/`).
//!
//! Everything that becomes part of a RocksDB key passes one of these first,
//! so keys never hold a NUL byte or unbounded text.

/// Longest DID accepted (atproto DID spec).
pub const MAX_DID_LEN: usize = 2048;
/// Longest handle (DNS name limit).
pub const MAX_HANDLE_LEN: usize = 253;
/// Longest NSID.
pub const MAX_NSID_LEN: usize = 317;
/// Longest record key.
pub const MAX_RKEY_LEN: usize = 512;

/// `did:<method>:<identifier>` per the atproto DID syntax:
/// `^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$`, at most 2048 characters.
pub fn is_did(s: &str) -> bool {
    if s.len() > MAX_DID_LEN {
        return false;
    }
    let Some(rest) = s.strip_prefix("did:") else {
        return false;
    };
    let Some((method, id)) = rest.split_once(':') else {
        return false;
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_lowercase()) {
        return false;
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    match id.as_bytes().split_last() {
        Some((&last, body)) => ok(last) && body.iter().all(|&b| ok(b) || b == b':' || b == b'%'),
        None => false,
    }
}

/// A DNS label of 1 to 63 ASCII letters, digits and hyphens, with no hyphen
/// at either end.
fn is_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An atproto handle: a DNS name of two or more labels whose last label
/// starts with a letter, at most 253 characters. Case is not normalised here.
pub fn is_handle(s: &str) -> bool {
    if s.len() > MAX_HANDLE_LEN {
        return false;
    }
    let mut labels = 0;
    let mut last = "";
    for l in s.split('.') {
        if !is_label(l) {
            return false;
        }
        labels += 1;
        last = l;
    }
    labels >= 2 && last.as_bytes()[0].is_ascii_alphabetic()
}

/// A namespaced identifier (`com.example.fooBar`): a reversed domain
/// authority of two or more labels (the first starting with a letter) and a
/// name of letters and digits starting with a letter.
pub fn is_nsid(s: &str) -> bool {
    if s.len() > MAX_NSID_LEN {
        return false;
    }
    let Some((authority, name)) = s.rsplit_once('.') else {
        return false;
    };
    let nb = name.as_bytes();
    if nb.is_empty() || nb.len() > 63 || !nb[0].is_ascii_alphabetic() || !nb.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let mut labels = 0;
    for (i, l) in authority.split('.').enumerate() {
        if !is_label(l) || (i == 0 && !l.as_bytes()[0].is_ascii_alphabetic()) {
            return false;
        }
        labels += 1;
    }
    labels >= 2
}

/// A record key: 1 to 512 characters of `A-Za-z0-9._:~-`, not `.` or `..`.
pub fn is_record_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_RKEY_LEN
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'~' | b'-'))
}

/// A timestamp identifier (commit `rev`, most record keys): 13 characters of
/// base32-sortable, the first of `234567abcdefghij`.
pub fn is_tid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 13
        && matches!(b[0], b'2'..=b'7' | b'a'..=b'j')
        && b.iter().all(|c| matches!(c, b'2'..=b'7' | b'a'..=b'z'))
}

/// The time a TID claims: its 53 bits of microseconds since the epoch
/// (`None` for a string that is not a TID). Whoever made the TID chose it.
pub fn tid_time_us(s: &str) -> Option<i64> {
    if !is_tid(s) {
        return None;
    }
    const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";
    let n = s.bytes().fold(0u64, |n, c| (n << 5) | ALPHABET.iter().position(|a| *a == c).unwrap_or(0) as u64);
    i64::try_from(n >> 10).ok()
}

/// Splits a repo path `collection/rkey`, checking both parts.
pub fn split_repo_path(path: &str) -> Option<(&str, &str)> {
    let (c, r) = path.split_once('/')?;
    (is_nsid(c) && is_record_key(r)).then_some((c, r))
}

/// An email address as a contact: `local@domain`, the domain a host name.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !local.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@')
        && is_handle(domain)
}

/// The registrable domain (eTLD+1) of a host name, by the Public Suffix
/// List with its private section; `None` for names that are themselves a
/// public suffix or have no known suffix.
pub fn registrable_domain(name: &str) -> Option<String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let d = psl::domain(lower.as_bytes())?;
    if !d.suffix().is_known() {
        return None;
    }
    std::str::from_utf8(d.as_bytes()).ok().map(str::to_owned)
}

/// The domains a handle is under that could be a provider's user domain:
/// its parent, its parent's parent, … down to its registrable domain
/// (`alice.bsky.social` → `bsky.social`; `a.b.example.co.uk` →
/// `b.example.co.uk`, `example.co.uk`), or down to its last two labels
/// when its suffix is not on the Public Suffix List (`max.pds-b.test` →
/// `pds-b.test`); the handle itself when it is its registrable domain.
pub fn handle_domains(handle: &str) -> Vec<&str> {
    let floor = match registrable_domain(handle) {
        Some(rd) if rd.len() == handle.len() => return vec![handle],
        Some(rd) => rd.len(),
        None => match handle.rsplitn(3, '.').collect::<Vec<_>>()[..] {
            [tld, sld, _] => tld.len() + sld.len() + 1,
            _ => return Vec::new(),
        },
    };
    let mut out = Vec::new();
    let mut rest = handle;
    while rest.len() > floor {
        let Some((_, parent)) = rest.split_once('.') else { break };
        out.push(parent);
        rest = parent;
    }
    out
}

/// Normalises a service endpoint to the one key of its host,
/// `scheme://host[:port]`, or says why it is not one host.
///
/// Parsed by the `url` crate (WHATWG URL): the host of an http(s) URL is
/// mapped by IDNA (UTS-46) to its ASCII form, so `https://pds.bücher.de`,
/// `https://pds.BÜCHER.de` and `https://pds.xn--bcher-kva.de` are one key;
/// names are lower-cased, IPv4 addresses written dotted (`0x7f.1` is
/// `127.0.0.1`), IPv6 addresses compressed in brackets. The default port
/// (443, 80), a trailing slash and a trailing dot are dropped. Surrounding
/// whitespace is trimmed; a space or control character inside, a path,
/// query, fragment, user info, a scheme other than http(s), and a name
/// that is not a host name (empty or over-long labels, characters outside
/// letters, digits, `-` and `_`) are refused. The reason is a short fixed
/// phrase, fit for a bounded label.
pub fn normalize_endpoint(url: &str) -> Result<String, &'static str> {
    let url = url.trim();
    // the URL parser would silently drop tabs and newlines, and trim
    // controls; a key never contains them
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("endpoint has a space or control character");
    }
    // the parser also reads `https:host` and `https:\\host`; only the
    // plain `scheme://` form is an endpoint
    let scheme = match url.split_once("://") {
        Some((s, _)) if s.eq_ignore_ascii_case("https") => "https",
        Some((s, _)) if s.eq_ignore_ascii_case("http") => "http",
        _ => return Err("endpoint is not http(s)"),
    };
    let parsed = url::Url::parse(url).map_err(|e| match e {
        url::ParseError::EmptyHost => "endpoint host is empty",
        url::ParseError::InvalidPort => "endpoint port is not a port number",
        // the parser reports forbidden characters as IDNA errors too
        url::ParseError::IdnaError if url.is_ascii() && !url.to_ascii_lowercase().contains("xn--") => {
            "endpoint host is not a host name"
        }
        url::ParseError::IdnaError => "endpoint host is not a valid international domain name",
        url::ParseError::InvalidIpv4Address | url::ParseError::InvalidIpv6Address => {
            "endpoint host is not a valid IP address"
        }
        url::ParseError::InvalidDomainCharacter => "endpoint host is not a host name",
        _ => "endpoint is not a URL",
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("endpoint has user info");
    }
    if parsed.path() != "/" || url.contains('\\') {
        return Err("endpoint has a path");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("endpoint has a query or fragment");
    }
    let host = match parsed.host() {
        None => return Err("endpoint host is empty"),
        Some(url::Host::Domain(d)) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            if d.is_empty() {
                return Err("endpoint host is empty");
            }
            if !is_host_name(d) {
                return Err("endpoint host is not a host name");
            }
            d.to_owned()
        }
        // the parser's forms: dotted IPv4, compressed IPv6 in brackets
        Some(ip) => ip.to_string(),
    };
    Ok(match parsed.port() {
        Some(0) => return Err("endpoint port is not a port number"),
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// An ASCII host name: at most 253 characters, labels of 1–63 letters,
/// digits, `-` or `_`, neither starting nor ending with `-`.
fn is_host_name(d: &str) -> bool {
    d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_domains_run_down_to_the_registrable_domain_or_two_labels() {
        assert_eq!(handle_domains("alice.bsky.social"), ["bsky.social"]);
        assert_eq!(handle_domains("a.b.example.co.uk"), ["b.example.co.uk", "example.co.uk"]);
        assert_eq!(handle_domains("max.pds-b.test"), ["pds-b.test"]);
        assert_eq!(handle_domains("x.max.pds-b.test"), ["max.pds-b.test", "pds-b.test"]);
        assert_eq!(handle_domains("example.com"), ["example.com"]);
        assert!(handle_domains("pds-b.test").is_empty());
    }

    #[test]
    fn examples() {
        assert!(is_did("did:plc:z72i7hdynmk6r22z27h6tvur"));
        assert!(is_did("did:web:localhost%3A2583"));
        assert!(!is_did("did:plc:"));
        assert!(is_handle("alice.bsky.social"));
        assert!(!is_handle("alice.123"));
        assert!(is_nsid("app.bsky.feed.post"));
        assert!(!is_nsid("app.bsky"));
        assert!(is_record_key("self"));
        assert!(is_tid("3mptbypluud2a"));
        // a real commit rev and its frame's time, 2026-07-04T14:38:07.517Z
        assert_eq!(tid_time_us("3mptbypluud2a"), Some(1_783_175_887_514_441));
        assert_eq!(tid_time_us("3mptbypluud2"), None);
        assert_eq!(split_repo_path("app.bsky.feed.like/3mptbyplj5d2a"), Some(("app.bsky.feed.like", "3mptbyplj5d2a")));
        assert_eq!(split_repo_path("app.bsky.feed.like"), None);
    }
}
