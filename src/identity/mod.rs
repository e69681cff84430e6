//! Identity: who an account is, where it is hosted and which key signs for
//! it. `crypto` parses atproto public keys and verifies signatures; `did`
//! reads DID documents.

pub mod crypto;
pub mod did;
