//! Tenants kept apart below the API: what a hostile tenant's instance can do from
//! inside, tried from inside (a shell run by the image's `run` CGI script). These
//! tests need root and fail (never skip) without it: CI runs as root.

mod common;

use common::oci::{Setup, deploy, get, require_root, setup};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Runs `command` with `sh -c` inside an instance of container `name`: its output
/// and `rc=<status>`.
async fn run(ember: &common::Ember, name: &str, command: &str) -> String {
    let encoded: String = command
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (status, output) = get(ember, name, &format!("/cgi-bin/run?{encoded}")).await;
    assert_eq!(status, StatusCode::OK, "{command}: {output}");
    output
}

/// The effective capabilities of a process in the instance, as a bit mask.
async fn effective_capabilities(ember: &common::Ember, name: &str) -> u64 {
    let output = run(ember, name, "grep CapEff /proc/self/status").await;
    let hex = output
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {output}"))
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

/// Bits of `/proc/*/status` capability masks.
const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;
const CAP_NET_RAW: u64 = 1 << 13;
const CAP_SYS_CHROOT: u64 = 1 << 18;
const CAP_MKNOD: u64 = 1 << 27;
const CAP_AUDIT_WRITE: u64 = 1 << 29;
const CAP_SETFCAP: u64 = 1 << 31;

/// Podman's default set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, SETFCAP.
const DEFAULT_SET: u64 = 0x0000_0000_8000_05fb;

async fn refused(ember: &common::Ember, body: Value) -> (StatusCode, Value) {
    let response = ember
        .api_request(Method::POST, "/v1/containers")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_podmans_capabilities_and_may_add_only_what_the_operator_allows() {
    require_root();
    let Setup {
        ember,
        image,
        data: _data,
        network: _network,
        _registry,
    } = setup(&["--allowed-capabilities", "NET_RAW,CAP_SYS_PTRACE"]).await;

    deploy(&ember, json!({ "name": "plain", "image": image })).await;
    let set = effective_capabilities(&ember, "plain").await;
    assert_eq!(set, DEFAULT_SET, "{set:016x}");
    for (name, bit) in [
        ("NET_RAW", CAP_NET_RAW),
        ("MKNOD", CAP_MKNOD),
        ("AUDIT_WRITE", CAP_AUDIT_WRITE),
        ("SYS_CHROOT", CAP_SYS_CHROOT),
    ] {
        assert_eq!(set & bit, 0, "{name} is kept");
    }
    // Without NET_RAW there is no raw socket (busybox's ping opens one), but
    // every group may open unprivileged ICMP sockets, which iputils' ping uses.
    // (Every group of its user namespace, which it reads as its own 0 to 65535.)
    let ranges = run(&ember, "plain", "cat /proc/sys/net/ipv4/ping_group_range").await;
    assert!(ranges.starts_with("0\t65535"), "{ranges}");
    let raw = run(&ember, "plain", "ping -c 1 -W 2 127.0.0.1").await;
    assert!(
        raw.contains("permission denied") && !raw.contains("rc=0"),
        "a raw socket: {raw}"
    );

    // What the operator allows may be added; anything may be dropped.
    let id = deploy(
        &ember,
        json!({
            "name": "raw",
            "image": image,
            "capabilities": { "add": ["NET_RAW"], "drop": ["chown"] },
        }),
    )
    .await;
    let set = effective_capabilities(&ember, "raw").await;
    assert_eq!(set, (DEFAULT_SET | CAP_NET_RAW) & !CAP_CHOWN, "{set:016x}");
    assert_eq!(
        set & (CAP_NET_BIND_SERVICE | CAP_SETFCAP),
        CAP_NET_BIND_SERVICE | CAP_SETFCAP
    );
    let (_, shown) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(
        shown["capabilities"],
        json!({ "add": ["NET_RAW"], "drop": ["CHOWN"] })
    );

    // Beyond what is allowed, unknown, or contradictory: 400 naming the place.
    for (capabilities, field) in [
        (json!({ "add": ["SYS_ADMIN"] }), "capabilities.add[0]"),
        (
            json!({ "add": ["NET_RAW", "NET_ADMIN"] }),
            "capabilities.add[1]",
        ),
        (json!({ "drop": ["NOT_A_CAP"] }), "capabilities.drop[0]"),
        (
            json!({ "add": ["NET_RAW"], "drop": ["NET_RAW"] }),
            "capabilities",
        ),
        (json!({ "remove": ["NET_RAW"] }), "capabilities"),
    ] {
        let (status, body) = refused(
            &ember,
            json!({ "name": "denied", "image": image, "capabilities": capabilities }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{capabilities}: {body}");
        assert!(
            body["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "{capabilities}: {body}"
        );
    }
    let (_, list) = ember.get_json("/v1/containers").await;
    assert!(
        !list.to_string().contains("\"denied\""),
        "a refused container was stored: {list}"
    );
}

/// The address of the one instance of container `id`.
async fn address_of(ember: &common::Ember, id: &str) -> std::net::Ipv4Addr {
    let instances = ember.instances(id).await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    let address: std::net::SocketAddr = instances[0]["address"].as_str().unwrap().parse().unwrap();
    match address.ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("not IPv4: {other}"),
    }
}

/// Accepts connections on `address` in the background, keeping where each came
/// from.
fn host_listener(
    address: std::net::Ipv4Addr,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<std::net::IpAddr>>>) {
    let listener = std::net::TcpListener::bind((address, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = peers.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Ok(peer) = stream.peer_addr() {
                seen.lock().unwrap().push(peer.ip());
            }
        }
    });
    (port, peers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_reaches_no_other_instance_and_cannot_forge_its_address_or_arp() {
    require_root();
    let Setup {
        ember,
        image,
        data: _data,
        network,
        _registry,
    } = setup(&["--allowed-capabilities", "NET_RAW,NET_ADMIN"]).await;
    let gateway: std::net::Ipv4Addr = {
        let network_address: std::net::Ipv4Addr =
            network.subnet.split('/').next().unwrap().parse().unwrap();
        (u32::from(network_address) + 1).into()
    };

    let victim_id = deploy(&ember, json!({ "name": "victim", "image": image })).await;
    assert_eq!(get(&ember, "victim", "/").await.0, StatusCode::OK);
    let victim = address_of(&ember, &victim_id).await;
    // The attacker may even configure its network and open raw sockets.
    let attacker_id = deploy(
        &ember,
        json!({
            "name": "attacker",
            "image": image,
            "capabilities": { "add": ["NET_RAW", "NET_ADMIN"] },
        }),
    )
    .await;
    assert_eq!(get(&ember, "attacker", "/").await.0, StatusCode::OK);
    let attacker = address_of(&ember, &attacker_id).await;
    let attacker_mac = run(&ember, "attacker", "cat /sys/class/net/eth0/address").await;
    let attacker_mac = attacker_mac.lines().next().unwrap().to_string();

    // Another instance, directly: not a single packet.
    let direct = run(
        &ember,
        "attacker",
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {victim} 8080"),
    )
    .await;
    assert!(
        !direct.contains("hello") && !direct.contains("rc=0"),
        "direct: {direct}\n{}",
        host_network_state(&network.bridge)
    );
    // Through the host, by a route the attacker adds: the host forwards nothing.
    let routed = run(
        &ember,
        "attacker",
        &format!("ip route add {victim}/32 via {gateway} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {victim} 8080; ip route del {victim}/32"),
    )
    .await;
    assert!(!routed.contains("hello"), "routed: {routed}");
    // The victim still serves through the ingress.
    assert_eq!(get(&ember, "victim", "/").await.0, StatusCode::OK);

    // The host's side of its own link is reachable from its own address.
    let (port, peers) = host_listener(gateway);
    let reached = run(
        &ember,
        "attacker",
        &format!("nc -w 3 {gateway} {port} </dev/null; true"),
    )
    .await;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        peers
            .lock()
            .unwrap()
            .contains(&std::net::IpAddr::V4(attacker)),
        "the attacker's own address did not reach the host ({reached}): {:?}",
        peers.lock().unwrap()
    );

    // Forged: the victim's address as its own, and ARP replies claiming it. This
    // cuts the attacker off the ingress, so it runs in the background.
    let forge = format!(
        "(sleep 1; ip addr flush dev eth0; ip addr add {victim}/24 dev eth0; \
         arping -U -c 3 -I eth0 -s {victim} {gateway}; \
         nc -w 3 {gateway} {port}) </dev/null >/dev/null 2>&1 &"
    );
    run(&ember, "attacker", &forge).await;
    tokio::time::sleep(std::time::Duration::from_secs(8)).await;
    assert!(
        !peers
            .lock()
            .unwrap()
            .contains(&std::net::IpAddr::V4(victim)),
        "a forged source address reached the host: {:?}",
        peers.lock().unwrap()
    );
    let neighbour = std::process::Command::new("ip")
        .args(["neigh", "show", &victim.to_string(), "dev", &network.bridge])
        .output()
        .unwrap();
    let neighbour = String::from_utf8_lossy(&neighbour.stdout);
    assert!(
        !neighbour.contains(&attacker_mac),
        "a forged ARP reply reached the host: {neighbour}"
    );
    // And the victim is still served, at its own address.
    assert_eq!(
        get(&ember, "victim", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );
}

/// The bridge's ports and the guard's table, for a failure's message.
fn host_network_state(bridge: &str) -> String {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(args[0])
            .args(&args[1..])
            .output();
        output.map_or_else(
            |e| e.to_string(),
            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    format!(
        "{}\n{}",
        run(&["bridge", "-d", "link", "show", "master", bridge]),
        run(&["nft", "list", "table", "bridge", &format!("ember_{bridge}")])
    )
}

/// What a hostile image tries from inside, as root in its container, and must be
/// refused: each command and a word its refusal prints.
const ESCAPES: &[(&str, &str)] = &[
    ("mount -t tmpfs none /mnt", "mount"),
    ("mount -o remount,rw /sys", "mount"),
    ("unshare -n true", "unshare"),
    ("unshare -U -r true", "unshare"),
    ("mknod /tmp/mem c 1 1", "mknod"),
    ("echo x > /tmp/m.ko; insmod /tmp/m.ko", "insmod"),
    ("echo 1 > /proc/sys/kernel/sysrq", "sysrq"),
    ("test -s /proc/kcore", "kcore"),
    ("hostname hijacked && hostname", "hostname"),
    ("chroot / true", "chroot"),
    ("echo x > /sys/kernel/profiling", "profiling"),
    // A raw socket (busybox's ping opens one) and a packet socket (arping's).
    ("ping -c 1 -W 1 127.0.0.1", "raw socket"),
    ("arping -c 1 -w 1 -I eth0 127.0.0.1", "packet socket"),
    // Root here is not host root: the user namespace maps it elsewhere.
    ("grep -qE '^ +0 +0 ' /proc/self/uid_map", "host root"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_image_is_refused_whatever_it_tries_from_inside() {
    require_root();
    let Setup {
        ember,
        image,
        data: _data,
        network: _network,
        _registry,
    } = setup(&["--pids-limit", "64"]).await;
    let id = deploy(
        &ember,
        json!({ "name": "hostile", "image": image, "ephemeralStorage": "16Mi" }),
    )
    .await;
    for (command, what) in ESCAPES {
        let output = run(&ember, "hostile", command).await;
        assert!(
            !output.contains("rc=0"),
            "{what}: `{command}` succeeded inside an instance: {output}"
        );
    }
    // The host's API and ingress listen on loopback: the instance's is its own.
    let host_ports = run(
        &ember,
        "hostile",
        &format!("nc -w 2 127.0.0.1 {} </dev/null", ember.api.port()),
    )
    .await;
    assert!(
        !host_ports.contains("rc=0"),
        "the host's API from inside: {host_ports}"
    );
    // Forking past the pids limit fails; the instance goes on once they end.
    let forks = run(
        &ember,
        "hostile",
        "i=0; while [ $i -lt 100 ]; do sleep 3 & i=$((i+1)); done; wait",
    )
    .await;
    assert!(
        forks.contains("can't fork"),
        "100 processes past a limit of 64: {forks}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    // Writing past its ephemeral storage fails, and frees up again.
    let filled = run(
        &ember,
        "hostile",
        "dd if=/dev/zero of=/tmp/fill bs=1M count=64; rm -f /tmp/fill",
    )
    .await;
    assert!(filled.contains("No space left on device"), "{filled}");
    // Flooding its log (20 MB at once) keeps the runtime answering and the log
    // store within its retention (1 MiB per container by default).
    let flooded = run(
        &ember,
        "hostile",
        "yes flood-line | head -c 20000000 > /proc/1/fd/1",
    )
    .await;
    assert!(flooded.contains("rc=0"), "{flooded}");
    let logs = ember.logs(&id).await;
    assert!(logs.len() < 4 << 20, "{} bytes of logs kept", logs.len());
    let (status, _) = ember.get_json("/v1/containers").await;
    assert_eq!(status, StatusCode::OK);
    // Still serving, unharmed.
    assert_eq!(
        get(&ember, "hostile", "/").await,
        (StatusCode::OK, "hello from busybox httpd\n".into())
    );
}

/// The host id container root maps to, from `uid_map` as the instance reads it.
fn host_root(uid_map: &str) -> u32 {
    let fields: Vec<u32> = uid_map
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(fields.len(), 3, "one mapping in {uid_map}");
    assert_eq!(fields[0], 0, "{uid_map}");
    assert_eq!(fields[2], 65536, "{uid_map}");
    fields[1]
}

/// Files under `dir` named `name`, at any depth.
fn find_files(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && !kind.is_symlink() {
            // The overlay shows the same file again: the writable layer is where it lives.
            if path
                .file_name()
                .is_some_and(|n| n == "rootfs" || n == "lower")
            {
                continue;
            }
            found.extend(find_files(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_in_an_instance_is_an_unprivileged_host_user_of_its_container_s_own_range() {
    require_root();
    let Setup {
        ember,
        image,
        data,
        network: _network,
        _registry,
    } = setup(&[]).await;
    deploy(&ember, json!({ "name": "first", "image": image })).await;
    deploy(&ember, json!({ "name": "second", "image": image })).await;

    let inside = run(&ember, "first", "cat /proc/self/uid_map; id -u; id -g").await;
    let first_root = host_root(&inside);
    assert!(
        first_root >= 1 << 20,
        "container root is host id {first_root}"
    );
    assert!(
        inside.contains("\n0\n0\n"),
        "the shell runs as root inside: {inside}"
    );
    let gid_map = run(&ember, "first", "cat /proc/self/gid_map").await;
    assert_eq!(host_root(&gid_map), first_root);
    let second_root = host_root(&run(&ember, "second", "cat /proc/self/uid_map").await);
    assert!(
        second_root.abs_diff(first_root) >= 65536,
        "two containers share host ids: {first_root} and {second_root}"
    );

    // Root owns the image's files inside, and what it writes is the range's on the host.
    let marker = format!("written-by-root-{}", std::process::id());
    let owned = run(
        &ember,
        "first",
        &format!("stat -c %u:%g /bin/busybox /; echo hi > /tmp/{marker}; echo written"),
    )
    .await;
    assert!(owned.contains("0:0\n0:0\nwritten"), "{owned}");
    // Instance directories are under /run/ember, where the unprivileged root reaches.
    let written = find_files(std::path::Path::new("/run/ember"), &marker);
    assert_eq!(written.len(), 1, "{written:?}");
    let on_host = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&written[0]).unwrap());
    assert_eq!(on_host, first_root, "{}", written[0].display());
    // The layer on disk stays host root's: nothing was copied or chowned.
    let layer_files = find_files(&data.path().join("oci"), "busybox");
    assert!(!layer_files.is_empty());
    for file in layer_files {
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&file).unwrap());
        assert_eq!(uid, 0, "{}", file.display());
    }

    // Host ids are refused unless the operator allows them.
    let (status, body) = refused(
        &ember,
        json!({ "name": "hostids", "image": image, "userNamespace": false }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "userNamespace", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--allow-host-ids"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ids_run_only_where_the_operator_allows_them() {
    require_root();
    let Setup {
        ember,
        image,
        data: _data,
        network: _network,
        _registry,
    } = setup(&["--allow-host-ids"]).await;
    let id = deploy(
        &ember,
        json!({ "name": "hostids", "image": image, "userNamespace": false }),
    )
    .await;
    let inside = run(&ember, "hostids", "cat /proc/self/uid_map").await;
    let mapping: Vec<&str> = inside.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(mapping, ["0", "0", "4294967295"], "{inside}");
    let (status, shown) = ember.get_json(&format!("/v1/containers/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["userNamespace"], false, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_s_instances_are_held_to_its_ephemeral_storage_quota() {
    require_root();
    let Setup {
        ember,
        image,
        data: _data,
        network: _network,
        _registry,
    } = setup(&["--quota-ephemeral-storage", "1Gi"]).await;
    let (status, minted) = ember
        .send_json(Method::POST, "/v1/tokens", &json!({ "user": "carol" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let carol = minted["token"].as_str().unwrap();
    for (name, storage) in [("disk-a", "768Mi"), ("disk-b", "512Mi")] {
        let (status, created) = ember
            .call_as(
                Some(carol),
                Method::POST,
                "/v1/containers",
                Some(&json!({ "name": name, "image": image, "ephemeralStorage": storage })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ember.wait_deployed(created["id"].as_str().unwrap()).await;
    }
    let (status, answer) = get(&ember, "disk-a", "/").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // 768Mi held; 512Mi more would pass the 1Gi quota: refused at once, naming it.
    let (status, answer) = get(&ember, "disk-b", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(answer.contains("quota_exceeded"), "{answer}");
    assert!(
        answer.contains(
            "ephemeralStorage quota: 768 MiB of ephemeral storage in use of a quota of 1Gi"
        ),
        "{answer}"
    );
    let (_, shown) = ember.get_json("/v1/users/carol/quota").await;
    assert_eq!(
        shown["data"]["use"]["ephemeralStorageBytes"],
        768u64 << 20,
        "{shown}"
    );
}
