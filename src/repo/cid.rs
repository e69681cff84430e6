//! Binary CIDs as they appear in CAR sections and CBOR links: length, shape,
//! and whether a block's bytes hash to the CID. Pure; no allocation except
//! when rendering a CID as a string.

use sha2::{Digest, Sha256};

/// Multicodec of DAG-CBOR (records, MST nodes, commits).
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec of raw bytes (blobs).
pub const RAW: u64 = 0x55;
/// Multihash code of SHA-256.
pub const SHA2_256: u64 = 0x12;

/// Why a binary CID could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    #[error("CID is truncated")]
    Truncated,
    #[error("CID version {0} is not supported")]
    Version(u64),
    #[error("bad varint in CID")]
    Varint,
}

/// The parts of a binary CID, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidParts<'a> {
    pub version: u64,
    pub codec: u64,
    pub hash_code: u64,
    pub digest: &'a [u8],
    /// The whole binary CID.
    pub bytes: &'a [u8],
}

/// Reads an unsigned LEB128 varint of at most 9 bytes (values below 2^63).
#[inline]
pub fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(9) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Parses the binary CID at the start of `buf`; the CID may be followed by
/// other bytes (a block, in a CAR section).
#[inline]
pub fn parse(buf: &[u8]) -> Result<CidParts<'_>, CidError> {
    // CIDv0: a bare sha2-256 multihash.
    if buf.len() >= 2 && buf[0] == 0x12 && buf[1] == 0x20 {
        let bytes = buf.get(..34).ok_or(CidError::Truncated)?;
        return Ok(CidParts { version: 0, codec: 0x70, hash_code: SHA2_256, digest: &bytes[2..], bytes });
    }
    let mut pos = 0;
    let next = |pos: &mut usize| -> Result<u64, CidError> {
        let (v, n) = varint(buf.get(*pos..).ok_or(CidError::Truncated)?).ok_or(if buf.len() <= *pos + 9 {
            CidError::Truncated
        } else {
            CidError::Varint
        })?;
        *pos += n;
        Ok(v)
    };
    let version = next(&mut pos)?;
    if version != 1 {
        return Err(CidError::Version(version));
    }
    let codec = next(&mut pos)?;
    let hash_code = next(&mut pos)?;
    let len = next(&mut pos)? as usize;
    let end = pos.checked_add(len).ok_or(CidError::Truncated)?;
    let digest = buf.get(pos..end).ok_or(CidError::Truncated)?;
    Ok(CidParts { version, codec, hash_code, digest, bytes: &buf[..end] })
}

/// Whether `block` hashes to the CID `cid` (binary). Only SHA-256 CIDs can
/// match: atproto uses no other hash, so anything else is treated as a mismatch.
#[inline]
pub fn verify(cid: &[u8], block: &[u8]) -> bool {
    match parse(cid) {
        Ok(p) if p.hash_code == SHA2_256 && p.digest.len() == 32 => Sha256::digest(block).as_slice() == p.digest,
        _ => false,
    }
}

/// The CIDv1 DAG-CBOR SHA-256 CID of `block`, binary.
pub fn dag_cbor_cid(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    out.extend_from_slice(&[0x01, 0x71, 0x12, 0x20]);
    out.extend_from_slice(&Sha256::digest(block));
    out
}

/// The usual string form (base32 lower `b…` for CIDv1, base58 `Qm…` for v0).
/// Bytes that are not a CID render as `invalid-cid:<hex>` rather than failing.
pub fn to_string(cid: &[u8]) -> String {
    match cid::Cid::try_from(cid) {
        Ok(c) => c.to_string(),
        Err(_) => {
            let hex: String = cid.iter().map(|b| format!("{b:02x}")).collect();
            format!("invalid-cid:{hex}")
        }
    }
}

/// Parses a CID string into its binary form.
pub fn from_str(s: &str) -> Option<Vec<u8>> {
    cid::Cid::try_from(s).ok().map(|c| c.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_real_cid() {
        let s = "bafyreiacmzmmzfukfenvoukzfza4k5cyeqbjjqunee4cpo3rn4vovmcg5m";
        let b = from_str(s).unwrap();
        let p = parse(&b).unwrap();
        assert_eq!((p.version, p.codec, p.hash_code, p.digest.len()), (1, DAG_CBOR, SHA2_256, 32));
        assert_eq!(p.bytes.len(), b.len());
        assert_eq!(to_string(&b), s);
    }

    #[test]
    fn verifies_blocks() {
        let block = b"\xa1\x61a\x01";
        let cid = dag_cbor_cid(block);
        assert!(verify(&cid, block));
        assert!(!verify(&cid, b"\xa1\x61a\x02"));
        assert!(!verify(&cid[..10], block));
    }

    #[test]
    fn truncated_cids_are_errors() {
        let b = from_str("bafyreiacmzmmzfukfenvoukzfza4k5cyeqbjjqunee4cpo3rn4vovmcg5m").unwrap();
        for n in 0..b.len() {
            assert!(parse(&b[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }
}
