//! A small logger for the `log` facade: one line per record on stderr, with a UTC timestamp,
//! as text (`<time> <LEVEL> <target>: <message>`) or as a JSON object (`--log-format json`).
//!
//! Under systemd (`JOURNAL_STREAM` set: stderr goes to the journal) every line starts with its
//! syslog priority, `<3>` to `<7>` as sd-daemon(3) describes, so the journal files WARNING and
//! ERROR lines at their own priority; journald takes the prefix off before it stores the line.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// How each log line is laid out (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// `2026-11-25T18:20:30.123Z INFO    gateway_server: message`.
    #[default]
    Text,
    /// `{"ts":"2026-11-25T18:20:30.123Z","level":"INFO","target":"gateway_server","msg":"message"}`.
    Json,
}

impl LogFormat {
    /// `text` or `json`, in any case.
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The layout in use: set once by [`init_with`], read for every line (threads log at once).
static JSON: AtomicBool = AtomicBool::new(false);
/// Whether lines carry a journald priority prefix.
static JOURNALD: AtomicBool = AtomicBool::new(false);
/// Guards the one-time install (a second `init` only changes the level).
static INSTALLED: AtomicBool = AtomicBool::new(false);

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        write_line(record.level(), record.target(), &record.args().to_string());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// The level as the `--log-level` flag names it (`WARNING`, as the original's Python logging).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// The syslog priority journald files a line at: err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// What [`line`] needs besides the record.
#[derive(Debug, Clone, Copy)]
struct Style {
    format: LogFormat,
    journald: bool,
}

/// One line, newline included.
fn line(style: Style, time: SystemTime, level: Level, target: &str, message: &str) -> String {
    let prefix = if style.journald {
        format!("<{}>", priority(level))
    } else {
        String::new()
    };
    let ts = utc_timestamp(time);
    match style.format {
        LogFormat::Text => format!(
            "{prefix}{ts} {:<7} {target}: {message}\n",
            level_name(level)
        ),
        LogFormat::Json => {
            let object = serde_json::json!({
                "ts": ts,
                "level": level_name(level),
                "target": target,
                "msg": message,
            });
            format!("{prefix}{object}\n")
        }
    }
}

/// One line on stderr, in one write so lines from different threads do not interleave.
fn write_line(level: Level, target: &str, message: &str) {
    let style = Style {
        format: if JSON.load(Ordering::Relaxed) {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        journald: JOURNALD.load(Ordering::Relaxed),
    };
    let line = line(style, SystemTime::now(), level, target, message);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs `message` at INFO whatever the level: for what an operator must always see (the
/// address the server listens on).
pub fn always(message: &str) {
    write_line(Level::Info, "gateway_server", message);
}

/// Installs the logger at `level`, writing text. Later calls only change the level.
pub fn init(level: LevelFilter) {
    init_with(level, LogFormat::Text);
}

/// Installs the logger at `level`, writing lines in `format`, each with a journald priority
/// prefix when the environment has `JOURNAL_STREAM` (systemd sets it when stderr is the
/// journal). Later calls change the level and the format.
pub fn init_with(level: LevelFilter, format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    JOURNALD.store(
        std::env::var_os("JOURNAL_STREAM").is_some_and(|v| !v.is_empty()),
        Ordering::Relaxed,
    );
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        let _ = log::set_boxed_logger(Box::new(StderrLogger));
    }
    log::set_max_level(level);
}

/// `2026-11-25T18:20:30.123Z`.
fn utc_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = iso8601(since.as_secs() as f64);
    let whole = seconds.strip_suffix('Z').unwrap_or(&seconds);
    format!("{whole}.{:03}Z", since.subsec_millis())
}

/// `unix` seconds as an ISO-8601 UTC time to the second (`2026-12-03T09:03:29Z`), for the
/// times messages name (a store failing since when).
pub fn iso8601(unix: f64) -> String {
    let secs = unix.max(0.0) as u64;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to a calendar date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_630_611_648);
        assert_eq!(utc_timestamp(t), "2026-11-25T18:16:51.648Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400.5), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_288_609.0), "2026-12-03T09:03:29Z");
    }

    const TEXT: Style = Style {
        format: LogFormat::Text,
        journald: false,
    };

    #[test]
    fn text_lines_are_as_they_always_were() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_630_611_648);
        assert_eq!(
            line(TEXT, t, Level::Warn, "gateway", "disk full"),
            "2026-11-25T18:16:51.648Z WARNING gateway: disk full\n"
        );
        assert_eq!(
            line(TEXT, t, Level::Info, "access", "GET /"),
            "2026-11-25T18:16:51.648Z INFO    access: GET /\n"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_the_four_fields() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_630_611_648);
        let json = Style {
            format: LogFormat::Json,
            journald: false,
        };
        let text = line(json, t, Level::Error, "store", "a \"quoted\"\nline");
        assert!(
            text.ends_with('\n') && !text.trim_end().contains('\n'),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"ts": "2026-11-25T18:16:51.648Z", "level": "ERROR",
                "target": "store", "msg": "a \"quoted\"\nline"})
        );
    }

    #[test]
    fn journald_lines_start_with_their_priority() {
        let journald = Style {
            journald: true,
            ..TEXT
        };
        for (level, prefix) in [
            (Level::Error, "<3>"),
            (Level::Warn, "<4>"),
            (Level::Info, "<6>"),
            (Level::Debug, "<7>"),
            (Level::Trace, "<7>"),
        ] {
            let text = line(journald, UNIX_EPOCH, level, "t", "m");
            assert_eq!(
                text,
                format!(
                    "{prefix}1970-01-01T00:00:00.000Z {:<7} t: m\n",
                    level_name(level)
                )
            );
        }
    }
}
