//! CDI devices and GPU scheduling end to end, as root, with fake CDI specs: a device
//! node that is really /dev/zero, an environment variable, a read-only mount and a
//! hook; fake GPUs of two catalogue models. The devices reach busybox containers
//! through libcontainer exactly as a vendor's would. These tests need root and fail
//! (never skip) without it: CI runs as root.

mod common;

use common::oci::{Setup, deploy, get, require_root, setup};
use common::{Ember, temp_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Writes the test's spec directory: `test.ember.dev/fake=zero` (a device node, an
/// environment variable, a read-only mount of `scratch/driver` and a createContainer
/// hook that saves the container's state into `scratch`), `test.ember.dev/lib=z` (a
/// host library mounted as a driver library is, with the linker-cache hook that
/// generated NVIDIA specs name), two fake GPUs (`test.ember.dev/gpu=0`, a t4, and
/// `=1`, an a100), and a spec that fails validation.
fn write_specs(specs: &Path, scratch: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // createContainer hooks run inside the instance's user namespace, as its root:
    // an unprivileged host user, who writes its hook state here and must reach the
    // hook's program, wherever this checkout is.
    std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let hook_program = scratch.join("ember-for-hooks");
    std::fs::copy(env!("CARGO_BIN_EXE_ember"), &hook_program).unwrap();
    std::fs::create_dir_all(scratch.join("driver")).unwrap();
    std::fs::write(scratch.join("driver/marker"), "marker-from-host\n").unwrap();
    let fake = json!({
        "cdiVersion": "0.6.0",
        "kind": "test.ember.dev/fake",
        "devices": [{
            "name": "zero",
            "containerEdits": {
                "deviceNodes": [{ "path": "/dev/fake0", "hostPath": "/dev/zero" }],
                "env": ["FAKE_DEVICE=zero"],
                "mounts": [{
                    "hostPath": scratch.join("driver"),
                    "containerPath": "/opt/fake-driver",
                    "options": ["ro", "nosuid", "nodev", "bind"]
                }],
                "hooks": [{
                    "hookName": "createContainer",
                    "path": "/bin/sh",
                    "args": ["sh", "-c", format!("cat > \"$(mktemp {}/hook-state-XXXXXX)\"", scratch.display())]
                }]
            }
        }]
    });
    let gpus = json!({
        "cdiVersion": "0.6.0",
        "kind": "test.ember.dev/gpu",
        "devices": [
            {
                "name": "0",
                "annotations": { "ember.dev/gpu-model": "t4" },
                "containerEdits": {
                    "deviceNodes": [{ "path": "/dev/fakegpu0", "hostPath": "/dev/null" }],
                    "env": ["FAKE_GPU=0"]
                }
            },
            {
                "name": "1",
                "annotations": { "ember.dev/gpu-model": "a100" },
                "containerEdits": { "env": ["FAKE_GPU=1"] }
            }
        ]
    });
    let library = json!({
        "cdiVersion": "0.6.0",
        "kind": "test.ember.dev/lib",
        "devices": [{
            "name": "z",
            "containerEdits": {
                "mounts": [{
                    "hostPath": std::fs::canonicalize("/lib/x86_64-linux-gnu/libz.so.1").unwrap(),
                    "containerPath": "/opt/fake-lib/libz.so.1",
                    "options": ["ro", "nosuid", "nodev", "bind"]
                }],
                "hooks": [{
                    "hookName": "createContainer",
                    "path": hook_program,
                    "args": ["ember", "gpu", "update-ldcache", "--folder", "/opt/fake-lib"]
                }]
            }
        }]
    });
    // A device without edits fails the CDI validation.
    let broken = json!({
        "cdiVersion": "0.6.0",
        "kind": "test.ember.dev/broken",
        "devices": [{ "name": "x", "containerEdits": {} }]
    });
    std::fs::create_dir_all(specs).unwrap();
    for (file, spec) in [
        ("fake.json", fake),
        ("library.json", library),
        ("gpus.json", gpus),
        ("broken.json", broken),
    ] {
        std::fs::write(specs.join(file), spec.to_string()).unwrap();
    }
}

/// A shell command that writes what the container sees of the fake devices to its
/// index page, then serves it.
const REPORT: &str = r#"{
  if [ -c /dev/fake0 ]; then echo "node:$(head -c 4 /dev/fake0 | busybox od -An -tx1 | tr -d ' \n')"; else echo node:none; fi
  echo "env:${FAKE_DEVICE:-none}"
  echo "mount:$(cat /opt/fake-driver/marker 2>/dev/null || echo none)"
  if [ -d /opt/fake-driver ]; then busybox touch /opt/fake-driver/new 2>/dev/null && echo write:allowed || echo write:refused; fi
  echo "gpu:${FAKE_GPU:-none}"
  if [ -c /dev/fakegpu0 ]; then echo gpunode:yes; fi
  if grep -q /opt/fake-lib/libz.so.1 /etc/ld.so.cache 2>/dev/null; then echo ldcache:libz; fi
} > /www/index.html
exec httpd -f -p 8080 -h /www"#;

fn reporting(name: &str, image: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "image": image,
        "command": ["/bin/sh", "-c"],
        "arguments": [REPORT],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn cdi_setup() -> (Setup, tempfile::TempDir) {
    let scratch = temp_dir();
    let specs = scratch.path().join("cdi");
    write_specs(&specs, scratch.path());
    let setup = setup(&["--cdi-spec-dir", specs.to_str().unwrap()]).await;
    (setup, scratch)
}

/// A create that must fail with 400 on `field`, with `message` in the error.
async fn refused(ember: &Ember, body: Value, field: &str, message: &str) {
    let (status, error) = ember.send_json(Method::POST, "/v1/containers", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
    assert_eq!(error["field"], field, "{error}");
    let text = error["message"].as_str().unwrap();
    assert!(text.contains(message), "{body}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_sees_the_cdi_devices_it_names_and_no_others() {
    require_root();
    let (setup, scratch) = cdi_setup().await;
    let (ember, image) = (&setup.ember, setup.image.as_str());

    let id = deploy(
        ember,
        reporting(
            "with-device",
            image,
            json!({ "cdiDevices": ["test.ember.dev/fake=zero"] }),
        ),
    )
    .await;
    let (_, container) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(container["cdiDevices"], json!(["test.ember.dev/fake=zero"]));
    assert_eq!(
        get(ember, "with-device", "/").await,
        (
            StatusCode::OK,
            "node:00000000\nenv:zero\nmount:marker-from-host\nwrite:refused\ngpu:none\n".into()
        )
    );
    // The hook ran, with the container's OCI state on its stdin. It runs for every
    // sandbox made with the device, the instance's and any prepared spare, so the
    // instance's state is one file among them.
    let sandbox = ember.instances(&id).await[0]["sandbox_id"]
        .as_str()
        .unwrap()
        .to_string();
    let state: Value = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains("hook-state-"))
        // A spare's hook may still be writing its file.
        .filter_map(|path| serde_json::from_slice::<Value>(&std::fs::read(path).ok()?).ok())
        .find(|state| state["id"] == sandbox.as_str())
        .unwrap_or_else(|| panic!("no hook state names {sandbox}"));
    assert!(
        state["bundle"].as_str().unwrap().ends_with(&sandbox),
        "{state}"
    );
    // Nothing was written through the read-only mount.
    assert!(!scratch.path().join("driver/new").exists());

    // The library is mounted and in the container's linker cache, as the NVIDIA
    // driver's are.
    deploy(
        ember,
        reporting(
            "with-library",
            image,
            json!({ "cdiDevices": ["test.ember.dev/lib=z"] }),
        ),
    )
    .await;
    assert_eq!(
        get(ember, "with-library", "/").await,
        (
            StatusCode::OK,
            "node:none\nenv:none\nmount:none\ngpu:none\nldcache:libz\n".into()
        )
    );

    deploy(ember, reporting("without", image, json!({}))).await;
    assert_eq!(
        get(ember, "without", "/").await,
        (
            StatusCode::OK,
            "node:none\nenv:none\nmount:none\ngpu:none\n".into()
        )
    );

    // Bad device requests are refused at create, naming the field, and leave nothing.
    let before = ember.get_json("/v1/containers").await.1["items"]
        .as_array()
        .unwrap()
        .len();
    for (devices, field, message) in [
        (
            json!(["test.ember.dev/fake=one"]),
            "cdiDevices",
            "no CDI spec in",
        ),
        (
            json!(["test.ember.dev/broken=x"]),
            "cdiDevices",
            "broken.json for test.ember.dev/broken=x is invalid",
        ),
        (json!(["fake0"]), "cdiDevices[0]", "vendor.com/class=name"),
        (
            json!(["test.ember.dev/gpu=0"]),
            "cdiDevices",
            "one of this node's GPUs",
        ),
    ] {
        refused(
            ember,
            reporting("refused", image, json!({ "cdiDevices": devices })),
            field,
            message,
        )
        .await;
    }
    let digest = ember.upload(&common::fixtures::hello("hi")).await;
    for (extra, field) in [
        (json!({ "gpu": 1 }), "gpu"),
        (
            json!({ "cdiDevices": ["test.ember.dev/fake=zero"] }),
            "cdiDevices",
        ),
    ] {
        let mut body = json!({ "name": "wasm-gpu", "image": digest });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        refused(ember, body, field, "wasm components cannot").await;
    }
    let after = ember.get_json("/v1/containers").await.1["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
}

/// GET /v1/gpu-models's entry for `code`: (installed, free).
async fn stock(ember: &Ember, code: &str) -> (u64, u64) {
    let (_, models) = ember.get_json("/v1/gpu-models").await;
    let model = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["code"] == code)
        .unwrap_or_else(|| panic!("{code} in {models}"))
        .clone();
    (
        model["installed"].as_u64().unwrap(),
        model["free"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gpu_is_held_by_one_instance_and_the_next_waits_saying_why() {
    require_root();
    let (setup, _scratch) = cdi_setup().await;
    let (ember, image) = (&setup.ember, setup.image.as_str());

    let (_, servers) = ember.get_json("/v1/servers").await;
    assert_eq!(
        servers["data"][0]["capacity"]["gpus"],
        json!({ "a100": 1, "t4": 1 }),
        "{servers}"
    );
    assert_eq!(stock(ember, "t4").await, (1, 1));
    assert_eq!(stock(ember, "h100").await, (0, 0));

    // Requests no node could ever satisfy are refused at create.
    for (extra, field, message) in [
        (json!({ "gpu": 3 }), "gpu", "asks for 3 GPUs, 2 available"),
        (
            json!({ "gpu": 1, "desiredGPUs": ["h100"] }),
            "gpu",
            "asks for 1 GPU of model h100, 0 available",
        ),
        (
            json!({ "gpu": 1, "desiredGPUs": ["b200"] }),
            "desiredGPUs",
            "not a GPU model",
        ),
    ] {
        refused(ember, reporting("never", image, extra), field, message).await;
    }

    let only_t4 = json!({ "gpu": 1, "desiredGPUs": ["t4"], "minInstances": 1 });
    let first = deploy(ember, reporting("first", image, only_t4.clone())).await;
    assert_eq!(
        get(ember, "first", "/").await,
        (
            StatusCode::OK,
            "node:none\nenv:none\nmount:none\ngpu:0\ngpunode:yes\n".into()
        ),
        "the t4's device and nothing of the a100"
    );
    assert_eq!(stock(ember, "t4").await, (1, 0));
    assert_eq!(stock(ember, "a100").await, (1, 1));

    // The same model named as the catalogue names it.
    let by_name = json!({ "gpu": 1, "desiredGPUs": ["Nvidia t4"], "minInstances": 1 });
    let second = deploy(ember, reporting("second", image, by_name)).await;
    let reason = ember
        .wait_for(
            &format!("/v1/containers/{second}/instances"),
            Duration::from_secs(30),
            |page| {
                page["data"][0]["state"]["reason"]
                    .as_str()
                    .filter(|r| r.contains("GPU"))
                    .map(str::to_string)
            },
        )
        .await;
    assert!(
        reason.contains("asks for 1 GPU of model t4, 0 available"),
        "{reason}"
    );
    let (_, container) = ember.get_json(&format!("/v1/containers/{second}")).await;
    assert!(
        container["statusReason"]
            .as_str()
            .is_some_and(|r| r.contains("GPU of model t4")),
        "{container}"
    );

    // The first container goes: its GPU passes to the waiting instance.
    let (status, _) = ember
        .send_json(
            Method::DELETE,
            &format!("/v1/containers/{first}"),
            &json!({}),
        )
        .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(
        get(ember, "second", "/").await,
        (
            StatusCode::OK,
            "node:none\nenv:none\nmount:none\ngpu:0\ngpunode:yes\n".into()
        )
    );
    assert_eq!(stock(ember, "t4").await, (1, 0));
}
