//! Identity: who an account is, where it is hosted and which key signs for
//! it. `crypto` parses atproto public keys and verifies signatures; `did`
//! reads DID documents;
//! `verify` checks commit signatures on a worker pool; `resolve` resolves
//! DIDs on demand, off the ingest path.

pub mod crypto;
pub mod did;
pub mod handle;
pub mod resolve;
pub mod verify;
