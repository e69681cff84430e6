//! Keys and signatures against the official interop vectors
//! (`tests/fixtures/crypto/`), and commit signatures of real relay frames
//! against the DID documents captured with them.

mod common;

use base64::Engine;
use instancemap::firehose::frame::{self, Frame, Verify};
use instancemap::identity::crypto::{PublicKey, SigError};
use instancemap::repo::commit::unsigned_digest;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('=')).unwrap()
}

#[test]
fn signature_fixtures() {
    let cases = common::json("crypto/signature-fixtures.json");
    let mut checked = 0;
    for c in cases.as_array().unwrap() {
        let msg = b64(c["messageBase64"].as_str().unwrap());
        let sig = b64(c["signatureBase64"].as_str().unwrap());
        let key = PublicKey::from_did_key(c["publicKeyDid"].as_str().unwrap()).unwrap();
        let legacy =
            PublicKey::from_legacy(c["didDocSuite"].as_str().unwrap(), c["publicKeyMultibase"].as_str().unwrap())
                .unwrap();
        assert_eq!(key, legacy, "{}", c["comment"]);
        let got = key.verify(&msg, &sig);
        let tags: Vec<&str> = c["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        if c["validSignature"].as_bool().unwrap() {
            assert_eq!(got, Ok(()), "{}", c["comment"]);
        } else {
            assert!(got.is_err(), "{}", c["comment"]);
            if tags.contains(&"high-s") {
                assert_eq!(got, Err(SigError::HighS), "{}", c["comment"]);
            }
            if tags.contains(&"der-encoded") {
                assert!(matches!(got, Err(SigError::Length(_))), "{}", c["comment"]);
            }
        }
        checked += 1;
    }
    assert!(checked >= 6);
}

#[test]
fn did_keys_round_trip() {
    for f in ["crypto/w3c_didkey_K256.json", "crypto/w3c_didkey_P256.json"] {
        for c in common::json(f).as_array().unwrap() {
            let did = c["publicDidKey"].as_str().unwrap();
            let key = PublicKey::from_did_key(did).unwrap();
            assert_eq!(format!("did:key:{}", key.to_multikey()), did);
        }
    }
}

#[test]
fn real_commit_signatures_verify_against_their_did_documents() {
    let docs = common::json("jetstream/did_docs.json");
    let mut verified = 0;
    for bytes in common::jetstream_frames() {
        let Ok(Frame::Commit(c)) = frame::decode(&bytes, Verify::All) else { continue };
        let doc = &docs[c.repo];
        let vm = doc["verificationMethod"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"].as_str().unwrap().ends_with("#atproto"))
            .unwrap();
        let key = PublicKey::from_multikey(vm["publicKeyMultibase"].as_str().unwrap()).unwrap();
        let block = c.blocks.get(c.commit).unwrap();
        let (digest, sig) = unsigned_digest(block).unwrap();
        assert_eq!(sig, c.object.sig);
        key.verify_prehash(&digest, sig).unwrap_or_else(|e| panic!("{}: {e}", c.repo));
        // and a flipped digest bit fails
        let mut bad = digest;
        bad[0] ^= 1;
        assert_eq!(key.verify_prehash(&bad, sig), Err(SigError::Invalid));
        verified += 1;
    }
    assert_eq!(verified, 148);
}
