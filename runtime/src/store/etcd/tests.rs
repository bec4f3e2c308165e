//! The conformance suite on a real etcd (Debian's `etcd-server`): one etcd per
//! test binary, on loopback ports of its own, each test under a key prefix of
//! its own.

use super::{EtcdConfig, EtcdStore};
use crate::store::Store;
use crate::store::conformance::{StorePlace, store_conformance_suite};
use std::sync::{Arc, OnceLock};

struct EtcdPlace(EtcdConfig);

#[async_trait::async_trait]
impl StorePlace for EtcdPlace {
    async fn open(&self) -> Store {
        Arc::new(EtcdStore::open(self.0.clone()).await.unwrap())
    }
}

/// A place of its own on the test etcd.
fn place(node_name: &str) -> EtcdPlace {
    EtcdPlace(EtcdConfig {
        endpoints: vec![test_etcd().to_string()],
        prefix: format!("/test-{}/", uuid::Uuid::new_v4()),
        node_name: node_name.into(),
    })
}

store_conformance_suite!(place("node-1"));

/// The client URL of this binary's etcd, started on first use and killed with
/// the process (its parent thread lives as long as the process).
fn test_etcd() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (started, url) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let etcd = start_etcd();
            started
                .send(
                    etcd.as_ref()
                        .map(|(url, _)| url.clone())
                        .map_err(Clone::clone),
                )
                .unwrap();
            let _kept = etcd;
            loop {
                std::thread::park();
            }
        });
        url.recv().unwrap().unwrap_or_else(|e| panic!("{e}"))
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_etcd() -> Result<(String, (std::process::Child, tempfile::TempDir)), String> {
    use std::os::unix::process::CommandExt;
    let base = ["/dev/shm", "/tmp"]
        .into_iter()
        .find(|dir| std::path::Path::new(dir).is_dir())
        .unwrap();
    let data = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut command = std::process::Command::new("etcd");
    command
        .args(["--name", "test", "--data-dir"])
        .arg(data.path())
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .args(["--log-level", "error"])
        .stdout(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe; the etcd dies with this test binary.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        format!("starting etcd (Debian's etcd-server; scripts/test installs it): {e}")
    })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err("etcd did not listen within 20 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok((client_url, (child, data)))
}

#[tokio::test]
async fn nodes_share_records_but_each_keeps_its_own_server_id_and_running_instances() {
    let first = place("node-1");
    let second = EtcdPlace(EtcdConfig {
        node_name: "node-2".into(),
        ..first.0.clone()
    });
    let (a, b) = (first.open().await, second.open().await);
    assert_ne!(a.server_id(), b.server_id());
    assert_eq!(a.admin_user_id(), b.admin_user_id());
    // A node that joins again keeps its id.
    assert_eq!(first.open().await.server_id(), a.server_id());
    let owner = crate::model::UserId::generate();
    let (container, revision) = crate::store::conformance::container("shared", owner);
    a.insert_container(container.clone(), revision)
        .await
        .unwrap();
    assert_eq!(
        b.container(container.id).await.unwrap().unwrap().id,
        container.id
    );
    let instance = crate::model::RunningInstance {
        container: container.id,
        revision: 1,
        instance: crate::model::InstanceId::generate(),
        ordinal: 0,
        created: std::time::SystemTime::now(),
        pinned: false,
    };
    a.record_running("sandbox-a".into(), instance)
        .await
        .unwrap();
    let blocking = |store: Store| {
        std::thread::spawn(move || store.running_blocking().unwrap())
            .join()
            .unwrap()
    };
    assert_eq!(blocking(a.clone()).len(), 1);
    assert!(blocking(b.clone()).is_empty());
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_unavailable_error_and_the_store_s_fault() {
    let place = place("node-1");
    let store = place.open().await;
    let unreachable = EtcdPlace(EtcdConfig {
        endpoints: vec![format!("http://127.0.0.1:{}", free_port())],
        ..place.0.clone()
    });
    let opened = EtcdStore::open(unreachable.0.clone()).await;
    let Err(e) = opened else {
        panic!("opened a store on a closed port")
    };
    assert!(
        matches!(
            e,
            crate::error::RuntimeError::Storage(crate::store::StoreError::Unavailable(_))
        ),
        "{e}"
    );
    assert!(store.fault().is_none());
}
