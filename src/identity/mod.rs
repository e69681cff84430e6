//! Identity: who an account is and which key signs for it. `crypto` parses
//! atproto public keys and verifies commit signatures.

pub mod crypto;
