//! The explorer's page frame and the small formatters its pages share.
//!
//! Every string from the network (names, handles, URLs, contacts: an
//! operator writes them) goes through maud, which escapes it; links are
//! made only from `http(s)` and `mailto` addresses ([`safe_href`]), and
//! names sit in `<bdi>` so a right-to-left override cannot reorder the
//! text around them.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

/// The stylesheet and the script, built into the binary.
pub const STYLE: &str = include_str!("assets/style.css");
pub const SCRIPT: &str = include_str!("assets/explorer.js");

/// A version tag for the assets' URLs (they are cached for a day).
pub fn asset_tag() -> &'static str {
    static TAG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(STYLE);
        h.update(SCRIPT);
        h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
    });
    &TAG
}

/// A whole page: `title` (the document's and nothing else), the search
/// box holding `q`, the map's freshness note if it is not current, and
/// `body` in `<main>`.
pub fn frame(title: &str, q: &str, map: Option<&Value>, body: Markup) -> Markup {
    let tag = asset_tag();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · instancemap" }
                link rel="stylesheet" href={ "/assets/style.css?v=" (tag) };
                script src={ "/assets/explorer.js?v=" (tag) } defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to the content" }
                header class="top" {
                    nav aria-label="Site" {
                        a class="brand" href="/" { "instancemap" }
                        a href="/instances" { "Instances" }
                        a href="/flows" { "Migrations" }
                        a href="/openapi.json" { "API" }
                    }
                    form class="search" role="search" action="/" method="get" {
                        label for="q" { "Account, handle, at:// URI, host or instance" }
                        div class="row" {
                            input id="q" name="q" type="search" value=(q) autocomplete="off" spellcheck="false"
                                placeholder="did:plc:…, alice.bsky.social, at://…, pds.example.com";
                            button type="submit" { "Look up" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    @if let Some(note) = map.and_then(|m| m["note"].as_str()) {
                        p class="notice" role="status" { strong { "The map is not current. " } (note) }
                    }
                    (body)
                }
                footer {
                    p {
                        "Every figure here comes from this server's read-only XRPC API ("
                        a href="/openapi.json" { "OpenAPI" } "), which any tool may use. "
                        "Evidence is what instancemap observed and checked; declarations count only where proven."
                    }
                }
            }
        }
    }
}

/// A link target from a string an operator wrote: `http(s)://` and
/// `mailto:` only (never `javascript:` or `data:`), else `None`.
pub fn safe_href(s: &str) -> Option<String> {
    let l = s.trim().to_ascii_lowercase();
    if (l.starts_with("https://") || l.starts_with("http://")) && url::Url::parse(s.trim()).is_ok() {
        return Some(s.trim().to_owned());
    }
    if let Some(addr) = s.trim().strip_prefix("mailto:").or(Some(s.trim())) {
        if is_email(addr) {
            return Some(format!("mailto:{addr}"));
        }
    }
    None
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty() && domain.contains('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "@.-_+".contains(c))
}

/// A contact as a link when it is one, else as text; with a copy button
/// (shown by the script).
pub fn contact(s: &str) -> Markup {
    html! {
        span class="contact" {
            @if let Some(h) = safe_href(s) {
                a href=(h) rel="nofollow noopener noreferrer" { bdi { (s) } }
            } @else {
                bdi { (s) }
            }
            " "
            button type="button" class="copy" data-copy=(s) hidden aria-label={ "Copy " (s) } { "Copy" }
        }
    }
}

/// `n` with thousands separators.
pub fn num(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A JSON number as [`num`], or a dash.
pub fn jnum(v: &Value) -> String {
    v.as_i64().map_or_else(|| "–".to_owned(), num)
}

/// A share (0..1) as a percentage.
pub fn pct(x: f64) -> String {
    if x > 0.0 && x < 0.001 {
        return "<0.1%".to_owned();
    }
    format!("{:.1}%", x * 100.0)
}

/// How long ago an RFC 3339 time was, in words ("3 days ago"), with the
/// time itself in a `<time>` element.
pub fn ago(at: &Value) -> Markup {
    let Some(s) = at.as_str() else { return html! { "never" } };
    let Some(ms) = crate::clock::parse_time_ms(s) else { return html! { (s) } };
    html! { time datetime=(s) title=(s) { (ago_words(crate::clock::now_ms() - ms)) } }
}

/// `ms` as "N units ago".
pub fn ago_words(ms: i64) -> String {
    if ms < 0 {
        return "in the future".to_owned();
    }
    let s = ms / 1000;
    let (n, unit) = match s {
        0..=59 => return "just now".to_owned(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=5_183_999 => (s / 86_400, "day"),
        5_184_000..=63_071_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// A word from an API code (`no_pds` → "no pds").
pub fn words(code: &str) -> String {
    code.replace('_', " ")
}

/// The query string for `pairs`, leaving out empty values.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// A link to this server's API answer for a query, for people who want
/// the JSON, with a button (shown by the script) that copies it.
pub fn json_link(path: &str) -> Markup {
    html! {
        p class="json" {
            "The same answer as JSON: "
            a href=(path) { code { (path) } }
            " "
            button type="button" class="copy" data-copy-url=(path) hidden { "Copy the JSON" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_and_mail_addresses_become_links() {
        assert_eq!(safe_href("https://coop.example/abuse").as_deref(), Some("https://coop.example/abuse"));
        assert_eq!(safe_href("abuse@coop.example").as_deref(), Some("mailto:abuse@coop.example"));
        assert_eq!(safe_href("mailto:abuse@coop.example").as_deref(), Some("mailto:abuse@coop.example"));
        for bad in ["javascript:alert(1)", "JavaScript://%0aalert(1)", "data:text/html,<script>", "did:plc:x", "a@b"] {
            assert_eq!(safe_href(bad), None, "{bad}");
        }
        // an address with characters that could break out of a mailto
        assert_eq!(safe_href("a@b.example?cc=x@y.example"), None);
    }

    #[test]
    fn numbers_and_ages_read_as_words() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(num(-1000), "-1,000");
        assert_eq!(ago_words(30_000), "just now");
        assert_eq!(ago_words(3 * 86_400_000), "3 days ago");
        assert_eq!(ago_words(3_600_000), "1 hour ago");
        assert_eq!(pct(0.81852), "81.9%");
    }

    #[test]
    fn operator_strings_are_escaped_in_contacts() {
        let m = contact("<script>alert(1)</script>@x.example").into_string();
        assert!(!m.contains("<script>"), "{m}");
        assert!(m.contains("&lt;script&gt;"), "{m}");
    }
}
