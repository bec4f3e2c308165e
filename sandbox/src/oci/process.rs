//! The process a container runs: the image config merged with the container's
//! `command`, `arguments`, `env` and `port`, as Kubernetes and Cloud Run merge them.

use crate::capabilities::CapabilityChanges;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Capability;
use std::collections::BTreeMap;

/// Port used when neither the container nor the image names one (as Cloud Run).
pub const DEFAULT_PORT: u16 = 8080;

/// What the container asks for, on top of the image.
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    /// Replaces the image's Entrypoint.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    pub arguments: Option<Vec<String>>,
    /// Added to (and overriding) the image's Env.
    pub env: Vec<(String, String)>,
    /// The port to route to; `None` takes the image's single exposed TCP port.
    pub port: Option<u16>,
    /// Changes to the default capabilities.
    pub capabilities: CapabilityChanges,
}

/// The merged process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    /// `argv`.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// The image's `User` (`uid[:gid]` or names), resolved against the rootfs later.
    pub user: Option<String>,
    /// Where the workload listens.
    pub port: u16,
    /// The capabilities it runs with, by name.
    pub capabilities: Vec<Capability>,
}

/// Merges; fails when nothing would be executed.
pub fn plan(
    image: &ImageConfiguration,
    overrides: &ProcessOverrides,
) -> Result<ProcessPlan, String> {
    let config = image.config().as_ref();
    let entrypoint = config
        .and_then(|c| c.entrypoint().clone())
        .unwrap_or_default();
    let cmd = config.and_then(|c| c.cmd().clone()).unwrap_or_default();
    // Kubernetes: `command` alone drops the image's Cmd too; `arguments` alone keeps
    // the Entrypoint.
    let args = match (&overrides.command, &overrides.arguments) {
        (Some(command), Some(arguments)) => [command.clone(), arguments.clone()].concat(),
        (Some(command), None) => command.clone(),
        (None, Some(arguments)) => [entrypoint, arguments.clone()].concat(),
        (None, None) => [entrypoint, cmd].concat(),
    };
    if args.is_empty() {
        return Err("the image has no Entrypoint or Cmd and the container sets no command".into());
    }
    let port = match overrides.port {
        Some(port) => port,
        None => single_exposed_port(image).unwrap_or(DEFAULT_PORT),
    };

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |key: &str, value: &str| {
        if env.insert(key.to_string(), value.to_string()).is_none() {
            order.push(key.to_string());
        }
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for entry in config.and_then(|c| c.env().clone()).unwrap_or_default() {
        let (key, value) = entry.split_once('=').unwrap_or((&entry, ""));
        set(key, value);
    }
    // Cloud Run tells the workload its port.
    set("PORT", &port.to_string());
    for (key, value) in &overrides.env {
        set(key, value);
    }
    let env = order.iter().map(|k| format!("{k}={}", env[k])).collect();

    let cwd = config
        .and_then(|c| c.working_dir().clone())
        .filter(|d| d.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    let user = config
        .and_then(|c| c.user().clone())
        .filter(|u| !u.is_empty());
    let mut capabilities: Vec<Capability> =
        overrides.capabilities.effective().into_iter().collect();
    capabilities.sort_by_key(|c| c.to_string());
    Ok(ProcessPlan {
        args,
        env,
        cwd,
        user,
        port,
        capabilities,
    })
}

fn single_exposed_port(image: &ImageConfiguration) -> Option<u16> {
    let ports = image.config().as_ref()?.exposed_ports().as_ref()?;
    let tcp: Vec<u16> = ports
        .iter()
        .filter_map(|p| {
            let (number, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            (proto == "tcp").then(|| number.parse().ok()).flatten()
        })
        .collect();
    match tcp[..] {
        [port] => Some(port),
        _ => None,
    }
}

/// Resolves an image `User` (`name`, `uid`, `uid:gid`, `name:group`) against the
/// rootfs's `/etc/passwd` and `/etc/group` contents.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    let (who, grp) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f.len() >= 3)
            .collect()
    };
    let passwd = entries(passwd);
    let (uid, primary_gid) = match who.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .iter()
                .find(|f| f[2] == who)
                .and_then(|f| f.get(3)?.parse().ok())
                .unwrap_or(uid);
            (uid, gid)
        }
        Err(_) => {
            let entry = passwd
                .iter()
                .find(|f| f[0] == who)
                .ok_or_else(|| format!("user `{who}` is not in the image's /etc/passwd"))?;
            let uid = entry[2]
                .parse()
                .map_err(|_| format!("user `{who}` has a bad uid"))?;
            let gid = entry
                .get(3)
                .and_then(|g| g.parse().ok())
                .ok_or_else(|| format!("user `{who}` has a bad gid"))?;
            (uid, gid)
        }
    };
    let gid = match grp {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(group)
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: &str) -> ImageConfiguration {
        serde_json::from_str(json).unwrap()
    }

    fn httpd() -> ImageConfiguration {
        image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Entrypoint":["/bin/httpd"],"Cmd":["-f","-p","80"],
            "Env":["PATH=/bin","GREETING=image"],"WorkingDir":"/www","User":"nobody",
            "ExposedPorts":{"80/tcp":{}}}}"#,
        )
    }

    #[test]
    fn command_and_arguments_replace_entrypoint_and_cmd_as_in_kubernetes() {
        let plan_with = |command: Option<&[&str]>, arguments: Option<&[&str]>| {
            let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
            plan(
                &httpd(),
                &ProcessOverrides {
                    command: command.map(owned),
                    arguments: arguments.map(owned),
                    ..Default::default()
                },
            )
            .unwrap()
            .args
        };
        assert_eq!(plan_with(None, None), ["/bin/httpd", "-f", "-p", "80"]);
        assert_eq!(plan_with(Some(&["/bin/sh"]), None), ["/bin/sh"]);
        assert_eq!(plan_with(None, Some(&["-v"])), ["/bin/httpd", "-v"]);
        assert_eq!(
            plan_with(Some(&["/bin/sh", "-c"]), Some(&["echo hi"])),
            ["/bin/sh", "-c", "echo hi"]
        );
    }

    #[test]
    fn env_merges_with_the_container_winning_and_port_is_announced() {
        let plan = plan(
            &httpd(),
            &ProcessOverrides {
                env: vec![("GREETING".into(), "container".into())],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(plan.env, ["PATH=/bin", "GREETING=container", "PORT=80"]);
        assert_eq!(plan.port, 80, "the image's single exposed port");
        assert_eq!(plan.cwd, "/www");
        assert_eq!(plan.user.as_deref(), Some("nobody"));
    }

    #[test]
    fn the_container_port_wins_and_8080_is_the_fallback() {
        let with_port = plan(
            &httpd(),
            &ProcessOverrides {
                port: Some(9000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(with_port.port, 9000);
        let bare = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Cmd":["/app"]}}"#,
        );
        let plan = plan(&bare, &ProcessOverrides::default()).unwrap();
        assert_eq!(plan.port, DEFAULT_PORT);
        assert_eq!(plan.cwd, "/");
        assert!(plan.env[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let bare = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        assert!(plan(&bare, &ProcessOverrides::default()).is_err());
    }

    #[test]
    fn users_resolve_by_name_number_and_group() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(resolve_user("nobody", passwd, group), Ok((65534, 65534)));
        assert_eq!(resolve_user("1000", passwd, group), Ok((1000, 1000)));
        assert_eq!(resolve_user("0:50", passwd, group), Ok((0, 50)));
        assert_eq!(resolve_user("nobody:staff", passwd, group), Ok((65534, 50)));
        assert!(resolve_user("ghost", passwd, group).is_err());
        assert!(resolve_user("root:ghosts", passwd, group).is_err());
    }
}
