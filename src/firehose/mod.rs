//! The firehose source: `subscribeRepos` frames in, decoded frames out.
//! `frame` is pure decoding; `subscribe` is the live socket with reconnect;
//! `framelog` reads and writes recorded frame files for `record`/`replay`.

pub mod frame;
pub mod framelog;
pub mod subscribe;
