//! MITRE ATT&CK technique ids: `T` and four digits, optionally `.` and three
//! digits for a sub-technique (`T1059`, `T1059.001`).

/// Whether `tag` is an ATT&CK technique or sub-technique id.
pub fn valid_technique(tag: &str) -> bool {
    let b = tag.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => b[0] == b'T' && digits(&b[1..5]),
        9 => b[0] == b'T' && digits(&b[1..5]) && b[5] == b'.' && digits(&b[6..9]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::valid_technique;

    #[test]
    fn forms() {
        for ok in ["T1059", "T1059.001", "T0001"] {
            assert!(valid_technique(ok), "{ok}");
        }
        for bad in [
            "t1059",
            "T105",
            "T10590",
            "T1059.01",
            "T1059-001",
            "T1059.0011",
            "TA0001",
            "",
            "T1059.00a",
        ] {
            assert!(!valid_technique(bad), "{bad}");
        }
    }
}
