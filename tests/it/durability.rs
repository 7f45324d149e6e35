//! The journal's durability rule, measured: a call's intent is synced to disk before the call
//! reaches the API, also when the disk is slow, for the instance teardown and the disk
//! deletion alike; and the sync does not stall the runtime thread every request shares.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compshare_teardown::api::disk::DiskPage;
use compshare_teardown::api::{
    ApiError, Cloud, DescribePage, DescribeQuery, DiskCloud, DiskQuery, DiskTarget, State, Target, TerminateAck,
    describe_disks_all,
};
use compshare_teardown::sim::{Faults, Scenario, ScenarioDisk, SimHandle};
use compshare_teardown::workflow::disks::{DiskControls, DiskSettings, delete_disks};
use compshare_teardown::workflow::journal::{Entry, Journal};
use compshare_teardown::workflow::machine::Call;
use compshare_teardown::workflow::{self, Controls};

use crate::workflow::{settings, world};

/// The simulator, checking at each mutating call that the journal is synced through the end
/// of that call's intent line.
struct Witness {
    sim: SimHandle,
    path: std::path::PathBuf,
    synced: Arc<AtomicU64>,
    /// Calls that arrived before their intent was on disk, and calls checked.
    early: Mutex<Vec<String>>,
    checked: AtomicU64,
}

impl Witness {
    fn check(&self, id: &str, event: &str) {
        let text = std::fs::read(&self.path).unwrap();
        let needle = format!(r#""event":"{event}","id":"{id}""#);
        let mut end = 0;
        let mut at = 0;
        for line in text.split_inclusive(|b| *b == b'\n') {
            at += line.len();
            if String::from_utf8_lossy(line).contains(&needle) {
                end = at;
            }
        }
        assert!(end > 0, "no intent for {id} in the journal");
        self.checked.fetch_add(1, Ordering::SeqCst);
        if self.synced.load(Ordering::SeqCst) < end as u64 {
            self.early.lock().unwrap().push(id.to_owned());
        }
    }
}

impl Cloud for Witness {
    async fn describe(&self, q: &DescribeQuery) -> Result<DescribePage, ApiError> {
        self.sim.describe(q).await
    }
    async fn stop(&self, t: &Target, force: bool) -> Result<(), ApiError> {
        self.check(&t.uhost_id, "call");
        self.sim.stop(t, force).await
    }
    async fn terminate(&self, t: &Target, release: bool) -> Result<TerminateAck, ApiError> {
        self.check(&t.uhost_id, "call");
        self.sim.terminate(t, release).await
    }
}

impl DiskCloud for Witness {
    async fn describe_disks(&self, q: &DiskQuery) -> Result<DiskPage, ApiError> {
        self.sim.describe_disks(q).await
    }
    async fn delete_disk(&self, t: &DiskTarget) -> Result<(), ApiError> {
        self.check(&t.disk_id, "disk_call");
        self.sim.delete_disk(t).await
    }
}

/// A disk that takes 20 ms (real time) to sync: long enough that a call sent without waiting
/// for its intent's sync arrives first.
#[expect(
    clippy::disallowed_methods,
    reason = "a slow disk is real time on the syncing thread, off the paused runtime"
)]
fn slow_disk(journal: Journal) -> Journal {
    journal.before_sync(|| std::thread::sleep(Duration::from_millis(20)))
}

fn witness(sim: &SimHandle, path: &std::path::Path, journal: &Journal) -> Arc<Witness> {
    Arc::new(Witness {
        sim: sim.clone(),
        path: path.to_owned(),
        synced: journal.synced_bytes(),
        early: Mutex::new(Vec::new()),
        checked: AtomicU64::new(0),
    })
}

#[tokio::test(start_paused = true)]
async fn every_stop_and_terminate_leaves_after_its_intent_is_synced() {
    let sim = world(4, 51, Faults::default());
    let ids = sim.ids();
    for id in &ids {
        sim.set_state(id, State::Running);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let journal = slow_disk(Journal::open(&path).unwrap());
    let cloud = witness(&sim, &path, &journal);
    let ctl = Controls {
        journal: Some(journal),
        ..Controls::default()
    };
    let report = workflow::run(Arc::clone(&cloud), ids.clone(), settings(), ctl).await;
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(cloud.checked.load(Ordering::SeqCst), 8, "a Stop and a Terminate each");
    assert_eq!(
        *cloud.early.lock().unwrap(),
        Vec::<String>::new(),
        "sent before the intent was on disk"
    );
}

#[tokio::test(start_paused = true)]
async fn every_disk_delete_leaves_after_its_intent_is_synced() {
    let mut s = Scenario::generated(1, 52);
    s.disks = (1..=4)
        .map(|n| ScenarioDisk {
            disk_id: format!("bsi-d{n}"),
            name: format!("d{n}"),
            size_gb: 10,
            zone: "cn-wlcb-01".into(),
            ..ScenarioDisk::default()
        })
        .collect();
    let sim = SimHandle::new(s);
    let rows: Vec<_> = describe_disks_all(&sim, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.disk_id.starts_with("bsi-d"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let journal = slow_disk(Journal::open(&path).unwrap());
    let cloud = witness(&sim, &path, &journal);
    let ctl = DiskControls {
        journal: Some(journal),
        ..DiskControls::default()
    };
    let settings = DiskSettings {
        rate: 0,
        jitter_seed: Some(1),
        ..DiskSettings::default()
    };
    let report = delete_disks(Arc::clone(&cloud), rows, settings, ctl).await;
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(cloud.checked.load(Ordering::SeqCst), 4);
    assert_eq!(
        *cloud.early.lock().unwrap(),
        Vec::<String>::new(),
        "sent before the intent was on disk"
    );
}

/// While a call's intent is being synced, the runtime thread goes on: here a task on it must
/// run for the sync to finish at all (the sync waits up to 5 s for it), which it cannot if
/// the sync blocks that thread.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_sync_does_not_stall_the_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let stalled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stalled);
    let mut journal = Journal::open(&path).unwrap().before_sync(move || {
        if rx.lock().unwrap().recv_timeout(Duration::from_secs(5)).is_err() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let synced_bytes = journal.synced_bytes();
    let synced = journal
        .write_intent(&Entry::Call {
            id: "uhost-a".into(),
            call: Call::Stop,
            region: "cn-wlcb".into(),
            zone: "cn-wlcb-01".into(),
        })
        .unwrap();
    tokio::spawn(async move { tx.send(()).unwrap() }).await.unwrap();
    synced.wait().await.unwrap();
    assert!(!stalled.load(Ordering::SeqCst), "the sync held the runtime thread");
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(synced_bytes.load(Ordering::SeqCst), len, "synced through the intent");
}
