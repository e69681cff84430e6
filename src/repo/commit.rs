//! The signed repo commit object: the bytes its signature covers. The
//! signature is over the DAG-CBOR encoding of the commit map without its
//! `sig` entry; for a canonically encoded block that is the block with the
//! `sig` entry cut out and the map's entry count one lower, so the digest is
//! computed over the block's own bytes with no re-encoding.

use sha2::{Digest, Sha256};

use super::cbor::{CborError, Reader, MAP};

/// SHA-256 of the unsigned commit, and the signature bytes.
pub fn unsigned_digest(block: &[u8]) -> Result<([u8; 32], &[u8]), CborError> {
    let mut r = Reader::new(block);
    let n = r.map()?;
    let body_start = r.position();
    let mut sig = None;
    for _ in 0..n {
        let entry_start = r.position();
        let key = r.text()?;
        if key == "sig" {
            let s = r.bytes()?;
            sig = Some((entry_start, r.position(), s));
        } else {
            r.skip()?;
        }
    }
    if !r.is_empty() {
        return Err(CborError::Invalid("trailing bytes after the commit"));
    }
    let (cut_start, cut_end, s) = sig.ok_or(CborError::Invalid("commit has no sig"))?;
    let mut h = Sha256::new();
    h.update(head(MAP, (n - 1) as u64));
    h.update(&block[body_start..cut_start]);
    h.update(&block[cut_end..]);
    Ok((h.finalize().into(), s))
}

/// The shortest CBOR head for a major type and argument.
fn head(major: u8, arg: u64) -> Vec<u8> {
    let m = major << 5;
    match arg {
        0..=23 => vec![m | arg as u8],
        24..=0xff => vec![m | 24, arg as u8],
        0x100..=0xffff => {
            let mut v = vec![m | 25];
            v.extend((arg as u16).to_be_bytes());
            v
        }
        0x1_0000..=0xffff_ffff => {
            let mut v = vec![m | 26];
            v.extend((arg as u32).to_be_bytes());
            v
        }
        _ => {
            let mut v = vec![m | 27];
            v.extend(arg.to_be_bytes());
            v
        }
    }
}
