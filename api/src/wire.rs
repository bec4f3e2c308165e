//! Shapes every resource module writes the same way: the `{"data": ...}` envelope
//! and times as text. They live here, below the resource modules, so that no
//! resource has to import another for them.

use serde::Serialize;
use std::time::SystemTime;

/// The instances document's envelope: `{"data": ...}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DataEnvelope<T> {
    pub(crate) data: T,
}

/// RFC 3339 in UTC to the second, as the documents show.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_utc_to_the_second() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_615_499_751_999);
        assert_eq!(rfc3339(t), "2021-03-11T21:55:51Z");
    }

    #[test]
    fn the_envelope_holds_its_value_under_data() {
        let json = serde_json::to_value(DataEnvelope { data: [1, 2] }).unwrap();
        assert_eq!(json, serde_json::json!({ "data": [1, 2] }));
    }
}
