//! Repository data, pure: DAG-CBOR reading, binary CIDs, CAR slices.

pub mod car;
pub mod cbor;
pub mod cid;
pub mod commit;
