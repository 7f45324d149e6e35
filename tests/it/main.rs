//! Integration tests.

mod sim_http;
