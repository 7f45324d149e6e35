//! The figures a sweep adds up over its seeds ([`Stats`]): worlds, calls, faults, kills,
//! races, exits and disk passes, as the summary prints them.

use std::time::Duration;

/// Figures of one seed's world and run (summed over a sweep).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub seeds: u64,
    pub instances: u64,
    pub selected: u64,
    /// Calls the simulator received.
    pub calls: u64,
    /// Calls that met an injected fault (`fault` set in the call record).
    pub faults: u64,
    /// Rows left out of Describe answers (`drop_row`) and answers without `TotalCount`.
    pub eventual: u64,
    pub kills: u64,
    pub resumes: u64,
    /// Terminate races the simulator listed (not violations).
    pub races: u64,
    /// Calls that reached an instance someone else had just deleted (races, not failures).
    pub after_delete: u64,
    /// `run --all` worlds whose listing could not be read completely (exit 4, nothing sent).
    pub listings_refused: u64,
    /// Runs by exit code: 0, 1, 130.
    pub exit_ok: u64,
    pub exit_failed: u64,
    pub exit_interrupted: u64,
    /// Virtual time the worlds ran for.
    pub virtual_time: Duration,
    /// Disks handed to the disk pass, Deletes the simulator accepted, and Deletes it answered
    /// 8434 ("still detaching").
    pub disks_selected: u64,
    pub disks_deleted: u64,
    pub disk_8434: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.instances += o.instances;
        self.selected += o.selected;
        self.calls += o.calls;
        self.faults += o.faults;
        self.eventual += o.eventual;
        self.kills += o.kills;
        self.resumes += o.resumes;
        self.races += o.races;
        self.after_delete += o.after_delete;
        self.listings_refused += o.listings_refused;
        self.exit_ok += o.exit_ok;
        self.exit_failed += o.exit_failed;
        self.exit_interrupted += o.exit_interrupted;
        self.virtual_time += o.virtual_time;
        self.disks_selected += o.disks_selected;
        self.disks_deleted += o.disks_deleted;
        self.disk_8434 += o.disk_8434;
    }
}
