//! The processes of an instance: every process in its init's pid namespace, read
//! from the host's /proc and shown with `ps -ef`'s columns (the numbered containers face).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// One process, with what `ps -ef` shows of it and pids as the instance sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The owner (`root` for 0, else the number).
    pub user: String,
    /// Its pid inside the instance.
    pub pid: i64,
    /// Its parent's pid inside the instance (0 for the init).
    pub parent_pid: i64,
    /// CPU use over its lifetime, in percent.
    pub cpu_percent: i64,
    /// When it started (`HH:MM` UTC today, else the date).
    pub start_time: String,
    /// Its terminal, `?` for none.
    pub tty: String,
    /// CPU time used, `[DD-]HH:MM:SS`.
    pub cpu_time: String,
    /// Its command line.
    pub command: String,
}

/// What one process's /proc files say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcStat {
    host_ppid: i64,
    tty_nr: i64,
    cpu_ticks: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`; the command name may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields from 3 (state) on: ppid is 4, tty_nr 7, utime 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    Some(ProcStat {
        host_ppid: field(4)?,
        tty_nr: field(7)?,
        cpu_ticks: (field(14)? + field(15)?) as u64,
        start_ticks: field(22)? as u64,
    })
}

/// The uid and the innermost pid from `/proc/<pid>/status`.
fn parse_status(status: &str) -> Option<(u32, i64)> {
    let value = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let uid = value("Uid:")?.split_whitespace().next()?.parse().ok()?;
    let ns_pid = value("NSpid:")?.split_whitespace().last()?.parse().ok()?;
    Some((uid, ns_pid))
}

fn tty_name(tty_nr: i64) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 => format!("tty{minor}"),
        _ => format!("{major}/{minor}"),
    }
}

/// `[DD-]HH:MM:SS`, as ps shows CPU time.
fn cpu_time(spent: Duration) -> String {
    let s = spent.as_secs();
    let (days, hours, minutes, seconds) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}-{hours:02}:{minutes:02}:{seconds:02}")
    } else {
        format!("{hours:02}:{minutes:02}:{seconds:02}")
    }
}

/// HH:MM for a start today (UTC), else YYYY-MM-DD.
fn start_time(started: SystemTime, now: SystemTime) -> String {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    };
    let (start, today) = (secs(started), secs(now));
    if start / 86400 == today / 86400 {
        format!("{:02}:{:02}", start / 3600 % 24, start / 60 % 60)
    } else {
        let (year, month, day) = civil_date(start / 86400);
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// The calendar date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The processes in the pid namespace of host pid `init`, init first, then by pid.
pub(crate) fn list(init: i32) -> std::io::Result<Vec<ProcessInfo>> {
    let proc = Path::new("/proc");
    let namespace = std::fs::read_link(proc.join(init.to_string()).join("ns/pid"))?;
    // Users as the instance sees them: its user namespace maps them from the host's.
    let uid_map = std::fs::read_to_string(proc.join(init.to_string()).join("uid_map"))?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let boot = boot_time()?;
    let now = SystemTime::now();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(proc)? {
        let Some(host_pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let dir = proc.join(host_pid.to_string());
        // Processes end while we look: whatever cannot be read is skipped.
        if std::fs::read_link(dir.join("ns/pid")).ok().as_ref() != Some(&namespace) {
            continue;
        }
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let (Some(stat), Some((uid, ns_pid))) = (parse_stat(&stat), parse_status(&status)) else {
            continue;
        };
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        found.push((host_pid, ns_pid, uid, stat, cmdline));
    }
    let ns_pid_of: HashMap<i64, i64> = found.iter().map(|(host, ns, ..)| (*host, *ns)).collect();
    let mut rows: Vec<ProcessInfo> = found
        .into_iter()
        .map(|(_, ns_pid, uid, stat, cmdline)| {
            let started =
                boot + Duration::from_secs_f64(stat.start_ticks as f64 / ticks_per_second as f64);
            let spent = Duration::from_secs_f64(stat.cpu_ticks as f64 / ticks_per_second as f64);
            let alive = now
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64();
            let cmd = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            ProcessInfo {
                user: match crate::id_range::id_inside(&uid_map, uid) {
                    Some(0) => "root".into(),
                    Some(uid) => uid.to_string(),
                    // What the kernel shows for an id the namespace cannot name.
                    None => "65534".into(),
                },
                pid: ns_pid,
                parent_pid: ns_pid_of.get(&stat.host_ppid).copied().unwrap_or(0),
                cpu_percent: if alive > 0.0 {
                    (spent.as_secs_f64() / alive * 100.0) as i64
                } else {
                    0
                },
                start_time: start_time(started, now),
                tty: tty_name(stat.tty_nr),
                cpu_time: cpu_time(spent),
                command: cmd,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.pid);
    Ok(rows)
}

/// When the machine booted, from /proc/stat's `btime`.
fn boot_time() -> std::io::Result<SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let seconds = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| std::io::Error::other("/proc/stat has no btime line"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (my (odd) cmd) S 4240 4242 4242 34816 -1 4194304 102 0 0 0 7 3 0 0 20 0 1 0 7270536 3133440 356";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                host_ppid: 4240,
                tty_nr: 34816,
                cpu_ticks: 10,
                start_ticks: 7270536
            })
        );
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name(0), "?");
    }

    #[test]
    fn status_gives_the_uid_and_the_innermost_pid() {
        let status = "Name:\tsh\nPPid:\t12\nUid:\t1000\t1000\t1000\t1000\nNSpid:\t5123\t7\n";
        assert_eq!(parse_status(status), Some((1000, 7)));
    }

    #[test]
    fn times_read_as_ps_prints_them() {
        assert_eq!(cpu_time(Duration::from_secs(3661)), "01:01:01");
        assert_eq!(cpu_time(Duration::from_secs(90061)), "1-01:01:01");
        let noon = SystemTime::UNIX_EPOCH + Duration::from_secs(86400 * 20000 + 12 * 3600 + 5 * 60);
        assert_eq!(start_time(noon, noon + Duration::from_secs(60)), "12:05");
        assert_eq!(
            start_time(noon, noon + Duration::from_secs(86400)),
            "2024-10-04"
        );
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
    }

    #[test]
    fn this_process_sees_itself_in_its_own_namespace() {
        let rows = list(std::process::id() as i32).unwrap();
        let me = rows
            .iter()
            .find(|r| r.command.contains("ember_sandbox"))
            .expect("the test binary is listed");
        assert_eq!(me.user, "root");
    }
}
