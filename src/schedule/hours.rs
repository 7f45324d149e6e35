//! Acting hours: the scheduled job tears down only inside a daily window in a given time zone,
//! skipping given days, so that people are around to answer a notice or to bring a machine
//! back. Marking and notices happen at any time; a mark that falls due outside the window
//! waits for it. Pure: `now` comes in. Time zones are IANA names (`Asia/Shanghai`), read from
//! the time-zone database bundled into the binary, so a minimal container needs no tzdata.

use std::fmt::Write as _;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;

/// When the job may act.
#[derive(Debug, Clone)]
pub struct ActingHours {
    /// Minutes after local midnight the window opens, and closes (exclusive). A window whose
    /// end is before its start runs over midnight (`22:00-06:00`).
    start: u16,
    end: u16,
    tz: TimeZone,
    tz_name: String,
    skip: Vec<Weekday>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("acting hours {0:?}: use HH:MM-HH:MM, e.g. 09:00-18:00 (24-hour clock; 22:00-06:00 runs over midnight)")]
    Window(String),
    #[error("acting hours {0:?}: the window is empty (start equals end)")]
    Empty(String),
    #[error("time zone {0:?} is unknown: use an IANA name such as Asia/Shanghai or UTC")]
    Zone(String),
    #[error("day {0:?} is not a weekday: use mon, tue, wed, thu, fri, sat, sun")]
    Day(String),
}

impl ActingHours {
    /// `window` as `HH:MM-HH:MM`; `tz` an IANA name (`None`: the system's zone); `skip` day
    /// names (`sat`, `sunday`, ...).
    pub fn parse(window: &str, tz: Option<&str>, skip: &[String]) -> Result<ActingHours, HoursError> {
        let shown = crate::textfile::excerpt(window);
        let bad = || HoursError::Window(shown.clone());
        let (a, b) = window.trim().split_once('-').ok_or_else(bad)?;
        let start = minutes(a).ok_or_else(bad)?;
        let end = minutes(b).ok_or_else(bad)?;
        if start == end {
            return Err(HoursError::Empty(shown));
        }
        let (tz, tz_name) = match tz {
            Some(name) => (
                TimeZone::get(name).map_err(|_| HoursError::Zone(crate::textfile::excerpt(name)))?,
                name.to_owned(),
            ),
            None => {
                let tz = TimeZone::system();
                let name = tz.iana_name().unwrap_or("the system's zone").to_owned();
                (tz, name)
            }
        };
        let skip = skip
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.trim().is_empty())
            .map(|s| day(s).ok_or_else(|| HoursError::Day(crate::textfile::excerpt(s))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ActingHours {
            start,
            end,
            tz,
            tz_name,
            skip,
        })
    }

    /// Whether the job may act at unix time `now`. A skipped day is the local day the window
    /// opened on (a night window that opens on Friday closes on Saturday morning as Friday's).
    pub fn contains(&self, now: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_second(now) else {
            return false;
        };
        let local = ts.to_zoned_datetime(self.tz.clone());
        let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
        let (inside, opened_yesterday) = if self.start < self.end {
            (minute >= self.start && minute < self.end, false)
        } else if minute >= self.start {
            (true, false)
        } else {
            (minute < self.end, true)
        };
        if !inside {
            return false;
        }
        let day = if opened_yesterday {
            local.weekday().previous()
        } else {
            local.weekday()
        };
        !self.skip.contains(&day)
    }

    /// For logs and docs: `09:00-18:00 Asia/Shanghai, not on sat, sun`.
    pub fn describe(&self) -> String {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let mut s = format!("{}-{} {}", hm(self.start), hm(self.end), self.tz_name);
        if !self.skip.is_empty() {
            let days: Vec<String> = self
                .skip
                .iter()
                .map(|d| format!("{d:?}").to_lowercase()[..3].to_owned())
                .collect();
            let _ = write!(s, ", not on {}", days.join(", "));
        }
        s
    }
}

/// `HH:MM` as minutes after midnight; `24:00` is the end of the day.
fn minutes(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

fn day(text: &str) -> Option<Weekday> {
    let t = text.trim().to_ascii_lowercase();
    let all = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    all.iter()
        .find(|(short, d)| t == *short || t == format!("{d:?}").to_ascii_lowercase())
        .map(|(_, d)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-04 (a Friday) 00:00 UTC = 08:00 in Shanghai (UTC+8, no daylight saving).
    const FRI_0000_UTC: i64 = 1_796_342_400;
    const H: i64 = 3600;

    #[test]
    fn a_day_window_in_a_zone() {
        let h = ActingHours::parse("09:00-18:00", Some("Asia/Shanghai"), &[]).unwrap();
        // 08:00, 09:00, 17:59, 18:00 local.
        assert!(!h.contains(FRI_0000_UTC));
        assert!(h.contains(FRI_0000_UTC + H));
        assert!(h.contains(FRI_0000_UTC + 10 * H - 60));
        assert!(!h.contains(FRI_0000_UTC + 10 * H));
        assert_eq!(h.describe(), "09:00-18:00 Asia/Shanghai");
    }

    #[test]
    fn skipped_days_and_windows_over_midnight() {
        let h = ActingHours::parse("09:00-18:00", Some("Asia/Shanghai"), &["sat,sun".into()]).unwrap();
        // Saturday 10:00 local.
        assert!(!h.contains(FRI_0000_UTC + 26 * H));
        // Monday 10:00 local.
        assert!(h.contains(FRI_0000_UTC + 74 * H));
        // A night window opened Friday 22:00 still counts as Friday on Saturday at 02:00.
        let night = ActingHours::parse("22:00-06:00", Some("UTC"), &["sat".into()]).unwrap();
        assert!(night.contains(FRI_0000_UTC + 23 * H));
        assert!(night.contains(FRI_0000_UTC + 26 * H), "Friday's night, early Saturday");
        assert!(!night.contains(FRI_0000_UTC + 47 * H), "Saturday's night");
        assert!(!night.contains(FRI_0000_UTC + 12 * H));
        assert!(
            ActingHours::parse("00:00-24:00", Some("UTC"), &[])
                .unwrap()
                .contains(FRI_0000_UTC + 5 * H)
        );
    }

    #[test]
    fn bad_windows_zones_and_days_are_refused() {
        for w in [
            "9-18",
            "09:00",
            "25:00-26:00",
            "09:60-10:00",
            "",
            "09:00-09:00",
            "ab:cd-ef:gh",
        ] {
            assert!(ActingHours::parse(w, Some("UTC"), &[]).is_err(), "{w}");
        }
        assert!(matches!(
            ActingHours::parse("09:00-18:00", Some("Mars/Olympus"), &[]),
            Err(HoursError::Zone(_))
        ));
        assert!(matches!(
            ActingHours::parse("09:00-18:00", Some("UTC"), &["caturday".into()]),
            Err(HoursError::Day(_))
        ));
    }
}
