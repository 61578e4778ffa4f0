//! The `process_*` metrics of Prometheus's client libraries, read from `/proc/self` when
//! scraped: descriptors, threads, memory, CPU time and start time. Descriptors and threads are
//! what the gateway runs out of first (tiny_http holds a thread and two descriptors per
//! connection), so they are what operators alert on.

use std::path::Path;

/// Clock ticks per second in `/proc` (`USER_HZ`): 100 on every Linux architecture, whatever
/// the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says now; a field is `None` where it could not be read (another system,
/// or `/proc` hidden).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<f64>,
    /// Threads.
    pub threads: Option<f64>,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: Option<f64>,
    /// Virtual memory, in bytes.
    pub virtual_memory_bytes: Option<f64>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: Option<f64>,
}

impl Process {
    /// Reads this process's figures from `/proc`.
    pub fn read() -> Process {
        Process::read_from(Path::new("/proc"), Path::new("/proc/self"))
    }

    fn read_from(proc: &Path, this: &Path) -> Process {
        let text = |name: &str| std::fs::read_to_string(this.join(name)).ok();
        let status = text("status").unwrap_or_default();
        let stat = text("stat").map(|s| stat_fields(&s)).unwrap_or_default();
        let boot_time = std::fs::read_to_string(proc.join("stat"))
            .ok()
            .and_then(|s| field(&s, "btime"));
        let tick = |i: usize| stat.get(i).and_then(|v| v.parse::<f64>().ok());
        Process {
            open_fds: std::fs::read_dir(this.join("fd"))
                .ok()
                .map(|dir| dir.count() as f64),
            max_fds: text("limits").and_then(|l| max_open_files(&l)),
            threads: field(&status, "Threads:"),
            resident_memory_bytes: field(&status, "VmRSS:").map(|kb| kb * 1024.0),
            virtual_memory_bytes: field(&status, "VmSize:").map(|kb| kb * 1024.0),
            // Fields 14 and 15 of stat(5), utime and stime (from field 3 on, after the name).
            cpu_seconds: tick(11)
                .zip(tick(12))
                .map(|(user, system)| (user + system) / TICKS_PER_SECOND),
            // Field 22, starttime: ticks after boot.
            start_time_seconds: tick(19)
                .zip(boot_time)
                .map(|(start, boot)| boot + start / TICKS_PER_SECOND),
        }
    }
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces and
/// parentheses, so it is cut at the last `)`): the first is field 3, `state`.
fn stat_fields(stat: &str) -> Vec<String> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The number after `name` on its line (`Threads:\t9`, `VmRSS:\t 1234 kB`, `btime 1700000000`).
fn field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The soft limit on the `Max open files` line of `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let rest = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(f64::INFINITY),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figures_of_a_proc_tree() {
        let root = std::env::temp_dir().join(format!("gateway-proc-{}", std::process::id()));
        let this = root.join("self");
        std::fs::create_dir_all(this.join("fd")).unwrap();
        for n in 0..3 {
            std::fs::write(this.join("fd").join(n.to_string()), "").unwrap();
        }
        std::fs::write(root.join("stat"), "cpu  1 2 3\nbtime 1700000000\n").unwrap();
        // A name with a space and a parenthesis; utime 250, stime 50, starttime 12345.
        std::fs::write(
            this.join("stat"),
            "42 (gateway (x) s) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 \
             1000 200 18446744073709551615\n",
        )
        .unwrap();
        std::fs::write(
            this.join("status"),
            "Name:\tgateway\nVmSize:\t  20480 kB\nVmRSS:\t    4096 kB\nThreads:\t9\n",
        )
        .unwrap();
        std::fs::write(
            this.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max open files            65536                524288               files     \n",
        )
        .unwrap();
        let mut process = Process::read_from(&root, &this);
        let _ = std::fs::remove_dir_all(&root);
        let start = process.start_time_seconds.take().unwrap();
        assert!((start - 1_700_000_123.45).abs() < 1e-6, "{start}");
        assert_eq!(
            process,
            Process {
                open_fds: Some(3.0),
                max_fds: Some(65536.0),
                threads: Some(9.0),
                resident_memory_bytes: Some(4096.0 * 1024.0),
                virtual_memory_bytes: Some(20480.0 * 1024.0),
                cpu_seconds: Some(3.0),
                start_time_seconds: None,
            }
        );
    }

    #[test]
    fn a_missing_proc_gives_nothing_rather_than_zeroes() {
        let nowhere = Path::new("/nonexistent-proc");
        assert_eq!(Process::read_from(nowhere, nowhere), Process::default());
    }
}
