//! The Windows Event Log as a log destination for `picket-agent service run`:
//! a service has no console, and the Event Log is where Windows
//! administrators (and their log shippers) look.
//!
//! Each event is formatted by the same `tracing_subscriber::fmt` layer as the
//! console and `--log-file` output (text or JSON, without the timestamp: the
//! Event Log keeps its own), then reported to the Application log under the
//! source [`EVENT_SOURCE`] with the event type of its level (error, warning,
//! information). The FFI (`RegisterEventSourceW` / `ReportEventW`) is the
//! `eventlog` crate's, so this crate keeps `unsafe_code = "forbid"`; that
//! crate also embeds the message table (event ids 1 to 5, text `%1`) in
//! `picket-agent.exe`, which the MSI names as the source's `EventMessageFile`
//! so Event Viewer renders the text (`installers/msi/picket-agent.wxs`).
//!
//! The pure part ([`event_text`]: trimming and the size cap) is not
//! Windows-specific so it is tested on every platform.

/// The event source: the registry key the MSI creates under
/// `HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application`, and the
/// `ProviderName` to give `Get-WinEvent`.
pub const EVENT_SOURCE: &str = "Picket Agent";

/// `ReportEventW` refuses strings over 31,839 UTF-16 units; an event is cut
/// below that, on a character boundary, and says so.
const MAX_UTF16_UNITS: usize = 31_000;

/// Appended to an event cut at [`MAX_UTF16_UNITS`].
const TRUNCATED: &str = " [truncated]";

/// What one formatted event becomes in the Event Log: lossy UTF-8, trailing
/// newline removed, at most [`MAX_UTF16_UNITS`]; `None` for an empty event.
#[cfg_attr(not(windows), allow(dead_code))] // used by the Windows writer below and by the tests
pub(crate) fn event_text(formatted: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(formatted);
    let text = text.trim_end();
    if text.is_empty() {
        return None;
    }
    let budget = MAX_UTF16_UNITS - TRUNCATED.len();
    let mut units = 0;
    for (at, c) in text.char_indices() {
        units += c.len_utf16();
        if units > budget {
            return Some(format!("{}{TRUNCATED}", &text[..at]));
        }
    }
    Some(text.to_owned())
}

#[cfg(windows)]
pub use writer::{EventLogWriter, OpenError};

#[cfg(windows)]
mod writer {
    use std::io;
    use std::sync::Arc;

    use tracing::{Level, Metadata};
    use tracing_subscriber::fmt::MakeWriter;

    use super::{EVENT_SOURCE, MAX_UTF16_UNITS, event_text};

    /// [`EventLogWriter::open`] failed: `RegisterEventSourceW` refused the
    /// source (the event log service is not running, or access is denied).
    pub type OpenError = eventlog::Error;

    /// A `MakeWriter` for `tracing_subscriber::fmt`: one writer per event,
    /// which reports the formatted event when the layer drops it.
    #[derive(Clone)]
    pub struct EventLogWriter {
        source: Arc<eventlog::EventLog>,
    }

    impl EventLogWriter {
        /// Opens the [`EVENT_SOURCE`] on the local machine.
        ///
        /// # Errors
        /// If `RegisterEventSourceW` fails. (An unregistered source does not
        /// fail: Windows then shows the text with a "description not found"
        /// preamble, until the MSI's registry key exists.)
        pub fn open() -> Result<Self, OpenError> {
            // Trace: the level filter is tracing's (PICKET_AGENT_LOG), not the crate's.
            let source = eventlog::EventLog::new(EVENT_SOURCE, log::Level::Trace)?;
            Ok(Self {
                source: Arc::new(source),
            })
        }
    }

    impl<'a> MakeWriter<'a> for EventLogWriter {
        type Writer = EventWriter<'a>;

        fn make_writer(&'a self) -> Self::Writer {
            self.writer(log::Level::Info)
        }

        fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
            // The Event Log has three types; the crate maps error, warn and
            // the rest (info, debug, trace) onto them, with ids 1 to 5.
            let level = match *meta.level() {
                Level::ERROR => log::Level::Error,
                Level::WARN => log::Level::Warn,
                Level::INFO => log::Level::Info,
                Level::DEBUG => log::Level::Debug,
                Level::TRACE => log::Level::Trace,
            };
            self.writer(level)
        }
    }

    impl EventLogWriter {
        fn writer(&self, level: log::Level) -> EventWriter<'_> {
            EventWriter {
                source: &self.source,
                level,
                buf: Vec::new(),
            }
        }
    }

    /// Collects one formatted event; reports it on drop.
    pub struct EventWriter<'a> {
        source: &'a eventlog::EventLog,
        level: log::Level,
        buf: Vec<u8>,
    }

    impl io::Write for EventWriter<'_> {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            // Bounded: at most 4 bytes per UTF-16 unit are ever reported.
            let room = (4 * MAX_UTF16_UNITS).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for EventWriter<'_> {
        fn drop(&mut self) {
            if let Some(text) = event_text(&self.buf) {
                // A failed ReportEventW goes to OutputDebugString (the crate's
                // choice): a service has no console to tell instead.
                log::Log::log(
                    self.source,
                    &log::Record::builder()
                        .level(self.level)
                        .target("picket_agent")
                        .args(format_args!("{text}"))
                        .build(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_loses_its_trailing_newline_and_an_empty_one_is_dropped() {
        assert_eq!(
            event_text(b" INFO picket_agent: connected server=picket.example.com\n").as_deref(),
            Some(" INFO picket_agent: connected server=picket.example.com")
        );
        assert_eq!(event_text(b"\n"), None);
        assert_eq!(event_text(b""), None);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        assert_eq!(
            event_text(b"bad \xff byte").as_deref(),
            Some("bad \u{fffd} byte")
        );
    }

    #[test]
    fn a_huge_event_is_cut_below_the_report_event_limit_on_a_char_boundary() {
        // 'é' is 2 bytes in UTF-8 and 1 UTF-16 unit; '😀' is 4 bytes and 2 units.
        for filler in ["a", "é", "😀"] {
            let huge = filler.repeat(40_000);
            let text = event_text(huge.as_bytes()).unwrap();
            let units = text.encode_utf16().count();
            assert!(units <= MAX_UTF16_UNITS, "{filler}: {units} units");
            assert!(
                units > MAX_UTF16_UNITS - 20,
                "{filler}: cut too short, {units} units"
            );
            assert!(text.ends_with(TRUNCATED), "{filler}: no marker");
            let body = text.strip_suffix(TRUNCATED).unwrap();
            assert!(
                body.chars().all(|c| c.to_string() == filler),
                "{filler}: split char"
            );
        }
        // Just under the budget: kept whole, no marker.
        let fits = "a".repeat(MAX_UTF16_UNITS - TRUNCATED.len());
        assert_eq!(event_text(fits.as_bytes()).as_deref(), Some(fits.as_str()));
    }
}
