//! `ember serve`: wires the runtime, the API and the ingress together.

use crate::cli::ServeArgs;
use anyhow::Context;
use ember_runtime::connections::ConnectionPolicy;
use ember_runtime::{Runtime, RuntimeConfig};
use std::time::Duration;
use tokio::net::TcpListener;

/// The cluster `--cluster` names, if any, with this node's name and advertised
/// address.
fn cluster_config(
    args: &ServeArgs,
    api_addr: std::net::SocketAddr,
) -> anyhow::Result<Option<ember_runtime::cluster::ClusterConfig>> {
    if args.cluster.is_empty() {
        return Ok(None);
    }
    for endpoint in &args.cluster {
        anyhow::ensure!(
            endpoint.starts_with("http://") || endpoint.starts_with("https://"),
            "--cluster {endpoint}: expected an etcd client URL such as http://127.0.0.1:2379"
        );
    }
    let advertise_addr = match args.advertise_addr {
        Some(addr) => addr,
        None if !api_addr.ip().is_unspecified() => api_addr.ip(),
        None => anyhow::bail!(
            "--advertise-addr is needed when the API listens on every address ({api_addr}): give the address other nodes reach this one on"
        ),
    };
    anyhow::ensure!(
        !advertise_addr.is_unspecified(),
        "--advertise-addr {advertise_addr}: give an address other nodes can reach, not a wildcard"
    );
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(ember_runtime::host_name);
    anyhow::ensure!(
        !node_name.is_empty() && !node_name.contains('/') && node_name.len() <= 63,
        "--node-name {node_name:?}: expected 1 to 63 characters without `/`"
    );
    Ok(Some(ember_runtime::cluster::ClusterConfig {
        endpoints: args.cluster.clone(),
        node_name,
        advertise_addr,
    }))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let open_files = raise_file_limit();
    let api_listener = TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("binding the API to {}", args.api_addr))?;
    let ingress_listener = TcpListener::bind(args.ingress_addr)
        .await
        .with_context(|| format!("binding the ingress to {}", args.ingress_addr))?;
    let ssh_listener = TcpListener::bind(args.ssh_addr)
        .await
        .with_context(|| format!("binding the SSH server to {}", args.ssh_addr))?;
    let api_addr = api_listener.local_addr()?;
    let ingress_addr = ingress_listener.local_addr()?;
    let ssh_addr = ssh_listener.local_addr()?;

    let mut config = RuntimeConfig::new(&args.data_dir);
    config.domain = args.domain.to_ascii_lowercase();
    config.ingress_port = ingress_addr.port();
    // Bound to every address: reached on loopback.
    config.ingress_addr = match ingress_addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            ([127, 0, 0, 1], ingress_addr.port()).into()
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, ingress_addr.port()).into()
        }
        _ => ingress_addr,
    };
    config.ssh_addr = Some(ssh_addr);
    config.ssh_credential_lifetime = args.ssh_credential_lifetime;
    config.default_idle_timeout = Duration::from_secs(args.idle_timeout);
    config.request_timeout = Duration::from_secs(args.request_timeout);
    config.queue_timeout = Duration::from_secs(args.queue_timeout);
    config.allowed_registries = args.allowed_registries.clone().unwrap_or_else(|| {
        ember_sandbox::image::AllowedRegistries::default_for(api_addr.ip().is_loopback())
    });
    config.overload = ember_runtime::OverloadPolicy {
        descriptors_percent: args.shed_descriptors_percent,
        memory_bytes: Some(
            args.shed_memory
                .as_ref()
                .map_or_else(|| machine_memory_bytes() / 2, |q| q.bytes()),
        ),
        ..ember_runtime::OverloadPolicy::default()
    };
    config.ingress_connections = connection_policy(
        &args,
        args.max_connections
            .unwrap_or_else(|| clamp_u32(open_files / 2)),
    );
    config.api_connections = connection_policy(
        &args,
        args.api_max_connections
            .unwrap_or_else(|| clamp_u32((open_files / 10).min(1024))),
    );
    config.bridge = args.bridge.clone();
    config.subnet = args.subnet;
    config.stop_grace = Duration::from_secs(args.stop_grace);
    config.allowed_capabilities = args.allowed_capabilities.clone();
    config.allow_host_ids = args.allow_host_ids;
    config.default_quota = ember_runtime::model::Quota {
        containers: args.quota_containers,
        instances: args.quota_instances,
        cpu: args.quota_cpu,
        ram: args.quota_ram.clone(),
        ephemeral_storage: args.quota_ephemeral_storage.clone(),
        requests_per_minute: args.quota_requests_per_minute,
    };
    config
        .default_quota
        .validate()
        .map_err(|(field, message)| anyhow::anyhow!("--quota-{field}: {message}"))?;
    config.startup_timeout = Duration::from_secs(args.startup_timeout);
    config.pids_limit = args.pids_limit;
    config.usage_sample_interval = Duration::from_millis(args.usage_sample_ms);
    if let Some(cpus) = args.node_cpus {
        anyhow::ensure!(
            cpus.is_finite() && cpus > 0.0,
            "--node-cpus {cpus}: expected a number of CPUs above 0"
        );
        config.node_cpus = Some(cpus);
    }
    config.node_memory_bytes = args.node_memory.as_ref().map(|q| q.bytes());
    if !args.cdi_spec_dirs.is_empty() {
        config.cdi_spec_dirs = args.cdi_spec_dirs.clone();
    }
    if args.generate_nvidia_cdi {
        let dir = config
            .cdi_spec_dirs
            .last()
            .context("--generate-nvidia-cdi needs a CDI spec directory")?;
        crate::gpu_commands::generate_into(&dir.join("ember-nvidia.json"))
            .context("generating the NVIDIA CDI spec (--generate-nvidia-cdi)")?;
    }
    config.log_retention_bytes =
        usize::try_from(args.log_retention_kib * 1024).unwrap_or(usize::MAX);
    config.cluster = cluster_config(&args, api_addr)?;
    config.admin_token = std::env::var("EMBER_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let (runtime, new_token) = Runtime::start(config)
        .await
        .with_context(|| format!("starting the runtime on {}", args.data_dir.display()))?;

    if let Some(token) = new_token {
        println!(
            "admin token (saved to {}): {token}",
            args.data_dir
                .join(ember_runtime::auth::ADMIN_TOKEN_FILE)
                .display()
        );
    }
    // Tests and scripts read these two lines to find the ports.
    println!("api listening on http://{api_addr}");
    println!(
        "ingress listening on http://{ingress_addr} (containers at http://<name>.{}:{})",
        args.domain,
        ingress_addr.port()
    );
    println!("ssh listening on {ssh_addr} (log in with GET .../instances/<id>/ssh)");

    runtime
        .join_cluster(api_addr, ingress_addr)
        .await
        .context("joining the cluster")?;
    let ingress = tokio::spawn(ember_runtime::serve_ingress(
        runtime.clone(),
        ingress_listener,
    ));
    let ssh = tokio::spawn(ember_runtime::serve_ssh(runtime.clone(), ssh_listener));
    let api = ember_api::serve(runtime.clone(), api_listener);
    let outcome = tokio::select! {
        () = api => Err(anyhow::anyhow!("the API server stopped")),
        served = ingress => match served {
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the ingress failed")),
            _ => Err(anyhow::anyhow!("the ingress stopped")),
        },
        served = ssh => match served {
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("the SSH server failed")),
            _ => Err(anyhow::anyhow!("the SSH server stopped")),
        },
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    // Containers stop with the runtime (SIGTERM, grace, SIGKILL), whatever ended it.
    runtime.shut_down().await;
    outcome
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The connection limits and timeouts the flags set, for a listener that may hold
/// `max_total` connections.
fn connection_policy(args: &ServeArgs, max_total: u32) -> ConnectionPolicy {
    ConnectionPolicy {
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        idle_timeout: Duration::from_secs(args.idle_connection_timeout),
        body_stall_timeout: Duration::from_secs(args.body_stall_timeout),
        max_per_source: args.max_connections_per_source,
        max_total: max_total.max(1),
    }
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Raises the soft limit on open files to the hard one, and returns the limit in
/// force: client connections, instances' streams and the store all take
/// descriptors, and distributions start services with a soft limit far below what
/// the kernel allows them. The ingress may use half of it (see
/// `--max-connections`), so the API, the store, SSH and cold starts always find
/// descriptors.
fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let raised = soft == hard || setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok();
            let now = if raised { hard } else { soft };
            tracing::info!(soft_before = soft, soft = now, hard, "open files limit");
            now
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the open files limit failed");
            1024
        }
    }
}

/// The machine's memory (MemTotal), or 4 GiB if it cannot be read.
fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024)
}
