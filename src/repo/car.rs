//! CAR v1 slices (the `blocks` of `#commit` and `#sync`): an index of
//! `(cid, block)` pairs borrowed from the frame's bytes, no copies, no hashing.
//! Hashing is the caller's choice, per block used (see `firehose::commit`).

use super::cbor::{CborError, Reader};
use super::cid::{self, CidError};

/// Why a CAR slice was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CarError {
    #[error("CAR header: {0}")]
    Header(&'static str),
    #[error("CAR header CBOR: {0}")]
    HeaderCbor(CborError),
    #[error("CAR section {index}: truncated")]
    Truncated { index: usize },
    #[error("CAR section {index}: bad length varint")]
    Varint { index: usize },
    #[error("CAR section {index}: {err}")]
    Cid { index: usize, err: CidError },
}

/// A borrowed index over one CAR v1 byte string.
#[derive(Debug, Clone, Default)]
pub struct CarSlice<'a> {
    /// First root (the commit CID for firehose slices).
    pub root: Option<&'a [u8]>,
    /// Number of roots in the header.
    pub roots: usize,
    /// `(binary CID, block bytes)` in file order; duplicates are kept.
    pub blocks: Vec<(&'a [u8], &'a [u8])>,
    /// For a slice of many sections: block index by CID (the first of
    /// duplicates), so a lookup per op is not a scan of every section (a
    /// crafted frame of 38,541 ops over 65,534 sections cost 12.5 s of CPU).
    by_cid: Option<std::collections::HashMap<&'a [u8], usize>>,
}

/// Slices of more sections than this are indexed by CID.
const INDEX_FROM: usize = 32;

/// Most sections a slice may have: the `blocks` field is at most 2,000,000
/// bytes (10,000 for `#sync`) and a section is at least 38 bytes, so 64 Ki is
/// far above anything legitimate and bounds the index allocation.
const MAX_SECTIONS: usize = 65_536;

/// Indexes a CAR v1 byte string.
pub fn index(car: &[u8]) -> Result<CarSlice<'_>, CarError> {
    let (hlen, n) = cid::varint(car).ok_or(CarError::Header("bad header length varint"))?;
    let hend = n.checked_add(hlen as usize).filter(|&e| e <= car.len()).ok_or(CarError::Header("truncated header"))?;
    let mut r = Reader::new(&car[n..hend]);
    let mut version = None;
    let mut root = None;
    let mut roots = 0;
    let entries = r.map().map_err(CarError::HeaderCbor)?;
    for _ in 0..entries {
        match r.key().map_err(CarError::HeaderCbor)? {
            b"version" => version = Some(r.uint().map_err(CarError::HeaderCbor)?),
            b"roots" => {
                roots = r.array().map_err(CarError::HeaderCbor)?;
                for i in 0..roots {
                    let c = r.cid().map_err(CarError::HeaderCbor)?;
                    if i == 0 {
                        root = Some(c);
                    }
                }
            }
            _ => r.skip().map_err(CarError::HeaderCbor)?,
        }
    }
    if version != Some(1) {
        return Err(CarError::Header("version is not 1"));
    }
    let mut blocks = Vec::with_capacity(16);
    let mut pos = hend;
    while pos < car.len() {
        let index = blocks.len();
        if index >= MAX_SECTIONS {
            return Err(CarError::Header("too many sections"));
        }
        let (len, n) = cid::varint(&car[pos..]).ok_or(if car.len() - pos < 9 {
            CarError::Truncated { index }
        } else {
            CarError::Varint { index }
        })?;
        let start = pos + n;
        let end = start.checked_add(len as usize).filter(|&e| e <= car.len()).ok_or(CarError::Truncated { index })?;
        let section = &car[start..end];
        let c = cid::parse(section).map_err(|err| CarError::Cid { index, err })?;
        blocks.push((c.bytes, &section[c.bytes.len()..]));
        pos = end;
    }
    let by_cid = (blocks.len() > INDEX_FROM).then(|| {
        let mut m = std::collections::HashMap::with_capacity(blocks.len());
        for (i, (c, _)) in blocks.iter().enumerate() {
            m.entry(*c).or_insert(i);
        }
        m
    });
    Ok(CarSlice { root, roots, blocks, by_cid })
}

impl<'a> CarSlice<'a> {
    /// The block with this CID, if the slice has it.
    #[inline]
    pub fn get(&self, cid: &[u8]) -> Option<&'a [u8]> {
        match &self.by_cid {
            Some(m) => m.get(cid).map(|&i| self.blocks[i].1),
            None => self.blocks.iter().find(|(c, _)| *c == cid).map(|(_, b)| *b),
        }
    }
}
