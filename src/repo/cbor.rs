//! Zero-copy DAG-CBOR reading: a bounded cursor over borrowed bytes that never
//! allocates on the caller's behalf and refuses input that would make it.
//!
//! The firehose hot path reads headers, bodies and CAR headers with it; kept
//! records are validated with [`validate`] and rendered with [`to_json`].
//! Limits that protect against hostile input ("CBOR bombs"):
//! - nesting deeper than [`MAX_DEPTH`] is an error;
//! - a declared string, array or map length is checked against the bytes left
//!   before anything is read, so a huge declared length costs nothing;
//! - indefinite lengths, tags other than 42 (CID link) and non-text map keys
//!   are rejected, as DAG-CBOR requires.
//!
//! It is lenient where the encoding is unambiguous (non-minimal integer heads,
//! float widths): record blocks are hashed as the author wrote them, and
//! rejecting an oddly encoded but meaningful record would lose data.

use thiserror::Error;

/// Deepest nesting accepted. Real records nest about ten levels (embeds,
/// facets); 64 leaves room and bounds the recursion of [`Reader::skip`] and friends.
pub const MAX_DEPTH: usize = 64;

/// A declared length above this is a hostile or corrupt value, not a truncated
/// frame: nothing on the firehose is larger than a frame (5 MiB).
const IMPLAUSIBLE_LEN: u64 = 16 * 1024 * 1024;

/// What went wrong while reading CBOR. Each variant is one bounded label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CborError {
    /// The input ended inside an item (a truncated frame).
    #[error("unexpected end of input")]
    Eof,
    /// A declared length that no real item could have.
    #[error("declared length {0} is implausibly large")]
    LengthTooLarge(u64),
    /// Nesting beyond [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Anything else that is not DAG-CBOR, or not the type the caller wanted.
    #[error("{0}")]
    Invalid(&'static str),
}

impl CborError {
    /// The metric / stats label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            CborError::Eof => "truncated",
            CborError::LengthTooLarge(_) => "length_too_large",
            CborError::TooDeep => "too_deep",
            CborError::Invalid(_) => "invalid_cbor",
        }
    }
}

pub type Result<T> = std::result::Result<T, CborError>;

/// CBOR major types.
pub const UINT: u8 = 0;
pub const NEGINT: u8 = 1;
pub const BYTES: u8 = 2;
pub const TEXT: u8 = 3;
pub const ARRAY: u8 = 4;
pub const MAP: u8 = 5;
pub const TAG: u8 = 6;
pub const SIMPLE: u8 = 7;

/// The byte of a CBOR `null`.
pub const NULL: u8 = 0xf6;

/// A cursor over one buffer of CBOR items.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next byte, not consumed.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(CborError::Eof)?;
        let s = self.buf.get(self.pos..end).ok_or(CborError::Eof)?;
        self.pos = end;
        Ok(s)
    }

    /// Reads an item head: its major type and argument. For major type 7 the
    /// argument is the additional-info value (20 false, 21 true, 22 null,
    /// 27 double) and the float bits, if any, are skipped.
    #[inline]
    pub fn head(&mut self) -> Result<(u8, u64)> {
        let b = *self.buf.get(self.pos).ok_or(CborError::Eof)?;
        self.pos += 1;
        let major = b >> 5;
        let info = b & 0x1f;
        if major == SIMPLE {
            return match info {
                20..=22 => Ok((SIMPLE, info as u64)),
                25 => self.take(2).map(|_| (SIMPLE, 25)),
                26 => self.take(4).map(|_| (SIMPLE, 26)),
                27 => self.take(8).map(|_| (SIMPLE, 27)),
                31 => Err(CborError::Invalid("indefinite-length break")),
                _ => Err(CborError::Invalid("simple value not allowed in DAG-CBOR")),
            };
        }
        let arg = match info {
            0..=23 => info as u64,
            24 => self.take(1)?[0] as u64,
            25 => u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")) as u64,
            26 => u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as u64,
            27 => u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")),
            31 => return Err(CborError::Invalid("indefinite length")),
            _ => return Err(CborError::Invalid("reserved additional info")),
        };
        Ok((major, arg))
    }

    /// Checks a declared length against what is left. `unit` is the least
    /// number of bytes one element takes (1 for strings, arrays and maps).
    #[inline]
    fn check_len(&self, len: u64) -> Result<usize> {
        if len > IMPLAUSIBLE_LEN {
            return Err(CborError::LengthTooLarge(len));
        }
        if len as usize > self.buf.len() - self.pos {
            return Err(CborError::Eof);
        }
        Ok(len as usize)
    }

    #[inline]
    fn expect(&mut self, want: u8, what: &'static str) -> Result<u64> {
        let (major, arg) = self.head()?;
        if major != want {
            return Err(CborError::Invalid(what));
        }
        Ok(arg)
    }

    /// A map head; returns its number of entries (bounded by the bytes left).
    #[inline]
    pub fn map(&mut self) -> Result<usize> {
        let n = self.expect(MAP, "expected a map")?;
        self.check_len(n)
    }

    /// An array head; returns its number of elements (bounded by the bytes left).
    #[inline]
    pub fn array(&mut self) -> Result<usize> {
        let n = self.expect(ARRAY, "expected an array")?;
        self.check_len(n)
    }

    /// A text string, borrowed. UTF-8 is checked.
    #[inline]
    pub fn text(&mut self) -> Result<&'a str> {
        let n = self.expect(TEXT, "expected a text string")?;
        let n = self.check_len(n)?;
        let s = self.take(n)?;
        std::str::from_utf8(s).map_err(|_| CborError::Invalid("text is not UTF-8"))
    }

    /// A map key: a text string whose bytes are compared with the names a
    /// caller knows, so UTF-8 is not checked (a key that is not UTF-8 can
    /// match no known name and is skipped with its value).
    #[inline]
    pub fn key(&mut self) -> Result<&'a [u8]> {
        let n = self.expect(TEXT, "expected a text map key")?;
        let n = self.check_len(n)?;
        self.take(n)
    }

    /// A byte string, borrowed.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.expect(BYTES, "expected a byte string")?;
        let n = self.check_len(n)?;
        self.take(n)
    }

    /// An unsigned integer.
    #[inline]
    pub fn uint(&mut self) -> Result<u64> {
        self.expect(UINT, "expected an unsigned integer")
    }

    /// A signed integer that fits i64.
    #[inline]
    pub fn int(&mut self) -> Result<i64> {
        match self.head()? {
            (UINT, v) if v <= i64::MAX as u64 => Ok(v as i64),
            (NEGINT, v) if v <= i64::MAX as u64 => Ok(-1 - v as i64),
            (UINT | NEGINT, _) => Err(CborError::Invalid("integer out of range")),
            _ => Err(CborError::Invalid("expected an integer")),
        }
    }

    /// A boolean.
    #[inline]
    pub fn bool(&mut self) -> Result<bool> {
        match self.head()? {
            (SIMPLE, 20) => Ok(false),
            (SIMPLE, 21) => Ok(true),
            _ => Err(CborError::Invalid("expected a boolean")),
        }
    }

    /// Consumes a `null` if one is next; says whether it did.
    #[inline]
    pub fn null(&mut self) -> bool {
        if self.peek() == Some(NULL) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A CID link (tag 42 over a byte string holding 0x00 + binary CID);
    /// returns the binary CID without the 0x00 prefix. The CID's own shape is
    /// checked by [`super::cid::parse`] where it matters.
    #[inline]
    pub fn cid(&mut self) -> Result<&'a [u8]> {
        match self.head()? {
            (TAG, 42) => {}
            _ => return Err(CborError::Invalid("expected a CID link (tag 42)")),
        }
        let b = self.bytes()?;
        match b.split_first() {
            Some((0, rest)) if !rest.is_empty() => Ok(rest),
            _ => Err(CborError::Invalid("CID link without multibase 0x00 prefix")),
        }
    }

    /// A CID link or `null`.
    #[inline]
    pub fn cid_or_null(&mut self) -> Result<Option<&'a [u8]>> {
        if self.null() {
            Ok(None)
        } else {
            self.cid().map(Some)
        }
    }

    /// A text string or `null`.
    #[inline]
    pub fn text_or_null(&mut self) -> Result<Option<&'a str>> {
        if self.null() {
            Ok(None)
        } else {
            self.text().map(Some)
        }
    }

    /// Skips one whole item, checking structure but not UTF-8 (fast path for
    /// fields nobody reads).
    pub fn skip(&mut self) -> Result<()> {
        self.walk(0, false)
    }

    /// Skips one whole item, checking everything DAG-CBOR requires that this
    /// reader can see: UTF-8 text, text map keys, tag 42 only.
    pub fn validate(&mut self) -> Result<()> {
        self.walk(0, true)
    }

    fn walk(&mut self, depth: usize, strict: bool) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let (major, arg) = self.head()?;
        match major {
            UINT | NEGINT | SIMPLE => Ok(()),
            BYTES => {
                let n = self.check_len(arg)?;
                self.take(n).map(|_| ())
            }
            TEXT => {
                let n = self.check_len(arg)?;
                let s = self.take(n)?;
                if strict && std::str::from_utf8(s).is_err() {
                    return Err(CborError::Invalid("text is not UTF-8"));
                }
                Ok(())
            }
            ARRAY => {
                let n = self.check_len(arg)?;
                for _ in 0..n {
                    self.walk(depth + 1, strict)?;
                }
                Ok(())
            }
            MAP => {
                let n = self.check_len(arg)?;
                for _ in 0..n {
                    if strict {
                        self.text()?;
                    } else {
                        self.walk(depth + 1, strict)?;
                    }
                    self.walk(depth + 1, strict)?;
                }
                Ok(())
            }
            TAG => {
                if arg != 42 {
                    return Err(CborError::Invalid("tag other than 42"));
                }
                let b = self.bytes()?;
                if strict && b.first() != Some(&0) {
                    return Err(CborError::Invalid("CID link without 0x00 prefix"));
                }
                Ok(())
            }
            _ => unreachable!("major type is three bits"),
        }
    }
}

/// Validates that `buf` is exactly one DAG-CBOR item.
pub fn validate(buf: &[u8]) -> Result<()> {
    let mut r = Reader::new(buf);
    r.validate()?;
    if !r.is_empty() {
        return Err(CborError::Invalid("trailing bytes after item"));
    }
    Ok(())
}

/// Renders one DAG-CBOR item as atproto JSON (`{"$link"}` for CIDs,
/// `{"$bytes"}` for byte strings). For display and export, not the hot path.
pub fn to_json(buf: &[u8]) -> Result<serde_json::Value> {
    let mut r = Reader::new(buf);
    let v = json_item(&mut r, 0)?;
    if !r.is_empty() {
        return Err(CborError::Invalid("trailing bytes after item"));
    }
    Ok(v)
}

fn json_item(r: &mut Reader<'_>, depth: usize) -> Result<serde_json::Value> {
    use serde_json::Value;
    if depth >= MAX_DEPTH {
        return Err(CborError::TooDeep);
    }
    let start = r.pos;
    let (major, arg) = r.head()?;
    Ok(match major {
        UINT => Value::from(arg),
        NEGINT => {
            if arg > i64::MAX as u64 {
                return Err(CborError::Invalid("integer out of range"));
            }
            Value::from(-1 - arg as i64)
        }
        BYTES => {
            let n = r.check_len(arg)?;
            let b = r.take(n)?;
            serde_json::json!({ "$bytes": base64_std(b) })
        }
        TEXT => {
            let n = r.check_len(arg)?;
            let s = r.take(n)?;
            Value::from(std::str::from_utf8(s).map_err(|_| CborError::Invalid("text is not UTF-8"))?)
        }
        ARRAY => {
            let n = r.check_len(arg)?;
            let mut out = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                out.push(json_item(r, depth + 1)?);
            }
            Value::Array(out)
        }
        MAP => {
            let n = r.check_len(arg)?;
            let mut out = serde_json::Map::new();
            for _ in 0..n {
                let k = r.text()?;
                out.insert(k.to_owned(), json_item(r, depth + 1)?);
            }
            Value::Object(out)
        }
        TAG => {
            r.pos = start;
            let c = r.cid()?;
            serde_json::json!({ "$link": super::cid::to_string(c) })
        }
        _ => match arg {
            20 => Value::Bool(false),
            21 => Value::Bool(true),
            22 => Value::Null,
            _ => return Err(CborError::Invalid("floats are not part of the atproto data model")),
        },
    })
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scalars_and_containers() {
        // {"a": 1, "bb": [true, null, -2], "c": h'0102'}
        let buf = [0xa3, 0x61, b'a', 0x01, 0x62, b'b', b'b', 0x83, 0xf5, 0xf6, 0x21, 0x61, b'c', 0x42, 1, 2];
        let mut r = Reader::new(&buf);
        assert_eq!(r.map().unwrap(), 3);
        assert_eq!(r.text().unwrap(), "a");
        assert_eq!(r.int().unwrap(), 1);
        assert_eq!(r.text().unwrap(), "bb");
        assert_eq!(r.array().unwrap(), 3);
        assert!(r.bool().unwrap());
        assert!(r.null());
        assert_eq!(r.int().unwrap(), -2);
        assert_eq!(r.text().unwrap(), "c");
        assert_eq!(r.bytes().unwrap(), &[1, 2]);
        assert!(r.is_empty());
        validate(&buf).unwrap();
        let j = to_json(&buf).unwrap();
        assert_eq!(j["bb"][2], -2);
        assert_eq!(j["c"]["$bytes"], "AQI=");
    }

    #[test]
    fn huge_declared_lengths_cost_nothing() {
        // array of 2^63 elements, byte string of 2^40 bytes
        let arr = [0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(validate(&arr), Err(CborError::LengthTooLarge(_))));
        let bytes = [0x5b, 0, 0, 1, 0, 0, 0, 0, 0];
        assert!(matches!(validate(&bytes), Err(CborError::LengthTooLarge(_))));
        // a plausible length the input does not have is a truncation
        let short = [0x58, 200, 1, 2, 3];
        assert_eq!(validate(&short), Err(CborError::Eof));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut buf = vec![0x81; 10_000];
        buf.push(0x01);
        assert_eq!(validate(&buf), Err(CborError::TooDeep));
        assert_eq!(to_json(&buf).unwrap_err(), CborError::TooDeep);
    }

    #[test]
    fn indefinite_lengths_and_foreign_tags_are_refused() {
        assert!(validate(&[0x9f, 0x01, 0xff]).is_err());
        assert!(validate(&[0xc1, 0x01]).is_err());
        // non-text map key
        assert!(validate(&[0xa1, 0x01, 0x01]).is_err());
    }
}
