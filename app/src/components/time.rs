//! Timestamps as the console shows them: the API's RFC 3339 UTC strings cut
//! to what a table needs.

/// "2026-11-25T21:22:02.455265Z" as "2026-11-25 21:22".
pub fn to_minute(rfc3339: &str) -> String {
    cut(rfc3339, 16)
}

/// "2026-11-25T21:22:02.455265Z" as "2026-11-25 21:22:02 UTC".
pub fn to_second(rfc3339: &str) -> String {
    format!("{} UTC", cut(rfc3339, 19))
}

fn cut(rfc3339: &str, len: usize) -> String {
    let t = rfc3339.replace('T', " ");
    t.get(..len).map_or(t.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_to_the_minute_or_second() {
        let at = "2026-11-25T21:22:02.455265Z";
        assert_eq!(to_minute(at), "2026-11-25 21:22");
        assert_eq!(to_second(at), "2026-11-25 21:22:02 UTC");
        assert_eq!(to_minute("soon"), "soon");
    }
}
