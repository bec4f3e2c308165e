//! The helper process that puts a command inside a running instance, as `docker
//! exec` does: it joins the instance's cgroups and namespaces, forks (a pid
//! namespace only takes children), and the child takes the instance's root, user,
//! capability bounds, no-new-privileges and seccomp filter before it executes the
//! command. It is this executable started afresh, so it is single-threaded and may
//! fork safely; [`super::enter`] starts it.

use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

/// The first argument that makes the executable a joiner.
pub(crate) const JOIN_ARG: &str = "__ember-enter-instance";

/// Namespaces joined, in order: the cgroup namespace once the process is in the
/// instance's cgroups, the mount namespace last (it changes what paths mean).
const NAMESPACES: [&str; 6] = ["cgroup", "ipc", "uts", "net", "pid", "mnt"];

/// When this process was started as a joiner (`JOIN_ARG <pid> <argv...>`): runs the
/// command inside the instance whose init is `<pid>` and exits with its status.
/// Otherwise returns at once.
pub fn run_if_joiner() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(JOIN_ARG) {
        return;
    }
    let pid: Option<i32> = args.next().and_then(|p| p.parse().ok());
    let argv: Vec<String> = args.collect();
    let (Some(pid), false) = (pid, argv.is_empty()) else {
        eprintln!("ember: a joiner takes the init's pid and a command");
        std::process::exit(2);
    };
    match join_and_run(pid, &argv) {
        Ok(code) => std::process::exit(code),
        Err(reason) => {
            eprintln!("ember: entering the instance failed: {reason}");
            std::process::exit(126);
        }
    }
}

/// What the joined process takes from the instance's init.
struct Credentials {
    uid: u32,
    gid: u32,
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

impl Credentials {
    /// Reads them from `/proc/<pid>/status`.
    fn of(pid: i32) -> Result<Self, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("reading the init's status: {e}"))?;
        let field = |name: &str| -> Result<&str, String> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .ok_or_else(|| format!("the init's status has no {name}"))
        };
        let first_id = |name: &str| -> Result<u32, String> {
            field(name)?
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("the init's {name} is unreadable"))
        };
        let mask = |name: &str| -> Result<u64, String> {
            u64::from_str_radix(field(name)?, 16)
                .map_err(|e| format!("the init's {name} is unreadable: {e}"))
        };
        Ok(Self {
            uid: first_id("Uid")?,
            gid: first_id("Gid")?,
            bounding: mask("CapBnd")?,
            effective: mask("CapEff")?,
            permitted: mask("CapPrm")?,
            inheritable: mask("CapInh")?,
        })
    }
}

/// The init's user namespace, when it is not this process's: joined first, so that
/// the joiner holds its capabilities over the namespaces the instance owns, and so
/// that the command runs as the instance's ids, not host root.
fn user_namespace_apart(pid: i32) -> Result<Option<File>, String> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .map_err(|e| format!("reading its user namespace: {e}"))?;
    let ours = std::fs::metadata("/proc/self/ns/user")
        .map_err(|e| format!("reading our user namespace: {e}"))?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Ok(None);
    }
    File::open(format!("/proc/{pid}/ns/user"))
        .map(Some)
        .map_err(|e| format!("opening its user namespace: {e}"))
}

/// The init's credentials, with ids as its user namespace sees them.
fn credentials_inside(pid: i32, in_namespace: bool) -> Result<Credentials, String> {
    let mut credentials = Credentials::of(pid)?;
    if in_namespace {
        let map = |file: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                .map_err(|e| format!("reading its {file}: {e}"))
        };
        let (uid_map, gid_map) = (map("uid_map")?, map("gid_map")?);
        credentials.uid = crate::id_range::id_inside(&uid_map, credentials.uid)
            .ok_or_else(|| format!("uid {} is not mapped", credentials.uid))?;
        credentials.gid = crate::id_range::id_inside(&gid_map, credentials.gid)
            .ok_or_else(|| format!("gid {} is not mapped", credentials.gid))?;
    }
    Ok(credentials)
}

fn join_and_run(pid: i32, argv: &[String]) -> Result<i32, String> {
    let user_namespace = user_namespace_apart(pid)?;
    let credentials = credentials_inside(pid, user_namespace.is_some())?;
    let namespaces = NAMESPACES
        .iter()
        .map(|ns| {
            File::open(format!("/proc/{pid}/ns/{ns}"))
                .map_err(|e| format!("opening its {ns} namespace: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let root =
        File::open(format!("/proc/{pid}/root")).map_err(|e| format!("opening its root: {e}"))?;
    for procs in cgroup_procs_files(pid)? {
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| format!("joining {}: {e}", procs.display()))?;
    }
    if let Some(file) = &user_namespace {
        setns(file.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("joining its user namespace: {e}"))?;
    }
    for (ns, file) in NAMESPACES.iter().zip(&namespaces) {
        setns(file.as_fd(), CloneFlags::empty())
            .map_err(|e| format!("joining its {ns} namespace: {e}"))?;
    }
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| "a NUL in the command".to_string()))
        .collect::<Result<_, _>>()?;
    // SAFETY: this process is single-threaded (a fresh executable that started no
    // thread), so the child may do anything before it executes.
    match unsafe { fork() }.map_err(|e| format!("forking: {e}"))? {
        ForkResult::Child => {
            let reason = become_the_instance(&root, &credentials, &argv);
            eprintln!("ember: {reason}");
            std::process::exit(127);
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waiting for the command: {e}")),
            }
        },
    }
}

/// In the forked child: the instance's root, user and limits, then the command.
/// Returns only why it could not execute it.
fn become_the_instance(root: &File, credentials: &Credentials, argv: &[CString]) -> String {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; the joiner's end
    // (its session closed) takes the command with it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if let Err(e) = nix::unistd::fchdir(root.as_raw_fd())
        .and_then(|()| nix::unistd::chroot("."))
        .and_then(|()| nix::unistd::chdir("/"))
    {
        return format!("taking the instance's root: {e}");
    }
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes the value 1.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return format!("no_new_privs: {}", std::io::Error::last_os_error());
    }
    for cap in 0..64 {
        // SAFETY: prctl reads or drops one capability of the bounding set.
        let known = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } >= 0;
        if known && credentials.bounding & (1 << cap) == 0 {
            // SAFETY: as above.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                return format!(
                    "dropping capability {cap}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    let gid = Gid::from_raw(credentials.gid);
    if let Err(e) = nix::unistd::setgroups(&[gid]).and_then(|()| nix::unistd::setgid(gid)) {
        return format!("taking group {gid}: {e}");
    }
    if credentials.uid != 0 {
        // Leaving uid 0 clears every capability.
        if let Err(e) = nix::unistd::setuid(Uid::from_raw(credentials.uid)) {
            return format!("taking user {}: {e}", credentials.uid);
        }
    } else {
        // Inside a user namespace this process is still host root, which the
        // namespace cannot show: it takes the namespace's root, and (going from
        // root to root) keeps its capabilities. Without one, nothing changes.
        if let Err(e) = nix::unistd::setuid(Uid::from_raw(0)) {
            return format!("taking user 0: {e}");
        }
        if let Err(e) = set_capabilities(credentials) {
            return format!("setting capabilities: {e}");
        }
    }
    match super::seccomp::default_profile() {
        Ok(program) => {
            if let Err(e) = seccompiler::apply_filter(&program) {
                return format!("applying the seccomp filter: {e}");
            }
        }
        Err(e) => return format!("compiling the seccomp filter: {e}"),
    }
    match nix::unistd::execvp(&argv[0], argv) {
        Err(e) => format!("executing {}: {e}", argv[0].to_string_lossy()),
    }
}

/// Sets the effective, permitted and inheritable sets to the init's.
fn set_capabilities(credentials: &Credentials) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |mask: u64, high: bool| (if high { mask >> 32 } else { mask }) as u32;
    let data = [false, true].map(|high| Data {
        effective: half(credentials.effective, high),
        permitted: half(credentials.permitted, high),
        inheritable: half(credentials.inheritable, high),
    });
    // SAFETY: capset reads a version-3 header and two data structs.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The `cgroup.procs` of every hierarchy the init belongs to, from
/// `/proc/<pid>/cgroup`: v1 controllers under `/sys/fs/cgroup/<controllers>`, v2
/// at `/sys/fs/cgroup` or, on a hybrid host, `/sys/fs/cgroup/unified`.
fn cgroup_procs_files(pid: i32) -> Result<Vec<PathBuf>, String> {
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("reading the init's cgroups: {e}"))?;
    Ok(procs_files(
        &membership,
        Path::new("/sys/fs/cgroup"),
        |path| path.exists(),
    ))
}

fn procs_files(membership: &str, root: &Path, exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    membership
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let relative = path.trim_start_matches('/');
            let bases: Vec<PathBuf> = match controllers {
                "" => vec![root.join("unified"), root.to_path_buf()],
                named => vec![root.join(named.trim_start_matches("name="))],
            };
            bases
                .into_iter()
                .map(|base| base.join(relative).join("cgroup.procs"))
                .find(|procs| exists(procs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hierarchy_of_the_init_is_found_on_v1_v2_and_hybrid_hosts() {
        let root = Path::new("/sys/fs/cgroup");
        let hybrid =
            "12:cpu,cpuacct:/ember/x\n4:memory:/ember/x\n1:name=systemd:/ember/x\n0::/ember/x\n";
        let on_hybrid = procs_files(hybrid, root, |p| !p.starts_with("/sys/fs/cgroup/ember"));
        assert_eq!(
            on_hybrid,
            [
                "/sys/fs/cgroup/cpu,cpuacct/ember/x/cgroup.procs",
                "/sys/fs/cgroup/memory/ember/x/cgroup.procs",
                "/sys/fs/cgroup/systemd/ember/x/cgroup.procs",
                "/sys/fs/cgroup/unified/ember/x/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
        let on_v2 = procs_files("0::/ember/x\n", root, |p| {
            p == Path::new("/sys/fs/cgroup/ember/x/cgroup.procs")
        });
        assert_eq!(
            on_v2,
            [PathBuf::from("/sys/fs/cgroup/ember/x/cgroup.procs")]
        );
    }

    #[test]
    fn the_init_s_credentials_are_read_from_its_status() {
        let me = Credentials::of(std::process::id() as i32).unwrap();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert_eq!(me.gid, nix::unistd::getgid().as_raw());
        assert!(me.bounding != 0);
    }
}
