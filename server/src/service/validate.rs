//! Bounds and formats of user input, each failure a precise 400.

use crate::error::ApiError;

/// A non-empty string of at most `max` characters with no control characters.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `field`.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// Like [`text`] but may be empty.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `field`.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() {
        Ok(())
    } else {
        text(field, value, max)
    }
}

/// A plausible email address (one `@`, a dot in the domain, at most 254 characters).
///
/// # Errors
/// [`ApiError::BadRequest`].
pub fn email(value: &str) -> Result<(), ApiError> {
    let ok = value.len() <= 254
        && value.split('@').count() == 2
        && value.split('@').all(|p| !p.is_empty())
        && value
            .rsplit('@')
            .next()
            .is_some_and(|d| d.contains('.') && !d.starts_with('.') && !d.ends_with('.'))
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_email",
            "email must look like name@example.com",
        ))
    }
}

/// An `http://` or `https://` URL with a host, at most 2048 characters, no credentials, no query.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `field`.
pub fn base_url(field: &str, value: &str) -> Result<(), ApiError> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let ok = value.len() <= 2048
        && rest.is_some_and(|r| {
            let host = r.split('/').next().unwrap_or("");
            !host.is_empty() && !host.contains('@')
        })
        && !value.contains(['?', '#', ' '])
        && !value.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "{field} must be an http:// or https:// URL with a host and no credentials, query or fragment"
            ),
        ))
    }
}

/// An identifier such as a Splunk app or owner: 1-64 of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `field`.
pub fn ident(field: &str, value: &str) -> Result<(), ApiError> {
    if !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be 1-64 characters of [A-Za-z0-9_.-]"),
        ))
    }
}

/// A five-field cron expression (minute hour day-of-month month day-of-week)
/// using numbers, `*`, `/`, `,` and `-`, with each number in its field's range.
///
/// # Errors
/// [`ApiError::BadRequest`] naming the field at fault.
pub fn cron(value: &str) -> Result<(), ApiError> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(ApiError::bad_request(
            "invalid_schedule",
            format!(
                "cron must have 5 fields (minute hour day month weekday), found {}",
                fields.len()
            ),
        ));
    }
    let names = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    let ranges = [(0u32, 59u32), (0, 23), (1, 31), (1, 12), (0, 7)];
    for ((f, name), (lo, hi)) in fields.iter().zip(names).zip(ranges) {
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(s) = step
                && !s.parse::<u32>().is_ok_and(|n| n >= 1 && n <= hi.max(1))
            {
                return Err(ApiError::bad_request(
                    "invalid_schedule",
                    format!("cron {name} field: bad step {s:?}"),
                ));
            }
            if range == "*" {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            for n in [a, b] {
                if !n.parse::<u32>().is_ok_and(|v| v >= lo && v <= hi) {
                    return Err(ApiError::bad_request(
                        "invalid_schedule",
                        format!("cron {name} field: {n:?} is not a number from {lo} to {hi}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A Splunk relative time modifier such as `-15m`, `-1h@h`, `now`, `0` or an epoch.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `field`.
pub fn time_modifier(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 32
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '@' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_schedule",
            format!("{field} must be a time modifier such as -15m, -1h@h or now"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_forms() {
        for ok in ["*/5 * * * *", "0 3 * * 1-5", "15,45 */2 1 1,6 0"] {
            assert!(cron(ok).is_ok(), "{ok}");
        }
        let e = cron("* * * *").unwrap_err().to_string();
        assert!(e.contains("5 fields"), "{e}");
        let e = cron("61 * * * *").unwrap_err().to_string();
        assert!(e.contains("minute"), "{e}");
        assert!(cron("*/0 * * * *").is_err());
    }

    #[test]
    fn urls_and_idents() {
        assert!(base_url("base_url", "https://splunk.corp:8089").is_ok());
        assert!(base_url("base_url", "ftp://x").is_err());
        assert!(base_url("base_url", "https://user:pw@x").is_err());
        assert!(ident("app", "search").is_ok());
        assert!(ident("app", "../etc").is_err());
        assert!(email("a@b.co").is_ok());
        assert!(email("a@b").is_err());
    }
}
