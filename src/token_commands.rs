//! The `ember token` verbs: create, ls, rm (an ADMIN token's work).

use crate::cli::{ClientArgs, TokenCommand, TokenCreateArgs, TokenTargetArgs};
use crate::client::ApiClient;
use crate::table;
use reqwest::Method;
use serde_json::{Value, json};

pub async fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => create(args).await,
        TokenCommand::Ls(args) => list(args).await,
        TokenCommand::Rm(args) => remove(args).await,
    }
}

async fn create(args: TokenCreateArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    let mut body = json!({ "user": args.user, "role": args.role });
    // Left out, the API grants all of them.
    if !args.scopes.is_empty() {
        body["scopes"] = json!(args.scopes);
    }
    if !args.capabilities.is_empty() {
        body["capabilities"] = json!(args.capabilities);
    }
    let minted = client.send_json(Method::POST, "/v1/tokens", &body).await?;
    if args.client.json {
        println!("{minted}");
    } else {
        // The secret alone on stdout, so that `$(ember token create ...)` captures it.
        println!("{}", minted["token"].as_str().unwrap_or_default());
        eprintln!(
            "token {} for user {} ({}): shown this once",
            minted["id"].as_str().unwrap_or_default(),
            args.user,
            minted["userId"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

async fn list(args: ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args)?;
    let tokens = client.all_items("/v1/tokens").await?;
    if args.json {
        println!("{}", Value::Array(tokens));
        return Ok(());
    }
    let list = |v: &Value| {
        v.as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t["id"].as_str().unwrap_or_default().to_string(),
                t["user"].as_str().unwrap_or_default().to_string(),
                t["role"].as_str().unwrap_or_default().to_string(),
                list(&t["scopes"]),
                list(&t["capabilities"]),
                t["created"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    table::print(
        &["ID", "USER", "ROLE", "SCOPES", "CAPABILITIES", "CREATED"],
        &rows,
    );
    Ok(())
}

async fn remove(args: TokenTargetArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client)?;
    client.delete(&format!("/v1/tokens/{}", args.id)).await?;
    if args.client.json {
        println!("{}", json!({ "revoked": args.id }));
    } else {
        println!("revoked {}", args.id);
    }
    Ok(())
}
