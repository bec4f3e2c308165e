//! Real etcd (Debian's `etcd-server`) for `ember bench --cluster` and the tests:
//! members on loopback ports of their own, their data in a temporary directory,
//! killed when dropped (and with the process that started them).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster of etcd members on loopback, each of which can be killed and
/// started again on its data; one member is the usual single etcd.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    data: tempfile::TempDir,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl EtcdCluster {
    /// Starts `n` members and waits until each listens.
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let data = tempfile::tempdir_in(base)?;
        let members = (0..n)
            .map(|i| {
                Ok(Member {
                    name: format!("m{i}"),
                    client: free_port()?,
                    peer: free_port()?,
                    child: None,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            initial_cluster,
            data,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_listening(i)?;
        }
        Ok(cluster)
    }

    /// Every member's client URL, comma separated (as `--cluster` takes them).
    pub fn urls(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let member = &self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let mut command = Command::new("etcd");
        command
            .args(["--name", &member.name, "--data-dir"])
            .arg(self.data.path().join(&member.name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the member dies with the thread
        // that started it (the bench's main thread, or a test's).
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().map_err(|e| {
            anyhow::anyhow!("starting etcd (Debian's etcd-server; scripts/test installs it): {e}")
        })?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn wait_listening(&self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.members[i].client)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "etcd member {i} did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_listening(i)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
