//! Commeow Edge daemon (`commeowd`): RTMP in, HLS out, on a box at the venue.
//!
//! The modules follow the data: [`ingest`] (RTMP from OBS) → [`media`] (libav, one thread
//! per broadcast) → [`hls`] (segments in memory, playlists) → [`http`] (players, API, chat
//! sockets). [`chat`] keeps each channel's room; [`auth`] issues and checks tokens and
//! hashes passwords on bounded threads; [`payments`] verifies Kakao Pay top-ups. The
//! [`store`] holds accounts, channels, the points ledger and its outbox in SQLite, behind
//! one writer thread. [`daemon`] wires them together and runs them; [`cli`] is the
//! operator's side, and `main.rs` only parses flags and calls [`cli::main`].
//!
//! Imports point one way, down this table: a module uses only modules of lower layers
//! (`tests/layers.rs` reads this table and fails the build on an import that points up).
//!
//! | layer | modules | role |
//! |---|---|---|
//! | 0 | `text`, `throttle`, `config` | foundations: what names and messages may hold, the failure throttle, settings |
//! | 1 | `store`, `obs`, `system` | SQLite behind one writer thread (accounts, channels, ledger, outbox, orders; it is handed a `store::Progress` rather than knowing the watchdog); what OBS is told to connect to; systemd and the progress watch every long-running thread reports to |
//! | 2 | `console` | the venue operator's actions (roles, accounts, grants, channels, Kakao Pay and settings), one function each for the console's API, the CLI and fleet commands |
//! | 3 | `auth`, `hls`, `fleet` | tokens and passwords; segments, renditions and playlists in memory; the outbox relayed to the central service over MQTT |
//! | 4 | `chat`, `payments`, `media` | chat rooms; Kakao Pay verification; the libav pipeline and the transcoding ladder |
//! | 5 | `ingest`, `donations`, `webrtc` | RTMP connections, stream keys, FLV tags into the pipeline; the rules of a donation; WebRTC viewers (WHEP) on one UDP port |
//! | 6 | `http` | players, the JSON API, chat sockets, the web app, the venue's console |
//! | 7 | `daemon` | everything wired, run until shutdown |
//! | 8 | `cli` | the operator's commands |

pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod donations;
pub mod fleet;
pub mod hls;
pub mod http;
pub mod ingest;
pub mod media;
pub mod obs;
pub mod payments;
pub mod store;
pub mod system;
pub mod text;
pub mod throttle;
pub mod webrtc;
