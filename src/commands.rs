//! The client verbs: deploy, ls, rm, revisions.

use crate::cli::{ClientArgs, DeployArgs, RollbackArgs, ScaleArgs, TargetArgs, TrafficArgs};
use crate::client::ApiClient;
use crate::table;
use crate::workloads::image_archive;
use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// How long `deploy` waits for a deployment to finish.
const DEPLOY_WAIT: Duration = Duration::from_secs(300);

/// Uploads an image archive or layout's blobs, then its manifest, to the
/// runtime's content store, with a progress line on stderr; returns the
/// manifest's digest, which deploys it.
async fn upload_image(client: &ApiClient, path: &Path) -> anyhow::Result<String> {
    let owned = path.to_path_buf();
    let image = tokio::task::spawn_blocking(move || image_archive::read_image(&owned))
        .await
        .context("reading the image")??;
    let manifest_digest = image_archive::digest_of(&image.manifest);
    // The config, the layers, and the manifest last: the runtime checks that every
    // blob it names is there.
    let mut uploads: Vec<_> = image
        .blobs
        .into_iter()
        .enumerate()
        .map(|(i, blob)| {
            let media_type = if i == 0 {
                "application/vnd.oci.image.config.v1+json"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            (media_type, blob)
        })
        .collect();
    uploads.push(("application/vnd.oci.image.manifest.v1+json", image.manifest));
    let total = uploads.len();
    let bytes_total: usize = uploads.iter().map(|(_, blob)| blob.len()).sum();
    let mut bytes_done = 0;
    for (i, (media_type, blob)) in uploads.into_iter().enumerate() {
        let size = blob.len();
        let expected = image_archive::digest_of(&blob);
        let uploaded = client.upload_as(blob, media_type).await?;
        let digest = uploaded["digest"].as_str().unwrap_or_default();
        anyhow::ensure!(
            digest == expected,
            "the runtime stored {expected} as {digest:?}"
        );
        bytes_done += size;
        eprint!(
            "\ruploading the {}: {}/{total} blobs, {:.1} of {:.1} MB",
            image.format,
            i + 1,
            bytes_done as f64 / 1e6,
            bytes_total as f64 / 1e6
        );
    }
    eprintln!();
    Ok(manifest_digest)
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let image = if image_archive::looks_like_image(Path::new(&args.image)) {
        upload_image(&client, Path::new(&args.image)).await?
    } else if Path::new(&args.image).is_file() {
        let mut bytes =
            std::fs::read(&args.image).with_context(|| format!("reading {}", args.image))?;
        // WAT text: built into a wasi:http component here, before the upload.
        if args.image.ends_with(".wat") {
            let wat = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", args.image))?;
            bytes = crate::workloads::component::component_from_wat(&wat)
                .with_context(|| format!("building a component from {}", args.image))?;
        }
        let uploaded = client.upload(bytes).await?;
        uploaded["digest"]
            .as_str()
            .context("the API returned no digest")?
            .to_string()
    } else {
        args.image.clone()
    };
    let mut body = json!({ "image": image });
    if !args.env.is_empty() {
        let mut env = serde_json::Map::new();
        for pair in &args.env {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--env {pair}: expected KEY=VALUE"))?;
            env.insert(k.to_string(), Value::String(v.to_string()));
        }
        body["env"] = Value::Object(env);
    }
    if let Some(ram) = &args.ram {
        body["ram"] = json!(ram);
    }
    if let Some(cpu) = args.cpu {
        body["cpu"] = json!(cpu);
    }
    if let Some(gpu) = args.gpu {
        body["gpu"] = json!(gpu);
    }
    if !args.gpu_models.is_empty() {
        body["desiredGPUs"] = json!(args.gpu_models);
    }
    if !args.cdi_devices.is_empty() {
        body["cdiDevices"] = json!(args.cdi_devices);
    }
    if let Some(n) = args.min_instances {
        body["minInstances"] = json!(n);
    }
    if let Some(n) = args.max_instances {
        body["maxInstances"] = json!(n);
    }
    if let Some(s) = args.idle_timeout {
        body["idleTimeoutSeconds"] = json!(s);
    }
    if let Some(n) = args.concurrency {
        body["concurrency"] = json!(n);
    }
    if let Some(n) = args.queue_depth {
        body["queueDepth"] = json!(n);
    }
    if let Some(n) = args.prepared_sandboxes {
        body["preparedSandboxes"] = json!(n);
    }
    if args.no_init {
        body["init"] = json!(false);
    }
    if args.host_ids {
        body["userNamespace"] = json!(false);
    }
    if let Some(seconds) = args.timeout {
        body["timeoutSeconds"] = json!(seconds);
    }
    if let Some(n) = args.initial_scale {
        body["initialScale"] = json!(n);
    }
    if let Some(rate) = args.target_rps {
        body["metric"] = json!("rps");
        body["targetRequestsPerSecond"] = json!(rate);
    }
    if !args.allow_outbound.is_empty() {
        body["allowedOutboundHosts"] = json!(args.allow_outbound);
    }
    if args.http2 {
        body["http2"] = json!(true);
    }
    if let Some(path) = &args.ready_path {
        body["readinessProbe"] = json!({ "httpGet": { "path": path } });
    }
    if !args.cap_add.is_empty() || !args.cap_drop.is_empty() {
        body["capabilities"] = json!({ "add": args.cap_add, "drop": args.cap_drop });
    }
    let mut container = match client.find(&args.name).await? {
        Some(existing) => {
            let id = existing["id"].as_str().unwrap_or_default().to_string();
            client
                .send_json(Method::PUT, &format!("/v1/containers/{id}"), &body)
                .await?
        }
        None => {
            body["name"] = json!(args.name);
            client
                .send_json(Method::POST, "/v1/containers", &body)
                .await?
        }
    };
    if !args.no_wait {
        // Pull progress, as the runtime reports it, on stderr.
        container = client
            .wait_deployed(container, DEPLOY_WAIT, |reason| eprintln!("{reason}"))
            .await?;
    }
    print_containers(&args.client, &[container]);
    Ok(())
}

/// `ember traffic NAME 3=100` / `latest=100`: a PUT of `traffic` alone.
pub async fn traffic(args: TrafficArgs) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    for target in &args.targets {
        let (revision, percent) = target
            .split_once('=')
            .with_context(|| format!("{target}: expected REVISION=PERCENT (3=100, latest=100)"))?;
        let percent: u32 = percent
            .parse()
            .with_context(|| format!("{target}: the percent is not a number"))?;
        entries.push(if revision == "latest" {
            json!({ "latestRevision": true, "percent": percent })
        } else {
            let number: u32 = revision
                .parse()
                .with_context(|| format!("{target}: the revision is not a number or `latest`"))?;
            json!({ "revisionNumber": number, "percent": percent })
        });
    }
    move_traffic(&args.client, &args.container, entries).await
}

/// `ember rollback NAME [REVISION]`: all traffic to an earlier revision.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let container = find(&client, &args.container).await?;
    let revision = match args.revision {
        Some(revision) => revision,
        None => {
            let serving = container["traffic"][0]["revisionNumber"]
                .as_u64()
                .context("no revision serves yet: nothing to roll back from")?;
            anyhow::ensure!(
                serving > 1,
                "revision {serving} is the first: nothing to roll back to"
            );
            u32::try_from(serving - 1)?
        }
    };
    move_traffic(
        &args.client,
        &args.container,
        vec![json!({ "revisionNumber": revision, "percent": 100 })],
    )
    .await
}

async fn move_traffic(
    client_args: &ClientArgs,
    container: &str,
    traffic: Vec<Value>,
) -> anyhow::Result<()> {
    let client = ApiClient::new(client_args)?;
    let found = find(&client, container).await?;
    let id = found["id"].as_str().unwrap_or_default();
    let updated = client
        .send_json(
            Method::PUT,
            &format!("/v1/containers/{id}"),
            &json!({ "traffic": traffic }),
        )
        .await?;
    if client_args.json {
        println!("{updated}");
    } else {
        let target = &updated["traffic"][0];
        println!(
            "{}: 100% to revision {}{}",
            text(&updated["name"]),
            target["revisionNumber"],
            if target["latestRevision"] == true {
                " (the latest, and each new one)"
            } else {
                " (pinned: new revisions take no traffic until `ember traffic NAME latest=100`)"
            }
        );
    }
    Ok(())
}

pub async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    if args.min.is_none() && args.max.is_none() {
        anyhow::bail!("say --min, --max or both");
    }
    let client = ApiClient::new(&args.client)?;
    let container = find(&client, &args.container).await?;
    let id = container["id"].as_str().unwrap_or_default();
    let mut body = json!({});
    if let Some(min) = args.min {
        body["minInstances"] = json!(min);
    }
    if let Some(max) = args.max {
        body["maxInstances"] = json!(max);
    }
    let updated = client
        .send_json(Method::PUT, &format!("/v1/containers/{id}"), &body)
        .await?;
    let updated = client
        .wait_deployed(updated, DEPLOY_WAIT, |reason| eprintln!("{reason}"))
        .await?;
    if args.client.json {
        println!("{updated}");
    } else {
        println!(
            "{}: at least {}, at most {} instances",
            text(&updated["name"]),
            updated["minInstances"],
            updated["maxInstances"]
        );
    }
    Ok(())
}

pub async fn list(args: ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args)?;
    let containers = client.all_containers().await?;
    print_containers(&args, &containers);
    Ok(())
}

pub async fn remove(args: TargetArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let container = find(&client, &args.container).await?;
    let id = container["id"].as_str().unwrap_or_default();
    client.delete(&format!("/v1/containers/{id}")).await?;
    if args.client.json {
        println!("{}", json!({ "deleted": id }));
    } else {
        println!(
            "deleted {} ({id})",
            container["name"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn revisions(args: TargetArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let container = find(&client, &args.container).await?;
    let id = container["id"].as_str().unwrap_or_default();
    let body = client
        .get(&format!("/v1/containers/{id}/revisions?rowsPerPage=100"))
        .await?;
    let items = body["items"].as_array().cloned().unwrap_or_default();
    if args.client.json {
        println!("{}", Value::Array(items));
        return Ok(());
    }
    print_revisions(&items);
    Ok(())
}

/// Revisions as the API lists them, as a table.
pub(crate) fn print_revisions(items: &[Value]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            vec![
                r["revisionNumber"].to_string(),
                text(&r["image"]),
                text(&r["dateCreated"]),
            ]
        })
        .collect();
    table::print(&["REVISION", "IMAGE", "CREATED"], &rows);
}

pub async fn nodes(args: ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args)?;
    let body = client.get("/v1/servers").await?;
    let servers = body["data"].as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", Value::Array(servers));
        return Ok(());
    }
    let gpus = |r: &Value| {
        let counts: Vec<String> = r["gpus"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(model, n)| format!("{n}x{model}"))
            .collect();
        if counts.is_empty() {
            "-".into()
        } else {
            counts.join(",")
        }
    };
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            let (capacity, allocated) = (&s["capacity"], &s["allocated"]);
            vec![
                text(&s["name"]),
                s["api"].as_str().unwrap_or("-").to_string(),
                s["ingress"].as_str().unwrap_or("-").to_string(),
                format!("{}/{}", allocated["cpu"], capacity["cpu"]),
                format!("{}/{}", text(&allocated["ram"]), text(&capacity["ram"])),
                gpus(capacity),
                text(&s["id"]),
            ]
        })
        .collect();
    table::print(
        &["NAME", "API", "INGRESS", "CPU", "MEMORY", "GPUS", "ID"],
        &rows,
    );
    Ok(())
}

pub(crate) async fn find(client: &ApiClient, name_or_id: &str) -> anyhow::Result<Value> {
    client
        .find(name_or_id)
        .await?
        .with_context(|| format!("no container named {name_or_id}"))
}

pub(crate) fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn print_containers(args: &ClientArgs, containers: &[Value]) {
    if args.json {
        println!("{}", Value::Array(containers.to_vec()));
        return;
    }
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let url = c["urls"][0]
                .as_str()
                .map(|u| format!("http://{u}/"))
                .unwrap_or_default();
            vec![
                text(&c["name"]),
                text(&c["status"]),
                text(&c["image"]),
                url,
                text(&c["id"]),
            ]
        })
        .collect();
    table::print(&["NAME", "STATUS", "IMAGE", "URL", "ID"], &rows);
}
