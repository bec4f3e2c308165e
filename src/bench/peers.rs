//! The tools people would use instead, run on the same workloads in the same run:
//! `crun run` and `runc run` of a bundle made from the busybox httpd image,
//! `wasmtime serve` on the hello component, and nginx proxying to the same
//! container instance Ember's ingress proxies to.

use super::load::Endpoint;
use super::servers::spawn_tied_to_bench;
use anyhow::{Context, bail, ensure};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hidden argument that runs [`time_runs`] in a process of its own (for crun,
/// one whose mount namespace is private: see [`container_runs`]).
const RUNS_FLAG: &str = "__ember-bench-container-runs";

/// What one `run` of the bundle measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// `run` of `/bin/true`, from spawn to exit: container start.
    True,
    /// `run` of busybox httpd on a loopback port in the host's network namespace,
    /// from spawn to the first byte of an HTTP answer; then kill and delete.
    FirstByte,
}

impl RunMode {
    fn name(self) -> &'static str {
        match self {
            Self::True => "true",
            Self::FirstByte => "first-byte",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [Self::True, Self::FirstByte]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// A runtime binary on `PATH`, when installed.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// A bundle for crun and runc: the image's layers unpacked as its rootfs and a
/// config for `mode` (httpd binds `port` on loopback).
pub fn write_bundle(
    dir: &Path,
    layers: &[&[u8]],
    mode: RunMode,
    port: u16,
) -> anyhow::Result<PathBuf> {
    let bundle = dir.join(format!("bundle-{}", mode.name()));
    let rootfs = bundle.join("rootfs");
    if !rootfs.exists() {
        std::fs::create_dir_all(&rootfs)?;
        for tar in layers {
            tar::Archive::new(*tar)
                .unpack(&rootfs)
                .context("unpacking a layer for the peers' bundle")?;
        }
    }
    let args: Vec<String> = match mode {
        RunMode::True => vec!["/bin/true".into()],
        RunMode::FirstByte => [
            "/bin/httpd",
            "-f",
            "-p",
            &format!("127.0.0.1:{port}"),
            "-h",
            "/www",
        ]
        .map(String::from)
        .to_vec(),
    };
    // The host's network namespace for httpd, so the bench reaches it on loopback
    // without network set-up that Ember's figure would not include either way.
    let namespaces: Vec<serde_json::Value> = ["pid", "ipc", "uts", "mount"]
        .into_iter()
        .chain((mode == RunMode::True).then_some("network"))
        .map(|kind| serde_json::json!({ "type": kind }))
        .collect();
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true,
        },
        "root": { "path": rootfs, "readonly": true },
        "hostname": "bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"] },
        ],
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
        },
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec)?,
    )?;
    Ok(bundle)
}

/// Times `count` runs of `bundle` by `runtime` (crun or runc) in a process of its
/// own. crun refuses a hybrid cgroup layout, so on such a machine its runs happen
/// in a private mount namespace with /sys/fs/cgroup/unified unmounted (what it
/// sees there is plain cgroup v1).
pub fn container_runs(
    runtime: &Path,
    bundle: &Path,
    mode: RunMode,
    port: u16,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let me = std::env::current_exe()?;
    let mut command = if runtime.ends_with("crun") {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"")
            .arg(&me);
        c
    } else {
        Command::new(&me)
    };
    let output = command
        .arg(RUNS_FLAG)
        .arg(runtime)
        .arg(bundle)
        .arg(mode.name())
        .arg(port.to_string())
        .arg(count.to_string())
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("timing {}", runtime.display()))?;
    ensure!(
        output.status.success(),
        "{} runs failed: {}",
        runtime.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| Ok(Duration::from_nanos(l.parse()?)))
        .collect()
}

/// When this process was started by [`container_runs`]: times the runs, prints one
/// duration in nanoseconds per line, and exits.
pub fn run_if_container_runs() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(RUNS_FLAG) {
        return;
    }
    let result = (|| {
        let [_, runtime, bundle, mode, port, count] = &args[..] else {
            bail!("usage: {RUNS_FLAG} RUNTIME BUNDLE MODE PORT COUNT");
        };
        let mode = RunMode::parse(mode).context("unknown mode")?;
        for sample in time_runs(
            Path::new(runtime),
            Path::new(bundle),
            mode,
            port.parse()?,
            count.parse()?,
        )? {
            println!("{}", sample.as_nanos());
        }
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn time_runs(
    runtime: &Path,
    bundle: &Path,
    mode: RunMode,
    port: u16,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    (0..count)
        .map(|n| {
            let id = format!("ember-bench-{}-{n}", std::process::id());
            let began = Instant::now();
            let mut child = Command::new(runtime)
                .args(["run", "--bundle"])
                .arg(bundle)
                .arg(&id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", runtime.display()))?;
            let took = match mode {
                RunMode::True => {
                    let status = child.wait()?;
                    ensure!(
                        status.success(),
                        "{} run exited with {status}",
                        runtime.display()
                    );
                    began.elapsed()
                }
                RunMode::FirstByte => {
                    let answered = wait_first_byte(addr, &mut child);
                    let took = began.elapsed();
                    let _ = Command::new(runtime).args(["kill", &id, "KILL"]).status();
                    let _ = child.wait();
                    answered?;
                    took
                }
            };
            let _ = Command::new(runtime)
                .args(["delete", "-f", &id])
                .stderr(Stdio::null())
                .status();
            Ok(took)
        })
        .collect()
}

/// Polls `addr` with a GET until a byte of an answer comes back.
fn wait_first_byte(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            stream.set_nodelay(true)?;
            if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                && stream.read(&mut [0u8; 1]).is_ok_and(|n| n == 1)
            {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("the container exited ({status}) before answering");
        }
        if Instant::now() > deadline {
            bail!("no answer on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A peer server this bench started, stopped when dropped.
pub struct PeerServer {
    child: Child,
    pub endpoint: Endpoint,
    _dir: tempfile::TempDir,
}

impl PeerServer {
    /// `wasmtime serve` of `component` on a free loopback port.
    pub fn wasmtime_serve(wasmtime: &Path, component: &[u8]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("component.wasm");
        std::fs::write(&file, component)?;
        let addr = crate::workloads::registry::free_loopback_port()?;
        let child = spawn_tied_to_bench(
            Command::new(wasmtime)
                .arg("serve")
                .arg("--addr")
                .arg(addr.to_string())
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .with_context(|| format!("starting {}", wasmtime.display()))?;
        Self::listening(child, addr, dir)
    }

    /// nginx proxying a loopback port to `upstream`, with as many workers as the
    /// machine has cores and kept-alive upstream connections.
    pub fn nginx(nginx: &Path, upstream: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = crate::workloads::registry::free_loopback_port()?;
        let d = dir.path().display();
        let config = format!(
            "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log stderr error;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 upstream app {{ server {upstream}; keepalive 64; }}\n\
             \x20 server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://app;\n\
             \x20     proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config)?;
        let child = spawn_tied_to_bench(
            Command::new(nginx)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&file)
                .args(["-e", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .with_context(|| format!("starting {}", nginx.display()))?;
        Self::listening(child, addr, dir)
    }

    fn listening(
        mut child: Child,
        addr: SocketAddr,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("it exited ({status}) before listening on {addr}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("it did not listen on {addr} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self {
            child,
            endpoint: Endpoint::direct(addr),
            _dir: dir,
        })
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        // SIGTERM: nginx's master then stops its workers, which SIGKILL would orphan.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
