//! atproto public keys and signatures: Multikey / `did:key` / legacy DID
//! document keys → [`PublicKey`]; ECDSA verification over SHA-256 for k256
//! (secp256k1) and p256 (NIST P-256), accepting only the 64-byte `r‖s` form
//! with low S, as the protocol requires. Pure; the curve work is done by
//! `secp256k1` (libsecp256k1: ~3× the pure-Rust `k256` crate on this
//! machine, see `benches/verify.rs`) and the `p256` crate.

use std::sync::LazyLock;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};

/// A verification-only libsecp256k1 context, shared by all threads.
static SECP: LazyLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
    LazyLock::new(secp256k1::Secp256k1::verification_only);

/// Multicodec prefixes of compressed public keys in a Multikey.
const K256_PREFIX: [u8; 2] = [0xe7, 0x01];
const P256_PREFIX: [u8; 2] = [0x80, 0x24];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a multibase base58btc string (no leading z)")]
    Multibase,
    #[error("bad base58")]
    Base58,
    #[error("unknown key type (multicodec prefix)")]
    UnknownCodec,
    #[error("not a valid curve point")]
    Point,
    #[error("not a did:key")]
    NotDidKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("signature is {0} bytes, not the 64-byte r||s form")]
    Length(usize),
    #[error("signature is not a valid scalar pair")]
    Malformed,
    #[error("high-S signature (atproto requires low-S)")]
    HighS,
    #[error("signature does not verify")]
    Invalid,
}

impl SigError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SigError::Length(_) => "sig_length",
            SigError::Malformed => "sig_malformed",
            SigError::HighS => "sig_high_s",
            SigError::Invalid => "sig_invalid",
        }
    }
}

/// The curves atproto uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    K256,
    P256,
}

/// A verifying key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    K256(secp256k1::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// Longest base58 body of a key: an uncompressed P-256/secp256k1 point
/// with its multicodec prefix is 67 bytes, about 92 characters. Checked
/// before decoding, which is quadratic in the length (a 250,000-character
/// key in a did:web document froze the runtime for ~30 s).
pub const MAX_KEY_CHARS: usize = 128;

fn base58(s: &str) -> Result<Vec<u8>, KeyError> {
    let body = s.strip_prefix('z').ok_or(KeyError::Multibase)?;
    if body.len() > MAX_KEY_CHARS {
        return Err(KeyError::Base58);
    }
    bs58::decode(body).into_vec().map_err(|_| KeyError::Base58)
}

impl PublicKey {
    pub fn curve(&self) -> Curve {
        match self {
            PublicKey::K256(_) => Curve::K256,
            PublicKey::P256(_) => Curve::P256,
        }
    }

    /// From SEC1 bytes (compressed or uncompressed) of a known curve.
    pub fn from_sec1(curve: Curve, bytes: &[u8]) -> Result<PublicKey, KeyError> {
        match curve {
            Curve::K256 => secp256k1::PublicKey::from_slice(bytes).map(PublicKey::K256).map_err(|_| KeyError::Point),
            Curve::P256 => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map(PublicKey::P256).map_err(|_| KeyError::Point)
            }
        }
    }

    /// From a Multikey (`z…`: base58btc of a multicodec prefix and the
    /// compressed point), the form in current DID documents.
    pub fn from_multikey(s: &str) -> Result<PublicKey, KeyError> {
        let b = base58(s)?;
        if let Some(point) = b.strip_prefix(&K256_PREFIX) {
            Self::from_sec1(Curve::K256, point)
        } else if let Some(point) = b.strip_prefix(&P256_PREFIX) {
            Self::from_sec1(Curve::P256, point)
        } else {
            Err(KeyError::UnknownCodec)
        }
    }

    /// From `did:key:z…`.
    pub fn from_did_key(s: &str) -> Result<PublicKey, KeyError> {
        Self::from_multikey(s.strip_prefix("did:key:").ok_or(KeyError::NotDidKey)?)
    }

    /// From a legacy DID document verification method: `type`
    /// `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
    /// and `publicKeyMultibase` of the uncompressed point with no prefix.
    pub fn from_legacy(kind: &str, multibase: &str) -> Result<PublicKey, KeyError> {
        let curve = match kind {
            "EcdsaSecp256k1VerificationKey2019" => Curve::K256,
            "EcdsaSecp256r1VerificationKey2019" => Curve::P256,
            _ => return Err(KeyError::UnknownCodec),
        };
        Self::from_sec1(curve, &base58(multibase)?)
    }

    /// The Multikey form (`zQ3s…` for k256, `zDna…` for p256).
    pub fn to_multikey(&self) -> String {
        let (prefix, point) = match self {
            PublicKey::K256(k) => (K256_PREFIX, k.serialize().to_vec()),
            PublicKey::P256(k) => (P256_PREFIX, k.to_encoded_point(true).as_bytes().to_vec()),
        };
        let mut b = prefix.to_vec();
        b.extend(point);
        format!("z{}", bs58::encode(b).into_string())
    }

    /// Verifies `sig` over the SHA-256 digest `prehash`.
    pub fn verify_prehash(&self, prehash: &[u8; 32], sig: &[u8]) -> Result<(), SigError> {
        if sig.len() != 64 {
            return Err(SigError::Length(sig.len()));
        }
        match self {
            PublicKey::K256(k) => {
                let s = secp256k1::ecdsa::Signature::from_compact(sig).map_err(|_| SigError::Malformed)?;
                let mut low = s;
                low.normalize_s();
                if low != s {
                    return Err(SigError::HighS);
                }
                SECP.verify_ecdsa(secp256k1::Message::from_digest(*prehash), &s, k).map_err(|_| SigError::Invalid)
            }
            PublicKey::P256(k) => {
                let s = p256::ecdsa::Signature::from_slice(sig).map_err(|_| SigError::Malformed)?;
                if s.normalize_s().is_some() {
                    return Err(SigError::HighS);
                }
                k.verify_prehash(prehash, &s).map_err(|_| SigError::Invalid)
            }
        }
    }

    /// Verifies `sig` over `msg` (hashed with SHA-256).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), SigError> {
        self.verify_prehash(&Sha256::digest(msg).into(), sig)
    }
}
