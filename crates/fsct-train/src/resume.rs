//! The resume policy: which config fields may change when a run continues from its `last.ckpt`.
//!
//! Every field of [`Config`] is in one of two classes; nothing is silently ignored.
//!
//! - **Takes effect** ([`TAKES_EFFECT`]): fields that change how long the run goes, where it runs
//!   or how it uses memory, without changing what it computes: `optim.epochs` (extend or
//!   shorten a run), `episodes.test_episodes`, `data.root` (a moved dataset), `data.threads`,
//!   `data.prefetch`, `data.cache`, `run.output`, `run.resume`, `run.device`, the peers (`run.devices`, `run.nodes`, `run.node_rank`,
//!   `run.node_address`, `run.orchestrator`: a run resumes on more or fewer peers),
//!   `memory.gradient_checkpoint`, `memory.cleanup_every`, `model.pretrained` (read only when a
//!   new run starts: a resumed one takes every weight from `last.ckpt`, so a moved, renamed or
//!   deleted file changes nothing), `optim.early_stopping_patience` (when to stop, read anew
//!   after every epoch). The resumed run uses the new value and logs each change.
//!   Exception: under the cosine schedule `optim.epochs` must match, since it sets the length of
//!   the cosine (a changed one would change every remaining step's learning rate).
//! - **Must match** (everything else, including fields added later): the model, the episodes,
//!   the data and its transforms, VIC, the optimizer and its recipe (kind, learning rate and
//!   schedule, warm-up, momentum, clipping), the precision and loss scaling, the seed.
//!   These decide the weights' shapes or the trajectory an exact resume reproduces; a resume
//!   with any of them changed is refused (exit code 2) with every differing field and both
//!   values. Image sizes are compared as resolved (through `data.name` and the backbone's
//!   default), not as written.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::Config;

/// Fields that take effect when a run resumes (see the module docs).
pub const TAKES_EFFECT: [&str; 18] = [
    "optim.epochs",
    "episodes.test_episodes",
    "data.root",
    "data.threads",
    "data.prefetch",
    "data.cache",
    "run.output",
    "run.resume",
    "run.device",
    "run.devices",
    "run.nodes",
    "run.node_rank",
    "run.node_address",
    "run.orchestrator",
    "memory.gradient_checkpoint",
    "memory.cleanup_every",
    "model.pretrained",
    "optim.early_stopping_patience",
];

/// One field that differs between the config and the checkpoint's.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The dotted field name.
    pub field: String,
    /// Its value in the config given now (TOML-like text; `none` when unset).
    pub now: String,
    /// Its value in the checkpoint's config.
    pub saved: String,
}

/// The differences, split by the policy: `(take effect, must match)`.
pub fn compare(now: &Config, saved: &Config) -> (Vec<Difference>, Vec<Difference>) {
    let (now_fields, saved_fields) = (flatten_config(now), flatten_config(saved));
    let mut fields: Vec<&String> = now_fields.keys().chain(saved_fields.keys()).collect();
    fields.sort();
    fields.dedup();
    let show = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "none".to_string(),
        Some(Value::String(s)) => format!("\"{s}\""),
        Some(v) => v.to_string(),
    };
    let (mut effect, mut must) = (Vec::new(), Vec::new());
    for field in fields {
        let (a, b) = (now_fields.get(field), saved_fields.get(field));
        if a == b {
            continue;
        }
        let diff = Difference { field: field.clone(), now: show(a), saved: show(b) };
        if takes_effect(field, saved) {
            effect.push(diff)
        } else {
            must.push(diff)
        }
    }
    (effect, must)
}

/// Whether a change of `field` takes effect on a run saved with `saved` (see the module docs).
fn takes_effect(field: &str, saved: &Config) -> bool {
    if field == "optim.epochs" && saved.optim.schedule == crate::config::LrScheduleKind::Cosine {
        return false;
    }
    TAKES_EFFECT.contains(&field)
}

/// The config as dotted fields, with the image size resolved.
fn flatten_config(config: &Config) -> BTreeMap<String, Value> {
    let mut resolved = config.clone();
    resolved.data.image_size = Some(config.image_size());
    let mut out = BTreeMap::new();
    flatten("", &serde_json::to_value(&resolved).unwrap_or(Value::Null), &mut out);
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&name, value, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The refusal message for the must-match differences.
pub fn refusal(checkpoint: &std::path::Path, must: &[Difference]) -> String {
    let list: Vec<String> = must
        .iter()
        .map(|d| format!("`{}` is {} now but {} in the checkpoint", d.field, d.now, d.saved))
        .collect();
    format!(
        "cannot resume from `{}`: {}; these settings must match the checkpoint's (see the resume policy in the \
         README): restore them, or start a new run with another --output (or --overwrite)",
        checkpoint.display(),
        list.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_classified_and_differences_are_listed_with_both_values() {
        let saved = Config::default();
        let mut now = saved.clone();
        now.optim.epochs = 80;
        now.data.threads = 7;
        now.vic.lambda_v *= 2.0;
        now.episodes.n_query = 15;
        let (effect, must) = compare(&now, &saved);
        assert_eq!(
            effect.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
            ["data.threads", "optim.epochs"]
        );
        assert_eq!(
            must.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
            ["episodes.n_query", "vic.lambda_v"]
        );
        assert_eq!((must[0].now.as_str(), must[0].saved.as_str()), ("15", "16"));
        let text = refusal(std::path::Path::new("runs/a/last.ckpt"), &must);
        assert!(text.contains("`vic.lambda_v`") && text.contains("runs/a/last.ckpt"), "{text}");
        // A changed pretrained file is allowed: a resume never reads it.
        let mut moved = saved.clone();
        moved.model.pretrained = Some("weights/resnet18-f37072fd.pth".into());
        let (effect, must) = compare(&moved, &saved);
        assert!(must.is_empty(), "{must:?}");
        assert_eq!(effect[0].field, "model.pretrained");
        // The patience of early stopping may change; the optimizer and its recipe may not.
        let mut patient = saved.clone();
        patient.optim.early_stopping_patience = Some(3);
        patient.optim.optimizer = crate::config::OptimizerKind::Sgd;
        patient.optim.schedule = crate::config::LrScheduleKind::Step;
        patient.optim.step_size = Some(100);
        patient.optim.grad_clip_norm = Some(1.0);
        let (effect, must) = compare(&patient, &saved);
        assert_eq!(
            effect.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
            ["optim.early_stopping_patience"]
        );
        assert_eq!(
            must.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(),
            ["optim.grad_clip_norm", "optim.optimizer", "optim.schedule", "optim.step_size"]
        );
        assert_eq!((must[1].now.as_str(), must[1].saved.as_str()), ("\"sgd\"", "\"adamw\""));
        // Under the cosine schedule the epochs set its length: they must match.
        let mut cosine = saved.clone();
        cosine.optim.schedule = crate::config::LrScheduleKind::Cosine;
        let mut longer = cosine.clone();
        longer.optim.epochs = 80;
        let (effect, must) = compare(&longer, &cosine);
        assert!(effect.is_empty(), "{effect:?}");
        assert_eq!(must[0].field, "optim.epochs");
        // Every name in the policy is a real field.
        let fields = flatten_config(&moved);
        for name in TAKES_EFFECT {
            assert!(fields.contains_key(name), "{name} is not a config field");
        }
    }

    #[test]
    fn image_sizes_compare_as_resolved() {
        let mut saved = Config::default();
        saved.model.backbone = "Conv4".parse().unwrap();
        let mut now = saved.clone();
        now.data.image_size = Some(84); // Conv4's default, written out
        assert!(compare(&now, &saved).1.is_empty());
        now.data.image_size = Some(32);
        assert_eq!(compare(&now, &saved).1[0].field, "data.image_size");
        // Another dataset name changes the resolved size (CIFAR: 84 → 64 for Conv), so it differs.
        let mut renamed = saved.clone();
        renamed.data.name = "CIFAR".into();
        let must = compare(&renamed, &saved).1;
        assert!(must.iter().any(|d| d.field == "data.name"), "{must:?}");
    }
}
