//! What a child process costs, read from `/proc`: CPU time (a busy loop
//! shows up there and nowhere else) and open file descriptors.

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
