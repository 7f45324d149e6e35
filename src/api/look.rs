//! The engine's looks: a `DescribeCompShareInstance` answer read for the fields a look acts
//! on, where it is used, its strings borrowed from the body.
//!
//! A look at 100 instances is the tool's most frequent call (about 20 rows per instance over
//! a teardown). Read as whole rows, the parts nobody reads (disks, addresses' details, prices,
//! machine data) were most of the engine's allocations at 10,000 instances; read into owned
//! strings, the seven strings of each row were still a third of them, though the engine keeps
//! none of them unless something changed (`LookRow`).

use std::borrow::Cow;

use serde::Deserialize;

use super::client::Answer;
use super::error::ApiError;
use super::lenient;
use super::model::{DescribePage, Instance, Ip, State, home_region};

/// The answer to a look, read with `Looked::page`. Either the body as it came (the HTTP
/// client, the simulator), whose rows then borrow their strings from it, or whole rows (a
/// [`super::Cloud`] that only implements `describe`, as test doubles do).
#[derive(Debug)]
pub struct Looked(Body);

#[derive(Debug)]
enum Body {
    Json(Answer),
    Rows(DescribePage),
}

impl From<DescribePage> for Looked {
    fn from(page: DescribePage) -> Looked {
        Looked(Body::Rows(page))
    }
}

impl From<Answer> for Looked {
    fn from(answer: Answer) -> Looked {
        Looked(Body::Json(answer))
    }
}

impl Looked {
    /// The page, its rows borrowing from `self`. A body that does not read as a page is the
    /// same decoding error the whole-row `describe` gives.
    pub(crate) fn page(&self) -> Result<LookPage<'_>, ApiError> {
        match &self.0 {
            Body::Json(answer) => answer.parse("DescribeCompShareInstance"),
            Body::Rows(page) => Ok(LookPage {
                total_count: page.total_count,
                uhost_set: page.uhost_set.iter().map(LookRow::of).collect(),
            }),
        }
    }
}

/// One page of a look: the same answer as [`DescribePage`], its rows read as [`LookRow`].
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LookPage<'a> {
    #[serde(rename = "TotalCount", deserialize_with = "lenient::opt_i64")]
    pub total_count: Option<i64>,
    #[serde(rename = "UHostSet", borrow, deserialize_with = "lenient::seq")]
    pub uhost_set: Vec<LookRow<'a>>,
}

/// The fields of a row that a look acts on: its ID and state, where it lives (the call
/// target and the scope check), whether it is spot (`Force`), and what the guard checks right
/// before the first call (`Protections::refuse`: name, tag, addresses; `Filters::outside_scope`;
/// `Drift::check`: name, tag, state). A guard that reads another field must add it here:
/// `look_rows_keep_what_the_engine_and_its_guard_read` pins the list. Strings are borrowed
/// from the body unless they had escapes or another type.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LookRow<'a> {
    #[serde(rename = "UHostId", borrow, deserialize_with = "lenient::text")]
    pub uhost_id: Cow<'a, str>,
    #[serde(rename = "Name", borrow, deserialize_with = "lenient::text")]
    pub name: Cow<'a, str>,
    #[serde(rename = "State")]
    pub state: State,
    #[serde(rename = "Region", borrow, deserialize_with = "lenient::text")]
    pub region: Cow<'a, str>,
    #[serde(rename = "Zone", borrow, deserialize_with = "lenient::text")]
    pub zone: Cow<'a, str>,
    #[serde(rename = "Tag", borrow, deserialize_with = "lenient::text")]
    tag: Cow<'a, str>,
    #[serde(rename = "ChargeType", borrow, deserialize_with = "lenient::text")]
    charge_type: Cow<'a, str>,
    #[serde(rename = "IPSet", borrow, deserialize_with = "lenient::seq")]
    ip_set: Vec<LookIp<'a>>,
}

/// The address of an `IPSet` entry (self-protection compares addresses).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LookIp<'a> {
    #[serde(rename = "IP", borrow, deserialize_with = "lenient::text")]
    ip: Cow<'a, str>,
}

impl<'a> LookRow<'a> {
    /// A whole row's look fields, borrowed.
    fn of(row: &'a Instance) -> LookRow<'a> {
        LookRow {
            uhost_id: Cow::Borrowed(&row.uhost_id),
            name: Cow::Borrowed(&row.name),
            state: row.state.clone(),
            region: Cow::Borrowed(&row.region),
            zone: Cow::Borrowed(&row.zone),
            tag: Cow::Borrowed(&row.tag),
            charge_type: Cow::Borrowed(&row.charge_type),
            ip_set: row
                .ip_set
                .iter()
                .map(|a| LookIp {
                    ip: Cow::Borrowed(&a.ip),
                })
                .collect(),
        }
    }

    /// Where the instance lives, by the one rule ([`Instance::home_region`]).
    pub(crate) fn home_region(&self) -> &str {
        home_region(&self.region, &self.zone)
    }

    /// As [`Instance::is_spot`].
    pub(crate) fn is_spot(&self) -> bool {
        self.charge_type.eq_ignore_ascii_case("spot")
    }

    /// The row as an [`Instance`] with only these fields filled: what the guard reads, built
    /// for an instance's first call only.
    pub(crate) fn to_instance(&self) -> Instance {
        Instance {
            uhost_id: self.uhost_id.clone().into_owned(),
            name: self.name.clone().into_owned(),
            state: self.state.clone(),
            region: self.region.clone().into_owned(),
            zone: self.zone.clone().into_owned(),
            tag: self.tag.clone().into_owned(),
            charge_type: self.charge_type.clone().into_owned(),
            ip_set: self
                .ip_set
                .iter()
                .map(|a| Ip {
                    ip: a.ip.clone().into_owned(),
                    ..Ip::default()
                })
                .collect(),
            ..Instance::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"TotalCount":"2","UHostSet":[
        {"UHostId":"u-1","Name":"n","State":"Stopped","Region":"cn-sh2","Zone":"cn-sh2-02","Tag":"t",
         "ChargeType":"Spot","IPSet":[{"IP":"10.0.0.1","IPMode":"IPv4","Bandwidth":5}],
         "DiskSet":[{"DiskId":"d","IsBoot":"False"}],"GPU":2,"Remark":"r"},
        {"UHostId":"u-2","Name":"tab\there","State":null,"IPSet":null,"Tag":7}]}"#;

    #[test]
    fn look_rows_keep_what_the_engine_and_its_guard_read() {
        let full: DescribePage = serde_json::from_str(BODY).unwrap();
        let from_body = Looked::from(Answer::from_body(BODY.as_bytes().to_vec()));
        let from_rows = Looked::from(full.clone());
        for looked in [&from_body, &from_rows] {
            let look = looked.page().unwrap();
            assert_eq!(look.total_count, Some(2));
            assert_eq!(look.uhost_set.len(), 2);
            for (l, f) in look.uhost_set.iter().zip(&full.uhost_set) {
                assert_eq!(l.uhost_id, f.uhost_id);
                assert_eq!(l.state, f.state);
                assert_eq!(l.home_region(), f.home_region());
                assert_eq!(l.is_spot(), f.is_spot());
                let g = l.to_instance();
                // What the guard reads: `--exclude` and the saved plan find rows by ID, the
                // plan's drift check compares the state, the scope check the region.
                assert_eq!(g.uhost_id, f.uhost_id);
                assert_eq!(g.state, f.state);
                assert_eq!(g.home_region(), f.home_region());
                assert_eq!(g.is_spot(), f.is_spot());
                assert_eq!(g.name, f.name);
                assert_eq!(g.region, f.region);
                assert_eq!(g.zone, f.zone);
                assert_eq!(g.tag, f.tag);
                assert_eq!(g.charge_type, f.charge_type);
                let ips = |i: &Instance| i.ip_set.iter().map(|a| a.ip.clone()).collect::<Vec<_>>();
                assert_eq!(ips(&g), ips(f));
                // What a look does not need is not built.
                assert!(g.disk_set.is_empty());
                assert_eq!(g.gpu, 0);
            }
        }
    }

    #[test]
    fn plain_strings_are_borrowed_from_the_body() {
        let looked = Looked::from(Answer::from_body(BODY.as_bytes().to_vec()));
        let page = looked.page().unwrap();
        let first = &page.uhost_set[0];
        for s in [&first.uhost_id, &first.name, &first.region, &first.zone] {
            assert!(matches!(s, Cow::Borrowed(_)), "{s:?}");
        }
        // An escaped string or a number cannot be: it is read into its own text.
        assert!(matches!(page.uhost_set[1].name, Cow::Owned(_)));
        assert_eq!(page.uhost_set[1].name, "tab\there");
        assert_eq!(page.uhost_set[1].tag, "7");
    }

    #[test]
    fn a_body_that_is_not_a_page_is_a_decoding_error() {
        let looked = Looked::from(Answer::from_body(br#"{"UHostSet":{"x":1}}"#.to_vec()));
        assert!(matches!(looked.page(), Err(ApiError::Decode { .. })));
        let state = Looked::from(Answer::from_body(br#"{"UHostSet":[{"State":5}]}"#.to_vec()));
        assert!(
            matches!(state.page(), Err(ApiError::Decode { .. })),
            "a State must be a string"
        );
    }
}
