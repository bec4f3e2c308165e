//! What the OCI tests share: root, a network of each test's own, a registry holding
//! the busybox httpd image, and Ember running on them.

use super::oci_image::push_busybox_http_image;
use super::{Ember, registry::Registry, temp_dir};
use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "OCI container tests need root (CI runs them as root); run `scripts/test` as root"
    );
}

/// A bridge and subnet of this test's own, removed when the test ends.
pub struct TestNetwork {
    pub bridge: String,
    pub subnet: String,
}

impl TestNetwork {
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        Self {
            bridge: format!("embt{:x}{n}", pid % 0xffff),
            subnet: format!("10.{}.{}.0/24", 200 + (pid % 50), n),
        }
    }

    pub fn flags(&self) -> Vec<String> {
        vec![
            "--bridge".into(),
            self.bridge.clone(),
            "--subnet".into(),
            self.subnet.clone(),
            "--stop-grace".into(),
            "1".into(),
        ]
    }
}

impl Drop for TestNetwork {
    /// Removes the bridge and the runtime's guard of it (an nftables table: the
    /// kernel takes about a thousand of them).
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let _ = std::process::Command::new("nft")
            .args([
                "delete",
                "table",
                "bridge",
                &format!("ember_{}", self.bridge.replace('-', "_")),
            ])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// What most tests start from: a registry holding the busybox httpd image (`image`),
/// a network and data dir of the test's own, and Ember running on them.
pub struct Setup {
    pub ember: Ember,
    pub data: tempfile::TempDir,
    pub image: String,
    pub network: TestNetwork,
    pub _registry: Registry,
}

pub async fn setup(extra: &[&str]) -> Setup {
    let registry = Registry::start().unwrap();
    push_busybox_http_image(registry.addr, "apps/httpd", "v1")
        .await
        .unwrap();
    let network = TestNetwork::new();
    let data = temp_dir();
    let ember = start(data.path(), &network, extra);
    Setup {
        ember,
        image: format!("{}/apps/httpd:v1", registry.addr),
        data,
        network,
        _registry: registry,
    }
}

pub fn start(data: &Path, network: &TestNetwork, extra: &[&str]) -> Ember {
    let mut flags = network.flags();
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Ember::start(data, &flags)
}

pub async fn deploy(ember: &Ember, body: Value) -> String {
    let container = ember.deploy(body).await;
    let id = container["id"].as_str().unwrap().to_string();
    ember.wait_deployed(&id).await;
    id
}

pub async fn get(ember: &Ember, name: &str, path: &str) -> (StatusCode, String) {
    let response = ember
        .ingress_client(name)
        .get(ember.ingress_url(name, path))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Where the runtime whose data directory is `data` keeps its instances' directories
/// (under /run/ember, where an instance's unprivileged root reaches; the data
/// directory links to it).
pub fn instances_dir(data: &Path) -> PathBuf {
    std::fs::canonicalize(data.join("oci/instances"))
        .expect("the runtime links its instances directory from its data directory")
}
