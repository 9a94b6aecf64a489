//! Who trains: the peers of a data-parallel run (`run.devices`, `run.nodes`, `run.node_rank`,
//! `run.node_address`, `run.orchestrator`) and how many episodes make one step
//! (`episodes.per_step`), read and checked from the config.

use crate::config::{Config, DeviceKind};

/// The peers of a run and the episodes of its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The device kind every peer runs on.
    pub kind: DeviceKind,
    /// The device index of each peer on this node (`cuda:1` → 1; CPU peers share the one CPU
    /// device, the index only names them).
    pub local: Vec<u16>,
    /// Nodes in the run (1 without an orchestrator).
    pub nodes: usize,
    /// This node's index among them.
    pub node_rank: usize,
    /// Training episodes per optimizer step, over all peers.
    pub per_step: usize,
    /// `(this node's address, the orchestrator's address)` as `ws://host:port`, multi-node runs only.
    pub global: Option<(String, String)>,
}

impl Layout {
    /// The layout the config asks for.
    ///
    /// # Errors
    /// `(field, why)` for a value that cannot work: a malformed device list, devices of another
    /// kind than `run.device`, a node rank out of range, a multi-node run without addresses,
    /// `episodes.per_step` not a multiple of the peers or not dividing `episodes.train_episodes`.
    pub fn from_config(config: &Config) -> Result<Self, (&'static str, String)> {
        let run = &config.run;
        let (kind, local) = match &run.devices {
            None => (run.device, vec![0]),
            Some(list) => parse_devices(list)?,
        };
        if kind != run.device {
            return Err((
                "run.devices",
                format!(
                    "lists {0} devices but run.device is \"{1}\": set run.device = \"{0}\" too (--device {0})",
                    kind.name(),
                    run.device.name()
                ),
            ));
        }
        if run.nodes == 0 || run.nodes > 1024 {
            return Err(("run.nodes", format!("is {}; use 1 to 1024 nodes", run.nodes)));
        }
        if run.node_rank >= run.nodes {
            return Err((
                "run.node_rank",
                format!(
                    "is {} but run.nodes is {}: number the nodes 0 to {}",
                    run.node_rank,
                    run.nodes,
                    run.nodes - 1
                ),
            ));
        }
        let global = if run.nodes > 1 {
            let node = run.node_address.as_deref().ok_or((
                "run.node_address",
                "is not set, and a multi-node run (run.nodes > 1) needs it: this node's host:port, \
                 reachable by the other nodes, e.g. \"10.0.0.2:3001\""
                    .to_string(),
            ))?;
            let orchestrator = run.orchestrator.as_deref().ok_or((
                "run.orchestrator",
                "is not set, and a multi-node run (run.nodes > 1) needs it: the host:port of \
                 `fsct-train orchestrator --port P`, e.g. \"10.0.0.1:3000\""
                    .to_string(),
            ))?;
            Some((
                ws_address("run.node_address", node)?.0,
                ws_address("run.orchestrator", orchestrator)?.0,
            ))
        } else {
            None
        };
        let peers = local.len() * run.nodes;
        let per_step = config.episodes.per_step.unwrap_or(peers);
        if per_step == 0 || !per_step.is_multiple_of(peers) {
            return Err((
                "episodes.per_step",
                format!(
                    "is {per_step}, not a multiple of the {peers} peers (run.devices × run.nodes): \
                     every peer takes the same number of episodes per step; use {peers}, {} or leave it unset",
                    2 * peers
                ),
            ));
        }
        if !config.episodes.train_episodes.is_multiple_of(per_step) {
            return Err((
                "episodes.per_step",
                format!(
                    "is {per_step}, which does not divide episodes.train_episodes = {}: an epoch is a \
                     whole number of steps; make train_episodes a multiple of {per_step}",
                    config.episodes.train_episodes
                ),
            ));
        }
        Ok(Self { kind, local, nodes: run.nodes, node_rank: run.node_rank, per_step, global })
    }

    /// Peers over all nodes.
    pub fn peers(&self) -> usize {
        self.local.len() * self.nodes
    }

    /// Whether the run needs the data-parallel loop: several peers, or several episodes per step
    /// (gradient accumulation). One device and one episode per step is the plain loop.
    pub fn is_parallel(&self) -> bool {
        self.peers() > 1 || self.per_step > 1
    }

    /// The global rank of this node's `k`-th peer (node-major: node 0's peers first). Every node
    /// must list the same number of devices: the ranks, and the episodes dealt by them, assume it.
    pub fn rank(&self, k: usize) -> usize {
        self.node_rank * self.local.len() + k
    }
}

/// `"cpu:0,cpu:1"` → (Cpu, [0, 1]); a bare `cpu` is index 0.
fn parse_devices(list: &str) -> Result<(DeviceKind, Vec<u16>), (&'static str, String)> {
    let bad = |why: String| ("run.devices", why);
    let mut kind = None;
    let mut indices = Vec::new();
    for entry in list.split(',').map(str::trim) {
        let (name, index) = entry.split_once(':').unwrap_or((entry, "0"));
        let this = match name.to_ascii_lowercase().as_str() {
            "cpu" => DeviceKind::Cpu,
            "cuda" | "gpu" => DeviceKind::Cuda,
            "vulkan" => DeviceKind::Vulkan,
            _ => {
                return Err(bad(format!(
                    "has `{entry}`, not a device: write a comma-separated list such as \"cpu:0,cpu:1\" or \"cuda:0,cuda:1\""
                )))
            }
        };
        let index: u16 = index.trim().parse().map_err(|_| {
            bad(format!(
                "has `{entry}`, whose index is not a number: write e.g. \"{}:1\"",
                this.name()
            ))
        })?;
        if kind.is_some_and(|k| k != this) {
            return Err(bad(format!(
                "mixes device kinds (`{entry}`): every peer runs on the same kind, e.g. \"cuda:0,cuda:1\""
            )));
        }
        if indices.contains(&index) {
            return Err(bad(format!("lists `{entry}` twice: give each peer its own index")));
        }
        kind = Some(this);
        indices.push(index);
    }
    if indices.len() > 256 {
        return Err(bad(format!("lists {} devices; at most 256 per node", indices.len())));
    }
    Ok((kind.unwrap_or(DeviceKind::Cpu), indices))
}

/// `host:port` or `ws://host:port` → (`ws://host:port`, port).
pub(crate) fn ws_address(
    field: &'static str,
    text: &str,
) -> Result<(String, u16), (&'static str, String)> {
    let bare = text.trim().trim_start_matches("ws://").trim_end_matches('/');
    let port = bare.rsplit_once(':').and_then(|(host, port)| {
        (!host.is_empty()).then_some(()).and(port.parse::<u16>().ok()).filter(|p| *p != 0)
    });
    match port {
        Some(port) => Ok((format!("ws://{bare}"), port)),
        None => Err((
            field,
            format!("is \"{text}\", not a host:port address: write e.g. \"127.0.0.1:3000\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_parse_and_bad_ones_name_the_field() {
        assert_eq!(parse_devices("cpu:0,cpu:1").unwrap(), (DeviceKind::Cpu, vec![0, 1]));
        assert_eq!(parse_devices("cuda:0, cuda:3").unwrap(), (DeviceKind::Cuda, vec![0, 3]));
        for bad in ["tpu:0", "cpu:x", "cpu:0,cuda:1", "cpu:0,cpu:0", ""] {
            let (field, why) = parse_devices(bad).unwrap_err();
            assert_eq!(field, "run.devices", "{bad}: {why}");
        }
        assert_eq!(
            ws_address("f", "127.0.0.1:3000").unwrap(),
            ("ws://127.0.0.1:3000".into(), 3000)
        );
        assert_eq!(ws_address("f", "ws://h:1/").unwrap(), ("ws://h:1".into(), 1));
        assert!(ws_address("f", "nohost").is_err() && ws_address("f", ":80").is_err());
    }
}
