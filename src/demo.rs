//! The `demo` command (a whole teardown against an embedded simulator, the README's first
//! command) and the `sim` command (serve a simulator for rehearsals).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::{Client, ClientConfig};
use crate::app::{Exit, Failure};
use crate::cli::{GlobalArgs, OutputFormat, SimArgs};
use crate::credentials::Credentials;
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
        ..Faults::default()
    };
    // A modest account rate limit, which the default pace must find by itself.
    s.rate_limit_per_sec = DEMO_RATE_LIMIT;
    s.rate_limit_burst = DEMO_RATE_LIMIT / 2;
    s
}

/// The demo gateway's requests per second (per key).
pub const DEMO_RATE_LIMIT: u32 = 20;

/// Settings for the demo: the real defaults (the pace included), with a shorter poll interval
/// to match the scaled world, which also deletes an instance in half a second: a lost
/// Terminate answer need not wait the production minute before Terminate is tried again.
pub fn demo_settings() -> Settings {
    Settings {
        poll_interval: Duration::from_secs(1),
        terminate_settle: Duration::from_secs(5),
        ..Settings::default()
    }
}

pub(crate) async fn run(
    ctx_output: OutputFormat,
    multi: &indicatif::MultiProgress,
    instances: usize,
    seed: u64,
) -> Result<Exit, Failure> {
    let handle = SimHandle::new(demo_scenario(instances, seed));
    let server =
        Server::start(handle.clone(), ([127, 0, 0, 1], 0).into()).context("cannot start the demo simulator")?;
    tracing::info!("demo simulator at {}", server.url);
    let creds = Credentials {
        public_key: handle.public_key(),
        private_key: handle.private_key(),
        source: "demo simulator".into(),
    };
    let client = Client::new(ClientConfig::new(server.url.clone(), creds)).context("cannot build the HTTP client")?;
    let before = handle.snapshot();
    let ids: Vec<String> = handle.ids();
    let _ = writeln_stderr(&format!(
        "demo: tearing down {} simulated instances ({} locked by another operation, faults on, \
         {DEMO_RATE_LIMIT} requests/s allowed) at {}",
        ids.len(),
        before.locks.len(),
        server.url
    ));
    let bars = crate::app::BarsHandle::new(multi, ids.len());
    let cancel = CancellationToken::new();
    crate::app::spawn_signal_handler(cancel.clone());
    let ctl = Controls {
        observer: Box::new(bars.clone()),
        cancel,
        ..Controls::default()
    };
    let report = workflow::run(Arc::new(client), ids, demo_settings(), ctl).await;
    bars.finish();
    let after = handle.snapshot();
    match ctx_output {
        OutputFormat::Json => crate::app::print(&crate::app::json(&report)),
        OutputFormat::Table => {
            crate::app::print(&crate::output::report_table(&report));
            crate::app::print(&format!(
                "simulator check: {} instance(s) left, {} violation(s), {} API calls, {} orphan data disk(s) kept (no --release-udisk)\n",
                after.instances.len(),
                after.violations.len(),
                after.calls.len(),
                after.orphan_disks.len()
            ));
        }
    }
    Ok(crate::app::exit_for(&report))
}

fn writeln_stderr(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{text}")
}

/// `compshare-teardown sim`: serve until Ctrl-C.
pub(crate) async fn serve(global: &GlobalArgs, a: SimArgs) -> Result<Exit, Failure> {
    let mut scenario = match &a.scenario {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read scenario {}", path.display()))?;
            Scenario::from_json(&text).with_context(|| format!("scenario {}", path.display()))?
        }
        None => {
            let mut s = Scenario::generated(a.instances, a.seed);
            s.time_scale = a.time_scale;
            s
        }
    };
    if let Some(k) = &global.public_key {
        scenario.public_key.clone_from(k);
    }
    if let Some(k) = &global.private_key {
        scenario.private_key = k.expose().to_owned();
    }
    scenario.validate().context("invalid simulator settings")?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    // Listening on every address (0.0.0.0, ::): the client reaches it on loopback, the only
    // plain-http host it accepts.
    let mut local = addr;
    if addr.ip().is_unspecified() {
        local.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let handle = SimHandle::new(scenario);
    crate::app::print(&format!(
        "CompShare simulator listening on http://{addr}/ ({} instances)\n\
         export COMPSHARE_BASE_URL=http://{local}/\n\
         export COMPSHARE_PUBLIC_KEY={}\n\
         export COMPSHARE_PRIVATE_KEY={}\n\
         state: http://{addr}/_sim/state — Ctrl-C to stop\n",
        handle.ids().len(),
        handle.public_key(),
        handle.private_key().expose(),
    ));
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crate::sim::serve(listener, handle, shutdown)
        .await
        .context("simulator failed")?;
    Ok(Exit::Ok)
}
