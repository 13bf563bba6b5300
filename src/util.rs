//! Small helpers shared by services: ids and timestamps in the reference's formats.

use chrono::{Local, SecondsFormat, Utc};

/// A new random id as 32 lowercase hex digits (the reference's `OpenHandsUUID` wire form).
pub fn hex_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new random id in the dashed uuid4 form used for conversations and events.
pub fn dashed_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Aware UTC time with microseconds and a `Z` suffix: `2026-11-25T11:21:09.170846Z`.
pub fn utc_timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Naive server-local time as Python's `datetime.now().isoformat()` prints it
/// (microseconds dropped when they are zero), used by conversation events.
pub fn local_naive_timestamp() -> String {
    let now = Local::now().naive_local();
    if now.and_utc().timestamp_subsec_micros() == 0 {
        now.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}
