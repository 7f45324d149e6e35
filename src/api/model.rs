//! The wire model: instance rows, states and typed responses.
//!
//! Parsing is lenient on purpose, matching what the real gateway has been seen to send:
//! numbers may arrive as numeric strings, lists may be `null`, fields may be missing, unknown
//! fields are ignored, and `State` may hold values no document lists (`Install Fail` has a
//! space; the web docs also mention `Install`). Rows serialize back with the real field names,
//! which is how the simulator answers.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lenient;

/// An instance state as reported by `DescribeCompShareInstance`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    Initializing,
    Starting,
    Running,
    Stopping,
    Stopped,
    /// `Install Fail` on the wire.
    InstallFail,
    Rebooting,
    Resizing,
    /// Anything else, including `""` ("unknown: fetching the state timed out or failed").
    Unknown(String),
}

impl State {
    /// The exact wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            State::Initializing => "Initializing",
            State::Starting => "Starting",
            State::Running => "Running",
            State::Stopping => "Stopping",
            State::Stopped => "Stopped",
            State::InstallFail => "Install Fail",
            State::Rebooting => "Rebooting",
            State::Resizing => "Resizing",
            State::Unknown(s) => s,
        }
    }

    /// Parse the wire spelling; never fails.
    pub fn parse(s: &str) -> State {
        match s {
            "Initializing" => State::Initializing,
            "Starting" => State::Starting,
            "Running" => State::Running,
            "Stopping" => State::Stopping,
            "Stopped" => State::Stopped,
            "Install Fail" => State::InstallFail,
            "Rebooting" => State::Rebooting,
            "Resizing" => State::Resizing,
            other => State::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Unknown(s) if s.is_empty() => f.write_str("(unknown)"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for State {
    /// A string or `null` (the empty `Unknown`), read without a copy of the text: every look
    /// reads one per row.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(StateText)
    }
}

/// [`State`]'s visitor: a string, or `null`; anything else is an error, as for a `String`.
struct StateText;

impl<'de> serde::de::Visitor<'de> for StateText {
    type Value = State;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<State, E> {
        Ok(State::parse(v))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<State, E> {
        Ok(State::default())
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<State, E> {
        Ok(State::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<State, D::Error> {
        d.deserialize_str(StateText)
    }
}

impl Default for State {
    fn default() -> Self {
        State::Unknown(String::new())
    }
}

/// One disk of an instance (`UHostDiskSet`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Disk {
    #[serde(deserialize_with = "lenient::string")]
    pub disk_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub disk_type: String,
    /// `"True"`/`"False"` as a string on the wire.
    #[serde(deserialize_with = "lenient::string")]
    pub is_boot: String,
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub size: i64,
    #[serde(deserialize_with = "lenient::string")]
    pub r#type: String,
}

impl Disk {
    /// Data disks are the ones `ReleaseUDisk` decides about; the boot disk always goes.
    pub(crate) fn is_data(&self) -> bool {
        !self.is_boot.eq_ignore_ascii_case("true")
    }
}

/// One address of an instance (`UHostIPSet`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ip {
    #[serde(rename = "IP", deserialize_with = "lenient::string")]
    pub ip: String,
    #[serde(rename = "IPMode", deserialize_with = "lenient::string")]
    pub ip_mode: String,
    #[serde(deserialize_with = "lenient::string")]
    pub r#type: String,
    #[serde(deserialize_with = "lenient::i64")]
    pub bandwidth: i64,
}

/// One row of `UHostSet` (`CompShareInstanceSet`), limited to the fields the tool uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    #[serde(rename = "UHostId", deserialize_with = "lenient::string")]
    pub uhost_id: String,
    #[serde(rename = "Name", deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(rename = "State")]
    pub state: State,
    #[serde(rename = "Region", deserialize_with = "lenient::string")]
    pub region: String,
    #[serde(rename = "Zone", deserialize_with = "lenient::string")]
    pub zone: String,
    #[serde(rename = "Tag", deserialize_with = "lenient::string")]
    pub tag: String,
    #[serde(rename = "Remark", deserialize_with = "lenient::string")]
    pub remark: String,
    /// Unix seconds.
    #[serde(rename = "CreateTime", deserialize_with = "lenient::i64")]
    pub create_time: i64,
    /// `Year`, `Month`, `Day`, `Dynamic`, `Postpay` or `Spot`.
    #[serde(rename = "ChargeType", deserialize_with = "lenient::string")]
    pub charge_type: String,
    #[serde(rename = "GPU", deserialize_with = "lenient::i64")]
    pub gpu: i64,
    #[serde(rename = "GpuType", deserialize_with = "lenient::string")]
    pub gpu_type: String,
    #[serde(rename = "CPU", deserialize_with = "lenient::i64")]
    pub cpu: i64,
    /// MB.
    #[serde(rename = "Memory", deserialize_with = "lenient::i64")]
    pub memory: i64,
    /// `UHost` (VM) or `Container`.
    #[serde(rename = "InstanceType", deserialize_with = "lenient::string")]
    pub instance_type: String,
    /// Price per hour of the host, where the API reports it.
    #[serde(rename = "InstancePrice", deserialize_with = "lenient::f64")]
    pub instance_price: f64,
    #[serde(rename = "DiskSet", deserialize_with = "lenient::list")]
    pub disk_set: Vec<Disk>,
    #[serde(rename = "IPSet", deserialize_with = "lenient::list")]
    pub ip_set: Vec<Ip>,
    #[serde(rename = "UpdateTime", deserialize_with = "lenient::i64")]
    pub update_time: i64,
}

impl Instance {
    /// Spot (preemptible) instances cannot be stopped without `Force=true`.
    pub(crate) fn is_spot(&self) -> bool {
        self.charge_type.eq_ignore_ascii_case("spot")
    }

    /// Where the instance lives: the one rule that selection, scope checks and the engine
    /// share. `Region` is not in the SDKs' row model (the docs list it, and the gateway has
    /// been seen to send it, and to leave it out); without it the zone names it, since UCloud
    /// zones are `<region>-<nn>` (`cn-wlcb-01` is in `cn-wlcb`). Empty when neither says.
    pub fn home_region(&self) -> &str {
        home_region(&self.region, &self.zone)
    }

    /// The data disks `ReleaseUDisk` governs.
    pub(crate) fn data_disks(&self) -> impl Iterator<Item = &Disk> {
        self.disk_set.iter().filter(|d| d.is_data())
    }
}

/// The one region rule (see [`Instance::home_region`]), for every row that has a `Region`
/// and a `Zone` (instances, data disks): `Region` when the row says it, else the zone's
/// `<region>-<nn>` prefix, else empty.
pub(crate) fn home_region<'a>(region: &'a str, zone: &'a str) -> &'a str {
    if region.is_empty() {
        zone.rsplit_once('-').map_or("", |(r, _)| r)
    } else {
        region
    }
}

/// Where an instance lives: every mutating call needs its `Region` and `Zone`, which are
/// always taken from Describe, never from a configured default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    pub uhost_id: String,
    pub region: String,
    pub zone: String,
}

impl Target {
    /// `Region`, `Zone` and `UHostId`: the parameters of every lifecycle call.
    pub(crate) fn params(&self) -> super::sign::Params {
        [
            ("Region", &self.region),
            ("Zone", &self.zone),
            ("UHostId", &self.uhost_id),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }

    /// The call parameters of a row, its region by [`Instance::home_region`].
    pub fn of(instance: &Instance) -> Target {
        Target {
            uhost_id: instance.uhost_id.clone(),
            region: instance.home_region().to_owned(),
            zone: instance.zone.clone(),
        }
    }
}

/// One page of `DescribeCompShareInstance`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DescribePage {
    /// `None` when the answer did not say (missing, `null` or unreadable): an eventually
    /// consistent gateway has been seen to leave it out, and 0 would end paging early.
    #[serde(rename = "TotalCount", deserialize_with = "lenient::opt_i64")]
    pub total_count: Option<i64>,
    #[serde(rename = "UHostSet", deserialize_with = "lenient::seq")]
    pub uhost_set: Vec<Instance>,
}

/// The answer to `TerminateCompShareInstance`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TerminateAck {
    #[serde(rename = "UHostId", deserialize_with = "lenient::string")]
    pub uhost_id: String,
    /// `"Yes"` when the instance went to the recycle bin.
    #[serde(rename = "InRecycle", deserialize_with = "lenient::string")]
    pub in_recycle: String,
}

/// What to describe: an optional region/zone scope plus an optional ID list (at most 100 per
/// call) and a page window (`Limit` at most 100).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribeQuery {
    pub region: Option<String>,
    pub zone: Option<String>,
    pub ids: Vec<String>,
    pub limit: u32,
    pub offset: u32,
}

impl DescribeQuery {
    /// The flat parameters: optional `Region`/`Zone`, `UHostIds.N`, `Limit`, `Offset`.
    pub(crate) fn params(&self) -> super::sign::Params {
        self.clone().into_params()
    }

    /// [`DescribeQuery::params`], the strings moved in (a look's 100 IDs are not copied).
    pub(crate) fn into_params(self) -> super::sign::Params {
        let mut p = super::sign::Params::new();
        if let Some(r) = self.region {
            p.insert("Region".into(), r);
        }
        if let Some(z) = self.zone {
            p.insert("Zone".into(), z);
        }
        for (i, id) in self.ids.into_iter().enumerate() {
            p.insert(format!("UHostIds.{i}"), id);
        }
        p.insert("Limit".into(), self.limit.to_string());
        p.insert("Offset".into(), self.offset.to_string());
        p
    }
}

/// The documented per-call maximum for both `Limit` and `UHostIds.N`.
pub(crate) const DESCRIBE_MAX: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_including_odd_spellings() {
        for s in [
            "Initializing",
            "Starting",
            "Running",
            "Stopping",
            "Stopped",
            "Install Fail",
            "Rebooting",
            "Resizing",
            "",
            "Install",
            "Reinstalling",
        ] {
            assert_eq!(State::parse(s).as_str(), s);
        }
        assert_eq!(State::parse("Install Fail"), State::InstallFail);
        assert_eq!(State::parse(""), State::Unknown(String::new()));
    }

    #[test]
    fn lenient_row_parsing() {
        let row: Instance = serde_json::from_str(
            r#"{"UHostId":"cpod-1tq6i2ltk5mj","State":"Install Fail","CreateTime":"1700000000","GPU":"2",
                "Memory":32768.0,"InstancePrice":"1.5","DiskSet":null,"IPSet":[{"IP":"10.0.0.1","Bandwidth":"5"}],
                "Name":null,"SomethingNew":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(row.state, State::InstallFail);
        assert_eq!(row.create_time, 1_700_000_000);
        assert_eq!(row.gpu, 2);
        assert_eq!(row.memory, 32768);
        assert!((row.instance_price - 1.5).abs() < 1e-9);
        assert!(row.disk_set.is_empty());
        assert_eq!(row.ip_set[0].ip, "10.0.0.1");
        assert_eq!(row.ip_set[0].bandwidth, 5);
        assert_eq!(row.name, "");
    }

    #[test]
    fn lenient_strings_keep_odd_types_as_text() {
        let row: Instance = serde_json::from_str(
            r#"{"UHostId":"u-1","Name":7,"Tag":true,"Remark":1.5,"Zone":"a\"b","GpuType":["x",1],
                "InstanceType":{"k":null},"ChargeType":null,"Region":-3}"#,
        )
        .unwrap();
        assert_eq!(row.name, "7");
        assert_eq!(row.tag, "true");
        assert_eq!(row.remark, "1.5");
        assert_eq!(row.zone, "a\"b");
        assert_eq!(row.gpu_type, r#"["x",1]"#);
        assert_eq!(row.instance_type, r#"{"k":null}"#);
        assert_eq!(row.charge_type, "");
        assert_eq!(row.region, "-3");
    }

    #[test]
    fn page_with_null_set_and_string_total() {
        let page: DescribePage = serde_json::from_str(r#"{"TotalCount":"0","UHostSet":null}"#).unwrap();
        assert_eq!(page.total_count, Some(0));
        assert!(page.uhost_set.is_empty());
    }

    #[test]
    fn a_missing_or_null_total_is_unknown_not_zero() {
        for body in [
            r#"{"UHostSet":[]}"#,
            r#"{"TotalCount":null,"UHostSet":[]}"#,
            r#"{"TotalCount":"x"}"#,
        ] {
            let page: DescribePage = serde_json::from_str(body).unwrap();
            assert_eq!(page.total_count, None, "{body}");
        }
    }

    #[test]
    fn target_takes_region_from_the_row_or_else_from_the_zone() {
        let row = Instance {
            uhost_id: "u-1".into(),
            zone: "cn-wlcb-01".into(),
            ..Instance::default()
        };
        assert_eq!(Target::of(&row).region, "cn-wlcb");
        let row = Instance {
            region: "cn-sh2".into(),
            zone: "cn-sh2-02".into(),
            ..row
        };
        assert_eq!(Target::of(&row).region, "cn-sh2");
        let row = Instance {
            region: String::new(),
            zone: String::new(),
            ..row
        };
        assert_eq!(Target::of(&row).region, "");
    }

    #[test]
    fn data_disks_exclude_boot() {
        let i = Instance {
            disk_set: vec![
                Disk {
                    disk_id: "b".into(),
                    is_boot: "True".into(),
                    ..Disk::default()
                },
                Disk {
                    disk_id: "d".into(),
                    is_boot: "False".into(),
                    ..Disk::default()
                },
            ],
            ..Instance::default()
        };
        assert_eq!(
            i.data_disks().map(|d| d.disk_id.as_str()).collect::<Vec<_>>(),
            vec!["d"]
        );
    }
}
