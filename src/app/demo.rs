//! `demo`: a whole teardown against a simulator started in-process, the README's first
//! command: the same driver, bars and report as `run`, with a check of the world afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::terminal::{BarsHandle, json, print, spawn_signal_handler};
use super::{CmdResult, Ctx, Exit, exit_for};
use crate::api::{Client, ClientConfig};
use crate::credentials::Credentials;
use crate::output::{self, OutputFormat};
use crate::sim::{Faults, Scenario, Server, SimHandle};
use crate::workflow::{self, Controls, Settings};

/// The demo world: a realistic batch, scaled so the whole run takes a few tens of seconds.
pub fn demo_scenario(instances: usize, seed: u64) -> Scenario {
    let mut s = Scenario::generated(instances, seed);
    // 0.01: the 10-minute lock TTL becomes 6 s.
    s.time_scale = 0.01;
    // Nominal 100 s stop and 50 s terminate (big GPU hosts) become 1 s and 0.5 s.
    s.latency.stop_secs = 100.0;
    s.latency.terminate_secs = 50.0;
    s.latency.jitter = 0.3;
    if let Some(g) = s.generate.as_mut() {
        g.locked_fraction = 0.08;
    }
    s.faults = Faults {
        http_502: 0.02,
        http_503: 0.01,
        drop: 0.01,
        lost_response: 0.03,
        throttle: 0.02,
        restart: 0.05,
        // Someone else restarts a stopped instance 3 s later (300 s nominal), as a person or
        // a scheduler would: not within milliseconds.
        restart_after_secs: 300.0,
        // An eventually consistent gateway: now and then an answer misses a row that exists,
        // or lacks `TotalCount`. Low rates, as a healthy gateway would show.
        drop_row: 0.02,
        omit_total_count: 0.05,
        // The gateway's rougher edges, mildly: a Stop or Terminate done and then answered
        // 502 (the engine must look before any resend), and rows that never say `Region`.
        applied_then_502: 0.02,
        omit_region: 0.2,
        ..Faults::default()
    };
    // A modest account rate limit, which the default pace must find by itself.
    s.rate_limit_per_sec = f64::from(DEMO_RATE_LIMIT);
    s.rate_limit_burst = DEMO_RATE_LIMIT / 2;
    s
}

/// The demo gateway's requests per second (per key).
const DEMO_RATE_LIMIT: u32 = 20;

/// Settings for the demo: the real defaults (the pace included), with a shorter poll interval
/// to match the scaled world, which also deletes an instance in half a second: a lost
/// Terminate answer need not wait the production minute before Terminate is tried again.
fn demo_settings() -> Settings {
    Settings {
        poll_interval: Duration::from_secs(1),
        terminate_settle: Duration::from_secs(5),
        ..Settings::default()
    }
}

impl Ctx {
    pub(super) async fn demo(&self, instances: usize, seed: u64, listen: Option<SocketAddr>) -> CmdResult<Exit> {
        let handle = SimHandle::new(demo_scenario(instances, seed));
        // Loopback on a free port unless asked: the client accepts plain http only there.
        let addr = listen.unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let server = Server::start(handle.clone(), addr)
            .with_context(|| format!("cannot start the demo simulator on {addr}"))?;
        tracing::info!("demo simulator at {}", server.url);
        let creds = Credentials {
            public_key: handle.public_key(),
            private_key: handle.private_key(),
            source: "demo simulator".into(),
        };
        let client =
            Client::new(ClientConfig::new(server.url.clone(), creds)).context("cannot build the HTTP client")?;
        let before = handle.snapshot();
        let ids: Vec<String> = handle.ids();
        let _ = writeln_stderr(&format!(
            "demo: tearing down {} simulated instances ({} locked by another operation, faults on, \
             {DEMO_RATE_LIMIT} requests/s allowed) at {}",
            ids.len(),
            before.locks.len(),
            server.url
        ));
        let bars = BarsHandle::new(&self.multi, ids.len());
        let cancel = CancellationToken::new();
        spawn_signal_handler(cancel.clone());
        let ctl = Controls {
            observer: Box::new(bars.clone()),
            cancel,
            ..Controls::default()
        };
        let report = workflow::run(Arc::new(client), ids, demo_settings(), ctl).await;
        super::terminal::drained();
        bars.finish();
        let after = handle.snapshot();
        match self.output() {
            OutputFormat::Json => print(&json(&report)),
            OutputFormat::Table => {
                print(&output::report_table(&report));
                print(&format!(
                    "simulator check: {} instance(s) left, {} violation(s), {} API calls, {} orphan data disk(s) kept (no --release-udisk)\n",
                    after.instances.len(),
                    after.violations.len(),
                    after.calls.len(),
                    after.orphan_disks.len()
                ));
            }
        }
        if listen.is_some() {
            // The world stays up with what the teardown kept, for the disk commands. Where
            // to reach it goes to stderr when stdout carries JSON.
            let text = format!(
                "The demo's simulator keeps serving at {url} until Ctrl-C. In another terminal:\n  \
                 export COMPSHARE_BASE_URL={url} COMPSHARE_PUBLIC_KEY={public} COMPSHARE_PRIVATE_KEY={private}\n  \
                 compshare-teardown disks list --detached\n  \
                 compshare-teardown disks delete --all-detached --yes\n",
                url = server.url,
                public = handle.public_key(),
                // The simulator's own made-up key, not a secret.
                private = handle.private_key().expose(),
            );
            match self.output() {
                OutputFormat::Json => {
                    let _ = writeln_stderr(text.trim_end());
                }
                OutputFormat::Table => print(&text),
            }
            let _ = tokio::signal::ctrl_c().await;
        }
        drop(server);
        Ok(exit_for(&report))
    }
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{text}")
}
