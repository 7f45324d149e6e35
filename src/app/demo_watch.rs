//! `demo --scheduled`: the scheduled job against a simulator started in-process, over HTTP,
//! for six simulated hours with a run every 15 simulated minutes (a few seconds each): GPU
//! instances that are busy, idle, pausing between epochs, going idle later or coming back,
//! data disks the teardowns leave behind and one left from an earlier run (watched as
//! `watch --disks` does, with a one-hour window instead of the default week), a state store
//! in memory, and a local webhook receiver that prints each notice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use super::terminal::{json as to_json, print};
use super::{CmdResult, Ctx, Exit};
use crate::api::{self, Client, ClientConfig};
use crate::credentials::{Account, Credentials};
use crate::monitor::IdleRule;
use crate::notice::{NoticeConfig, Notifier};
use crate::output::{self, OutputFormat};
use crate::schedule::{self, Action};
use crate::selection::{self, Filters, Protections, Verdict};
use crate::sim::{GpuLoad, Scenario, ScenarioDisk, ScenarioInstance, Server, SimHandle};
use crate::state::Store;
use crate::workflow::disks::DiskSettings;
use crate::workflow::{Controls, Settings};

/// 1/1000: a simulated hour takes 3.6 s, a 15-minute step 0.9 s.
const SCALE: f64 = 0.001;
/// Simulated hours the demo covers: the 2-hour idle window plus the 1-hour grace, twice over.
const HOURS: u32 = 6;
/// The demo's disk window: an hour, so the disks its teardowns leave are deleted within the
/// demo's six hours (`watch --disks` waits a week by default).
const DISK_WINDOW: Duration = Duration::from_secs(3600);

fn demo_world() -> Result<Scenario, anyhow::Error> {
    let now = super::now_unix();
    let epochs = GpuLoad::Epochs {
        busy_secs: 2400.0,
        pause_secs: 900.0,
        release_memory: false,
    };
    let rows: Vec<(&str, i64, GpuLoad)> = vec![
        ("uhost-train-a", 8, GpuLoad::Busy),
        ("uhost-train-b", 4, epochs),
        ("uhost-notebook-1", 1, GpuLoad::Idle),
        ("uhost-notebook-2", 1, GpuLoad::Idle),
        ("uhost-forgotten", 2, GpuLoad::Idle),
        ("uhost-finishing", 2, GpuLoad::IdleAfter { secs: 3600.0 }),
        ("uhost-coming-back", 1, GpuLoad::BusyAfter { secs: 5400.0 }),
        ("uhost-no-agent", 1, GpuLoad::NoData),
    ];
    let mut instances = Vec::new();
    for (id, gpus, load) in rows {
        // Each box has a boot disk and a 500 GB data disk, which a default teardown keeps.
        let data = format!("bsi-{}", id.trim_start_matches("uhost-"));
        let mut r: ScenarioInstance = serde_json::from_value(json!({
            "UHostId": id, "Name": id, "State": "Running", "Region": "cn-wlcb", "Zone": "cn-wlcb-01",
            "GPU": gpus, "GpuType": "4090", "CreateTime": now - 86_400, "InstancePrice": 1.9 * f64::from(u8::try_from(gpus).unwrap_or(1)),
            "DiskSet": [
                {"DiskId": format!("{id}-boot"), "DiskType": "CLOUD_SSD", "IsBoot": "True", "Size": 100},
                {"DiskId": data, "Name": format!("data-{}", id.trim_start_matches("uhost-")), "DiskType": "CLOUD_SSD", "IsBoot": "False", "Size": 500},
            ],
        }))?;
        r.gpu_load = Some(load);
        instances.push(r);
    }
    // Left from an earlier run, attached to nothing since.
    let disks = vec![ScenarioDisk {
        disk_id: "bsi-last-week".into(),
        name: "data-last-week".into(),
        size_gb: 1000,
        zone: "cn-wlcb-01".into(),
        region: String::new(),
        disk_type: "CLOUD_SSD".into(),
        protected: false,
    }];
    let s = Scenario {
        epoch: Some(now),
        time_scale: SCALE,
        instances,
        disks,
        ..Scenario::default()
    };
    s.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(s)
}

impl Ctx {
    pub(super) async fn demo_scheduled(&self) -> CmdResult<Exit> {
        let handle = SimHandle::new(demo_world()?);
        let server =
            Server::start(handle.clone(), ([127, 0, 0, 1], 0).into()).context("cannot start the demo simulator")?;
        let creds = Credentials {
            public_key: handle.public_key(),
            private_key: handle.private_key(),
            source: "demo simulator".into(),
        };
        let account = Account::new(&server.url, None, &creds.public_key);
        let client = Arc::new(
            Client::new(ClientConfig::new(server.url.clone(), creds)).context("cannot build the HTTP client")?,
        );
        let (hook, received) = receiver().await?;
        let notifier =
            Notifier::new(NoticeConfig::new(Some(&hook), None, Duration::from_secs(5)).map_err(|e| anyhow!("{e}"))?);
        let mut store = Store::in_memory(&account).map_err(|e| anyhow!("{e}"))?;
        let cfg = schedule::Config {
            rule: IdleRule::default(),
            grace: crate::defaults::GRACE,
            action: Action::Terminate,
            hours: None,
            max_count: crate::defaults::MAX_COUNT,
            settings: Settings {
                poll_interval: Duration::from_millis(500),
                terminate_settle: Duration::from_secs(5),
                ..Settings::default()
            },
            notice_deadline: Duration::from_secs(10),
            account: account.slug(),
            dry_run: false,
        };
        eprintln!(
            "demo: the scheduled job every 15 simulated minutes for {HOURS} hours over {} GPU instances \
             (idle = every GPU at or under 5% for 2h; grace 1h) and their data disks (deleted after \
             1h attached to nothing, then the grace); notices go to a local webhook",
            handle.ids().len()
        );
        let start = handle.unix_now();
        let began = tokio::time::Instant::now();
        let step = Duration::from_secs_f64(900.0 * SCALE);
        for k in 1..=HOURS * 4 {
            let now = handle.unix_now();
            let targets = targets(client.as_ref(), now).await?;
            let r = schedule::run_once(
                client.clone(),
                &mut store,
                Some(&notifier),
                &cfg,
                now,
                targets,
                Controls::default(),
            )
            .await
            .map_err(|e| anyhow!("{e}"))?;
            let clock = format!("+{}h{:02}", (now - start) / 3600, (now - start) % 3600 / 60);
            for line in received.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default() {
                eprintln!("{clock}  notice: {line}");
            }
            if r.marked + r.unmarked + r.acted == 0 {
                eprintln!(
                    "{clock}  {} instance(s) and {} detached disk(s) looked at, nothing to do",
                    r.entries.len(),
                    r.disks.len()
                );
            }
            // Runs start on a fixed schedule, not a step after the last one ended: on a busy
            // machine each run's own time would otherwise push every later look later in
            // simulated time, and the demo's story (what is idle when) rests on when they fall.
            tokio::time::sleep_until(began + step * k).await;
        }
        let history = store.history(0).map_err(|e| anyhow!("{e}"))?;
        let after = handle.snapshot();
        match self.output() {
            OutputFormat::Json => print(&to_json(&history)),
            OutputFormat::Table => {
                print(&output::history_table(&history));
                print(&format!(
                    "simulator check: {} instance(s) left ({}), {} violation(s)\n",
                    after.instances.len(),
                    handle.ids().join(", "),
                    after.violations.len()
                ));
            }
        }
        Ok(if after.violations.is_empty() {
            Exit::Ok
        } else {
            Exit::Failed
        })
    }
}

/// What a run looks at: every instance, every disk (the demo protects nothing).
async fn targets(client: &Client, now: i64) -> Result<schedule::Targets, anyhow::Error> {
    let rows = api::describe_all(client, None, None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let disks = api::describe_disks_all(client, None)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(schedule::Targets {
        instances: selection::select(rows, None, &Filters::default(), &Protections::default(), now),
        disks: Some(schedule::Disks {
            rows: disks.into_iter().map(|r| (r, Verdict::Act)).collect(),
            detached_for: DISK_WINDOW,
            settings: DiskSettings {
                poll_interval: Duration::from_millis(500),
                ..DiskSettings::default()
            },
            guard: None,
        }),
    })
}

/// A local webhook receiver: each notice's `text`, for the demo to print.
async fn receiver() -> Result<(String, Arc<Mutex<Vec<String>>>), anyhow::Error> {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
                if let Ok(mut v) = sink.lock() {
                    v.push(crate::output::printable(text).into_owned());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook"), got))
}
