//! A small logger for the `log` facade: one line per record on stderr, with a UTC timestamp.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        write_line(
            level_name(record.level()),
            record.target(),
            &record.args().to_string(),
        );
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// One line on stderr, in one write so lines from different threads do not interleave.
/// The level as the `--log-level` flag names it (`WARNING`, as the original's Python logging).
fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARNING",
        log::Level::Info => "INFO",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

fn write_line(level: &str, target: &str, message: &str) {
    let line = format!(
        "{} {level:<7} {target}: {message}\n",
        utc_timestamp(SystemTime::now())
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs `message` at INFO whatever the level: for what an operator must always see (the
/// address the server listens on).
pub fn always(message: &str) {
    write_line("INFO", "gateway_server", message);
}

/// Installs the logger at `level`. Later calls only change the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_boxed_logger(Box::new(StderrLogger {
        level: LevelFilter::Trace,
    }));
    log::set_max_level(level);
}

/// `2026-11-25T18:20:30.123Z`.
fn utc_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
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
    }
}
