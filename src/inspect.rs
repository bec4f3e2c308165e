//! The client verbs that look at one container: its output (`logs`), its
//! instances (`instances`) and everything at once (`describe`).

use crate::cli::{LogsArgs, TargetArgs};
use crate::client::ApiClient;
use crate::commands::{find, print_revisions, text};
use crate::table;
use anyhow::Context;
use futures::StreamExt;
use serde_json::Value;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let container = find(&client, &args.container).await?;
    let id = text(&container["id"]);
    let since = SystemTime::now()
        .checked_sub(args.since)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut path = format!("/v1/containers/{id}/logs?period_start={since}");
    if !args.follow {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The range is whole seconds: a line of this second is in it.
        path.push_str(&format!("&period_end={}", now + 1));
    }
    let response = client.open(&path).await?;
    let mut events = response.bytes_stream();
    let mut pending = Vec::new();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = events.next().await {
        pending.extend_from_slice(&chunk.context("reading the log stream")?);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            for data in String::from_utf8_lossy(&event)
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
            {
                let Ok(line) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                let instance = text(&line["instance"]);
                if args
                    .instance
                    .as_deref()
                    .is_some_and(|wanted| !instance.starts_with(wanted))
                {
                    continue;
                }
                if args.client.json {
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{} {} {}",
                        text(&line["timestamp"]),
                        short(&instance),
                        text(&line["line"])
                    )?;
                }
            }
        }
        out.flush()?;
    }
    Ok(())
}

pub async fn instances(args: TargetArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let container = find(&client, &args.container).await?;
    let listed = instances_of(&client, &text(&container["id"])).await?;
    if args.client.json {
        println!("{}", Value::Array(listed));
        return Ok(());
    }
    print_instances(&listed);
    Ok(())
}

pub async fn describe(args: TargetArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let container = find(&client, &args.container).await?;
    let id = text(&container["id"]);
    let revisions = client
        .get(&format!("/v1/containers/{id}/revisions?rowsPerPage=10"))
        .await?;
    let listed = instances_of(&client, &id).await?;
    if args.client.json {
        println!(
            "{}",
            serde_json::json!({
                "container": container,
                "revisions": revisions["items"],
                "instances": listed,
            })
        );
        return Ok(());
    }
    let field = |name: &str, value: String| println!("{name:<14}{value}");
    field("Name:", text(&container["name"]));
    field("Id:", id.clone());
    let reason = container["statusReason"]
        .as_str()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    field("Status:", format!("{}{reason}", text(&container["status"])));
    field("Image:", text(&container["image"]));
    field(
        "URL:",
        container["urls"][0]
            .as_str()
            .map_or_else(|| "-".into(), |u| format!("http://{u}/")),
    );
    field(
        "Resources:",
        format!(
            "{} CPU, {} memory, {} GPU, {} disk",
            container["cpu"],
            text(&container["ram"]),
            container["gpu"],
            text(&container["ephemeralStorage"])
        ),
    );
    field(
        "Scaling:",
        format!(
            "{} to {} instances, idle {} s, concurrency {}, queue {}",
            container["minInstances"],
            container["maxInstances"],
            container["idleTimeoutSeconds"],
            match &container["concurrency"] {
                Value::Null => "default".to_string(),
                n => n.to_string(),
            },
            container["queueDepth"]
        ),
    );
    let target = &container["traffic"][0];
    field(
        "Traffic:",
        match target["revisionNumber"].as_u64() {
            None => "- (no revision serves yet)".into(),
            Some(n) if target["latestRevision"] == true => {
                format!("100% to revision {n} (the latest, and each new one)")
            }
            Some(n) => {
                format!("100% to revision {n} (pinned: ember traffic NAME latest=100 undoes it)")
            }
        },
    );
    field(
        "Timeouts:",
        format!(
            "request {} s, response start {}, stream idle {}",
            container["timeoutSeconds"],
            seconds_or(&container["responseStartTimeoutSeconds"], "the request's"),
            seconds_or(&container["streamIdleTimeoutSeconds"], "none"),
        ),
    );
    let probes: Vec<String> = ["startupProbe", "readinessProbe", "livenessProbe"]
        .iter()
        .filter_map(|name| {
            let probe = &container[*name];
            let action = match (&probe["httpGet"]["path"], &probe["tcpSocket"]) {
                (Value::String(path), _) => format!("GET {path}"),
                (_, Value::Object(_)) => "TCP".to_string(),
                _ => return None,
            };
            Some(format!("{} {action}", name.trim_end_matches("Probe")))
        })
        .collect();
    field(
        "Probes:",
        if probes.is_empty() {
            "- (ready once the port accepts connections)".into()
        } else {
            probes.join(", ")
        },
    );
    field(
        "Restarts:",
        format!(
            "{} ({} pinned instances)",
            container["restarts"], container["pinnedInstances"]
        ),
    );
    field("Created:", text(&container["dateCreated"]));
    field("Updated:", text(&container["dateUpdated"]));
    println!("\nRevisions:");
    print_revisions(revisions["items"].as_array().map_or(&[], Vec::as_slice));
    println!("\nInstances:");
    print_instances(&listed);
    Ok(())
}

/// Every instance of container `id`, following the pages.
async fn instances_of(client: &ApiClient, id: &str) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    for page in 1.. {
        let body = client
            .get(&format!(
                "/v1/containers/{id}/instances?page[size]=100&page[number]={page}"
            ))
            .await?;
        let items = body["data"].as_array().cloned().unwrap_or_default();
        let last = items.len() < 100;
        all.extend(items);
        if last {
            break;
        }
    }
    Ok(all)
}

fn print_instances(listed: &[Value]) {
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|i| {
            let reason = i["state"]["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            vec![
                text(&i["id"]),
                format!("{}{reason}", text(&i["state"]["current"])),
                i["revision"].to_string(),
                i["in_flight"].to_string(),
                if i["pinned"] == Value::Bool(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                short(&text(&i["server_id"])).to_string(),
                text(&i["state"]["changed"]),
            ]
        })
        .collect();
    table::print(
        &[
            "ID",
            "STATE",
            "REVISION",
            "IN-FLIGHT",
            "PINNED",
            "SERVER",
            "SINCE",
        ],
        &rows,
    );
}

/// The first eight characters of an id: enough to tell instances apart.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `N s`, or `otherwise` when the value is null.
fn seconds_or(value: &Value, otherwise: &str) -> String {
    match value.as_u64() {
        Some(n) => format!("{n} s"),
        None => otherwise.to_string(),
    }
}
