//! compshare-teardown: safely tear down batches of UCloud CompShare GPU instances.
//!
//! Module map:
//! - [`api`]: signing, wire model, errors and their retry classes, the HTTP client.
//! - [`credentials`]: where keys and the endpoint come from; the redacting key type.
//! - [`sim`]: a faithful CompShare simulator (HTTP server and in-memory world).

pub mod api;
pub mod credentials;
pub mod sim;
