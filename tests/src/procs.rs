//! Finding processes by command line or name, their parent and their CPU time, from `/proc`.

/// PIDs of live processes whose NUL-split command line satisfies `pred`.
pub fn find(pred: impl Fn(&[String]) -> bool) -> Vec<u32> {
    pids()
        .filter(|pid| alive(*pid) && pred(&cmdline(*pid)))
        .collect()
}

/// Every PID in `/proc` now.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

/// The command line of `pid`, one string per argument.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|s| s != "Z" && s != "X")
}

/// The session `pid` belongs to (the PID of its session leader).
pub fn session(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(3)?.parse().ok()
}

/// Parent PID of `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// The TCP port `pid` listens on (the first, if several), read from its sockets and its
/// network namespace's socket tables: for a server told to bind port 0, which does not say
/// which port it got.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is fields[1] (`ADDR:PORT` in hex), st fields[3] (0A: LISTEN),
            // inode fields[9].
            let listening = fields.get(3) == Some(&"0A");
            let ours = fields.get(9).is_some_and(|i| inodes.iter().any(|n| n == i));
            if !(listening && ours) {
                return None;
            }
            let port = fields.get(1)?.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
    })
}

/// A process stopped with SIGSTOP (alive, answering nothing: a deadlocked process, to its
/// peers), resumed when this is dropped, however the test ends.
pub struct Stopped(u32);

pub fn stop(pid: u32) -> Stopped {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    Stopped(pid)
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// CPU time of the processes `pids`, every thread's, from /proc's scheduler statistics
/// (nanoseconds; the tick-sampled utime and stime charge an idle shim's rare short wake-ups
/// to nobody).
pub fn cpu_time(pids: &[u32]) -> std::time::Duration {
    sched(pids).cpu
}

/// What the scheduler counted of a set of processes so far, over every thread.
#[derive(Debug, Clone, Copy)]
pub struct Sched {
    pub cpu: std::time::Duration,
    /// Timeslices: each is a wake-up or a preemption's return.
    pub switched_in: u64,
}

/// The CPU time and timeslices of every thread of `pids`, from one read of each thread's
/// /proc scheduler statistics.
pub fn sched(pids: &[u32]) -> Sched {
    let (nanos, switched_in) = pids
        .iter()
        .flat_map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .filter_map(|task| {
                    let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                    let mut fields = stat.split_whitespace();
                    let cpu = fields.next()?.parse::<u64>().ok()?;
                    let slices = fields.nth(1)?.parse::<u64>().ok()?;
                    Some((cpu, slices))
                })
        })
        .fold((0, 0), |(cpu, slices), (c, s)| (cpu + c, slices + s));
    Sched {
        cpu: std::time::Duration::from_nanos(nanos),
        switched_in,
    }
}

/// PIDs of live processes whose name (`/proc/<pid>/comm`, cut at 15 bytes) is one of `names`.
pub fn named(names: &[&str]) -> Vec<u32> {
    pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| names.contains(&comm.trim_end()))
        })
        .collect()
}
