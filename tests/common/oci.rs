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
    /// A bridge name and a /24 of this test's own: one no interface of the host
    /// has an address in (a bridge a killed test left behind keeps its route,
    /// and a runtime refuses a subnet another interface has).
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let second = 200 + (pid + n / 256) % 50;
            let subnet = format!("10.{second}.{}.0/24", n % 256);
            if !routed(std::net::Ipv4Addr::new(
                10,
                second as u8,
                (n % 256) as u8,
                0,
            )) {
                return Self {
                    bridge: format!("embt{:x}{n}", pid % 0xffff),
                    subnet,
                };
            }
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

/// Whether the host routes `network`/24 somewhere already (`/proc/net/route`
/// prints each destination and mask as the kernel holds them: little-endian
/// here).
fn routed(network: std::net::Ipv4Addr) -> bool {
    let table = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parse = |i: usize| {
            fields
                .get(i)
                .and_then(|f| u32::from_str_radix(f, 16).ok())
                .map(|v| std::net::Ipv4Addr::from(v.to_le_bytes()))
        };
        match (parse(1), parse(7)) {
            (Some(destination), Some(mask)) if mask != std::net::Ipv4Addr::UNSPECIFIED => {
                let mask = u32::from(mask);
                u32::from(destination) & mask == u32::from(network) & mask
            }
            _ => false,
        }
    })
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
