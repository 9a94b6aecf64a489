//! A memory budget: parsing `memory.budget = "8GiB"`, the settings tried in order of cost, the
//! choice that fits, and the closest configuration when nothing does.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use fsct_backbone::BackboneName;
use serde::{Deserialize, Serialize};

use super::{predict, PlanOptions, Prediction};
use crate::config::{Checkpointing, Config, Precision};

/// A number of bytes, written as `"8GiB"`, `"7.5GiB"`, `"512MiB"`, `"8GB"` (10⁹) or a plain
/// byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Budget(pub u64);

const GIB: f64 = (1u64 << 30) as f64;

impl Budget {
    /// `gib` GiB.
    pub fn gib(gib: f64) -> Self {
        Self((gib * GIB).round() as u64)
    }
}

impl FromStr for Budget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("`{s}` is not a memory size: write e.g. \"8GiB\", \"512MiB\" or \"12GB\"")
        })?;
        let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" => 1024.0,
            "kb" => 1e3,
            "m" | "mib" => 1024.0 * 1024.0,
            "mb" => 1e6,
            "g" | "gib" => GIB,
            "gb" => 1e9,
            "t" | "tib" => GIB * 1024.0,
            "tb" => 1e12,
            other => {
                return Err(format!(
                    "`{s}`: unknown unit `{other}`; use B, KiB, MiB, GiB (or KB, MB, GB)"
                ))
            }
        };
        let bytes = value * factor;
        if !(bytes.is_finite() && bytes >= 1.0) {
            return Err(format!("`{s}` is not a positive memory size"));
        }
        Ok(Self(bytes.round() as u64))
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&gib(self.0))
    }
}

impl Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1 << 20) {
            serializer.serialize_str(&format!("{}MiB", self.0 >> 20))
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a memory size such as \"8GiB\" or \"512MiB\"")
        })? {
            Written::Bytes(0) => Err(serde::de::Error::custom("a budget of 0 bytes fits nothing")),
            Written::Bytes(b) => Ok(Self(b)),
            Written::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Bytes as GiB with two decimals (MiB with one below 1 GiB).
pub fn gib(bytes: u64) -> String {
    if (bytes as f64) < GIB {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", bytes as f64 / GIB)
    }
}

/// One combination of memory settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// `memory.precision`.
    pub precision: Precision,
    /// `memory.gradient_checkpoint`.
    pub checkpointing: Checkpointing,
}

impl Candidate {
    /// As a config would say it.
    pub fn describe(&self) -> String {
        format!(
            "precision = \"{}\", gradient_checkpoint = \"{}\"",
            precision_name(self.precision),
            self.checkpointing.name()
        )
    }

    /// `config` with these settings.
    pub fn apply(&self, config: &Config) -> Config {
        let mut c = config.clone();
        c.memory.precision = self.precision;
        c.memory.gradient_checkpoint = self.checkpointing;
        c
    }
}

/// A precision as written in a config.
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::MixedF16 => "mixed-f16",
        Precision::MixedBf16 => "mixed-bf16",
        Precision::F16 => "f16",
        Precision::Bf16 => "bf16",
    }
}

/// The settings tried, fastest first: f32 without checkpointing; balanced; blocks; mixed half;
/// mixed half with blocks. A pure-half config keeps its precision and only varies checkpointing;
/// a mixed-bf16 one uses bf16 as its half.
pub fn candidates(config: &Config) -> Vec<Candidate> {
    use Checkpointing::{Balanced, Blocks, None};
    let c = |precision, checkpointing| Candidate { precision, checkpointing };
    match config.memory.precision {
        p @ (Precision::F16 | Precision::Bf16) => vec![c(p, None), c(p, Balanced), c(p, Blocks)],
        p => {
            let half = if p == Precision::MixedBf16 { p } else { Precision::MixedF16 };
            vec![
                c(Precision::F32, None),
                c(Precision::F32, Balanced),
                c(Precision::F32, Blocks),
                c(half, None),
                c(half, Blocks),
            ]
        }
    }
}

/// What the planner chose for a budget.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The settings.
    pub candidate: Candidate,
    /// Their prediction (its config is the one to train with).
    pub prediction: Prediction,
}

/// Whether a prediction fits `budget` (its step and its evaluation).
pub fn fits(prediction: &Prediction, budget: Budget) -> bool {
    prediction.peak() <= budget.0
}

/// The fastest candidate that fits `budget`, measuring candidates in order until one does; else
/// an error naming the closest configuration that would fit.
///
/// # Errors
/// Nothing fits ([`crate::error::InputError`], exit 2), or a prediction failed.
pub fn choose(config: &Config, budget: Budget, options: &PlanOptions) -> Result<Choice> {
    let mut leanest = None;
    for candidate in candidates(config) {
        let prediction = predict(&candidate.apply(config), options)?;
        tracing::debug!(settings = %candidate.describe(), peak = %gib(prediction.peak()), "memory plan candidate");
        if fits(&prediction, budget) {
            return Ok(Choice { candidate, prediction });
        }
        leanest = Some((candidate, prediction));
    }
    let (candidate, prediction) = leanest.expect("at least one candidate");
    Err(refusal(config, budget, candidate, &prediction, options)?.into())
}

/// The refusal when nothing fits: the leanest settings' need and the closest configuration that
/// fits (fewer queries, else a smaller backbone, else smaller images).
fn refusal(
    config: &Config,
    budget: Budget,
    candidate: Candidate,
    prediction: &Prediction,
    options: &PlanOptions,
) -> Result<crate::error::InputError> {
    let closest = closest_fit(config, budget, candidate, prediction, options)?;
    let advice = match closest {
        Some((change, p)) => format!(
            "the closest configuration that fits: {change} with {} (predicted peak {})",
            candidate.describe(),
            gib(p.peak())
        ),
        None => "no smaller n_query, backbone or image size fits either; raise the budget".into(),
    };
    Ok(crate::error::InputError::new(format!(
        "memory.budget = {budget}: no memory setting fits {} ({}-way {}-shot {} queries at {} px) on {}: \
         the leanest, {}, needs {} per training step; {advice}",
        config.backbone(),
        config.episodes.n_way,
        config.episodes.k_shot,
        config.episodes.n_query,
        config.image_size(),
        options.device.name(),
        candidate.describe(),
        gib(prediction.peak()),
    )))
}

/// The largest `n_query` below the config's at which `prediction` fits, if any.
pub fn largest_n_query(prediction: &Prediction, budget: Budget) -> Option<usize> {
    (1..prediction.config.episodes.n_query)
        .rev()
        .find(|&q| fits(&prediction.with_n_query(q), budget))
}

/// Smaller backbones to suggest, closest first.
fn smaller_backbones(name: BackboneName) -> Vec<BackboneName> {
    let resnet = |depth, feti| BackboneName::ResNet { depth, feti };
    let conv4 = BackboneName::Conv { depth: 4, no_pool: false, single_channel: false };
    match name {
        BackboneName::ResNet { depth: 34, feti } => vec![resnet(18, feti), conv4],
        BackboneName::ResNet { depth: 18, feti: true } => vec![resnet(12, true), conv4],
        BackboneName::ResNet { .. } => vec![conv4],
        BackboneName::Conv { depth: 6, no_pool, single_channel } => {
            vec![BackboneName::Conv { depth: 4, no_pool, single_channel }]
        }
        BackboneName::Conv { .. } => vec![],
    }
}

fn closest_fit(
    config: &Config,
    budget: Budget,
    candidate: Candidate,
    prediction: &Prediction,
    options: &PlanOptions,
) -> Result<Option<(String, Prediction)>> {
    if let Some(q) = largest_n_query(prediction, budget) {
        return Ok(Some((format!("episodes.n_query = {q}"), prediction.with_n_query(q))));
    }
    let lean = candidate.apply(config);
    for backbone in smaller_backbones(config.backbone()) {
        let mut c = lean.clone();
        c.model.backbone = backbone;
        c.model.feti = matches!(backbone, BackboneName::ResNet { feti: true, .. });
        if c.validate(std::path::Path::new("<plan>")).is_err() {
            continue;
        }
        let p = predict(&c, options)?;
        if fits(&p, budget) {
            return Ok(Some((format!("model.backbone = \"{}\"", backbone.reference_name()), p)));
        }
    }
    let side = config.image_size();
    for smaller in [84, 64, 32].into_iter().filter(|&s| s < side) {
        let mut c = lean.clone();
        c.data.image_size = Some(smaller);
        if c.validate(std::path::Path::new("<plan>")).is_err() {
            continue;
        }
        let Ok(p) = predict(&c, options) else { continue };
        if fits(&p, budget) {
            return Ok(Some((format!("data.image_size = {smaller}"), p)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_in_binary_and_decimal_units() {
        assert_eq!("8GiB".parse::<Budget>().unwrap(), Budget(8 << 30));
        assert_eq!("8 GiB".parse::<Budget>().unwrap(), Budget(8 << 30));
        assert_eq!("512MiB".parse::<Budget>().unwrap(), Budget(512 << 20));
        assert_eq!("12GB".parse::<Budget>().unwrap(), Budget(12_000_000_000));
        assert_eq!("7.5GiB".parse::<Budget>().unwrap(), Budget(15 << 29));
        assert_eq!("1024".parse::<Budget>().unwrap(), Budget(1024));
        for bad in ["", "GiB", "8 parsecs", "-1GiB", "0"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_candidates_go_from_fastest_to_leanest() {
        let config = Config::default();
        let c = candidates(&config);
        assert_eq!(
            c.first().unwrap().describe(),
            "precision = \"f32\", gradient_checkpoint = \"none\""
        );
        assert_eq!(
            c.last().unwrap().describe(),
            "precision = \"mixed-f16\", gradient_checkpoint = \"blocks\""
        );
        let mut pure = Config::default();
        pure.memory.precision = Precision::F16;
        assert!(candidates(&pure).iter().all(|c| c.precision == Precision::F16));
    }
}
