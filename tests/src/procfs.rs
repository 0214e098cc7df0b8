//! What a child process costs and holds, read from `/proc`: CPU time (a
//! busy loop shows up there and nowhere else), open file descriptors, its
//! TCP sockets, and its descriptor limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`;
/// 100 on every Linux this runs on when `getconf` is missing).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU time of process `pid` so far (its threads included).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no ')' in stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields.get(i).context("short stat line")?.parse::<u64>().context("stat field is not a number")
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / clock_ticks()))
}

/// CPU used by `pid` over `window`, as a fraction of one core.
pub async fn cpu_share(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let (before, started) = (cpu_time(pid)?, Instant::now());
    tokio::time::sleep(window).await;
    let used = cpu_time(pid)?.saturating_sub(before);
    Ok(used.as_secs_f64() / started.elapsed().as_secs_f64())
}

/// File descriptors `pid` has open now.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    Ok(std::fs::read_dir(&dir).with_context(|| dir.display().to_string())?.count())
}

/// One TCP socket of a process (IPv4, as everything here is on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// Local port.
    pub local_port: u16,
    /// Remote port (0 for a listener).
    pub remote_port: u16,
    /// The kernel's state number (`01` established, `08` close-wait, `0A` listen).
    pub state: u8,
}

/// The TCP sockets `pid` holds: its descriptors' socket inodes matched
/// against `/proc/<pid>/net/tcp`.
pub fn tcp_sockets(pid: u32) -> anyhow::Result<Vec<TcpSocket>> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))?;
    let port = |addr: &str| addr.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()).unwrap_or(0);
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, inode) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(9)?);
            inodes.contains(*inode).then(|| TcpSocket {
                local_port: port(local),
                remote_port: port(remote),
                state: u8::from_str_radix(state, 16).unwrap_or(0),
            })
        })
        .collect())
}

/// The soft `Max open files` limit of `pid`.
pub fn nofile_limit(pid: u32) -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no Max open files line")?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next().context("no soft limit")?;
    soft.parse().context("soft limit is not a number")
}

/// A launcher script that runs the program it is given with
/// `RLIMIT_NOFILE` set to `limit` (soft and hard), for
/// [`crate::ProxyProcess::start_with_env`] as its `bin`: the workspace
/// forbids unsafe code, so no `pre_exec` in the test itself. The real
/// binary comes from `PINROUTE_REAL_BIN` in the child's environment.
pub fn nofile_launcher(limit: u64) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join("pinroute-tests");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("nofile-{limit}-{}.sh", std::process::id()));
    // `exec` keeps the process id: the kit's pid is the proxy's.
    let script = format!("#!/bin/sh\nulimit -n {limit} || exit 97\nexec \"$PINROUTE_REAL_BIN\" \"$@\"\n");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}
