//! Where the state dict sits in a checkpoint, which wrapper prefix its keys carry, and which
//! keys resemble a missing one.

use std::collections::BTreeSet;
use std::rc::Rc;

use super::value::{TensorRef, Value};

/// Dict names trainers nest a state dict under, in order of preference when two tie.
const CONTAINER_NAMES: [&str; 7] =
    ["state", "state_dict", "model", "model_state_dict", "module", "net", "network"];
/// Wrapper segments stripped even when no key matches the model (for the error's key names).
const WRAPPERS: [&str; 2] = ["module", "_orig_mod"];

/// A tensor of the chosen state dict.
pub(crate) struct Entry {
    /// Its name as burn-store flattens it (dict keys joined by `.` from the root).
    pub full: String,
    /// Its key without the state dict's path and the wrapper prefix: the reference name.
    pub key: String,
    pub tensor: Rc<TensorRef>,
}

/// The chosen state dict.
pub(crate) struct Located {
    /// Path of the dict holding it (`state`, `state_dict`, `model`, …); empty at the top level.
    pub container: Vec<String>,
    /// Prefix removed from every key (`module.`, `_orig_mod.`, `model.`, …); empty if none.
    pub prefix: String,
    pub entries: Vec<Entry>,
    /// The file's other tensors, by their full names (for suggestions).
    pub elsewhere: Vec<String>,
    /// `epoch` of the nearest enclosing dict, if an int.
    pub epoch: Option<i64>,
}

struct Candidate<'a> {
    path: Vec<&'a str>,
    /// (flattened key within the dict, tensor)
    tensors: Vec<(String, Rc<TensorRef>)>,
}

/// Finds the dict and wrapper prefix under which most of the `expected` reference keys appear.
///
/// Every dict of the file that holds tensors is a candidate, and so is every prefix of whole
/// `.`-segments common to all its keys (`module.`, `_orig_mod.`, `module._orig_mod.`, `model.`).
/// The pair naming the most expected keys wins; ties go to the innermost dict, then the shorter
/// prefix. If no key matches at all, the dict with the most tensors is taken with only the known
/// wrapper prefixes stripped, so that the missing-key error shows what the file holds.
pub(crate) fn locate(root: &Value, expected: &BTreeSet<String>) -> Option<Located> {
    let mut candidates = Vec::new();
    collect_dicts(root, &mut Vec::new(), &mut candidates);
    let mut best: Option<(usize, usize, usize, usize)> = None; // (score, candidate, prefix segments, depth)
    for (index, candidate) in candidates.iter().enumerate() {
        let common = common_segments(candidate.tensors.iter().map(|(k, _)| k.as_str()));
        for segments in 0..=common.len() {
            let prefix = prefix_of(&common[..segments]);
            let score = candidate
                .tensors
                .iter()
                .filter(|(k, _)| expected.contains(k.strip_prefix(&prefix).unwrap_or(k)))
                .count();
            let depth = candidate.path.len();
            let better = match best {
                None => true,
                Some((s, i, g, d)) => {
                    (
                        score,
                        depth,
                        std::cmp::Reverse(segments),
                        std::cmp::Reverse(preference(&candidates[index].path)),
                    ) > (
                        s,
                        d,
                        std::cmp::Reverse(g),
                        std::cmp::Reverse(preference(&candidates[i].path)),
                    )
                }
            };
            if better {
                best = Some((score, index, segments, depth));
            }
        }
    }
    let (score, index, segments, _) = best?;
    let (index, prefix) = if score > 0 {
        let common = common_segments(candidates[index].tensors.iter().map(|(k, _)| k.as_str()));
        (index, prefix_of(&common[..segments]))
    } else {
        // Nothing matches: the largest dict (the outermost of equals), known wrappers stripped.
        let index = (0..candidates.len()).max_by_key(|&i| {
            (candidates[i].tensors.len(), std::cmp::Reverse(candidates[i].path.len()))
        })?;
        let common = common_segments(candidates[index].tensors.iter().map(|(k, _)| k.as_str()));
        let wrappers = common.iter().take_while(|s| WRAPPERS.contains(s)).count();
        (index, prefix_of(&common[..wrappers]))
    };
    let chosen = &candidates[index];
    let container: Vec<String> = chosen.path.iter().map(|s| s.to_string()).collect();
    let join = |key: &str| {
        if container.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", container.join("."))
        }
    };
    let entries: Vec<Entry> = chosen
        .tensors
        .iter()
        .map(|(k, tensor)| Entry {
            full: join(k),
            key: k.strip_prefix(&prefix).unwrap_or(k).to_string(),
            tensor: tensor.clone(),
        })
        .collect();
    let inside: BTreeSet<&str> = entries.iter().map(|e| e.full.as_str()).collect();
    let elsewhere = candidates[candidates.iter().position(|c| c.path.is_empty()).unwrap_or(index)]
        .tensors
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !inside.contains(k.as_str()))
        .collect();
    Some(Located { epoch: epoch_near(root, &chosen.path), container, prefix, entries, elsewhere })
}

fn preference(path: &[&str]) -> usize {
    path.last()
        .and_then(|n| CONTAINER_NAMES.iter().position(|c| c == n))
        .unwrap_or(CONTAINER_NAMES.len())
}

fn prefix_of(segments: &[&str]) -> String {
    segments.iter().map(|s| format!("{s}.")).collect()
}

/// Leading `.`-segments shared by all keys, never a key's last segment.
fn common_segments<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut common: Option<Vec<&str>> = None;
    for key in keys {
        let segments: Vec<&str> = key.split('.').collect();
        let heads = &segments[..segments.len() - 1];
        common = Some(match common {
            None => heads.to_vec(),
            Some(c) => c.iter().zip(heads).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
        });
    }
    common.unwrap_or_default()
}

/// Every dict holding tensors (through nested dicts, as burn-store flattens them).
fn collect_dicts<'a>(value: &'a Value, path: &mut Vec<&'a str>, out: &mut Vec<Candidate<'a>>) {
    let Value::Dict(map) = value else { return };
    let mut tensors = Vec::new();
    flatten(value, &mut String::new(), &mut tensors);
    if tensors.is_empty() {
        return;
    }
    out.push(Candidate { path: path.clone(), tensors });
    for (key, child) in &map.items {
        path.push(key);
        collect_dicts(child, path, out);
        path.pop();
    }
}

fn flatten(value: &Value, path: &mut String, out: &mut Vec<(String, Rc<TensorRef>)>) {
    match value {
        Value::Tensor(t) => out.push((path.clone(), t.clone())),
        Value::Dict(map) => {
            let len = path.len();
            for (key, child) in &map.items {
                if len > 0 {
                    path.push('.');
                }
                path.push_str(key);
                flatten(child, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The `epoch` int of the dicts enclosing the state dict, nearest first (the state dict's own
/// when it is the top level).
fn epoch_near(root: &Value, path: &[&str]) -> Option<i64> {
    let mut dicts = vec![root];
    for key in path {
        match dicts.last() {
            Some(Value::Dict(map)) => match map.items.get(*key) {
                Some(child) => dicts.push(child),
                None => break,
            },
            _ => break,
        }
    }
    let enclosing = if path.is_empty() { &dicts[..] } else { &dicts[..dicts.len() - 1] };
    enclosing.iter().rev().find_map(|d| match d {
        Value::Dict(map) => match map.items.get("epoch") {
            Some(Value::Int(epoch)) => Some(*epoch),
            _ => None,
        },
        _ => None,
    })
}

/// Up to three keys resembling `wanted`: those ending in `.{wanted}` (or whose name `wanted`
/// ends with) first, then those within a small edit distance.
pub(crate) fn similar<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let budget = (wanted.len() / 5).max(2);
    let mut ranked: Vec<((u8, usize), &str)> = candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .filter_map(|c| {
            if c.ends_with(&format!(".{wanted}")) || wanted.ends_with(&format!(".{c}")) {
                return Some(((0, c.len().abs_diff(wanted.len())), c));
            }
            if c.len().abs_diff(wanted.len()) > budget {
                return None;
            }
            let distance = levenshtein(wanted.as_bytes(), c.as_bytes());
            (distance <= budget).then_some(((1, distance), c))
        })
        .collect();
    ranked.sort();
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(3).map(|(_, c)| c.to_string()).collect()
}

fn levenshtein(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diagonal + usize::from(x != y));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_keys_prefer_shared_suffixes_then_small_edits() {
        let keys = [
            "x.proto_weight",
            "proto_weights",
            "feature.trunk.3.C.weight",
            "ATTN.output_linear.bias",
        ];
        assert_eq!(similar("proto_weight", keys), ["x.proto_weight", "proto_weights"]);
        assert_eq!(similar("feature.trunk.4.C.weight", keys), ["feature.trunk.3.C.weight"]);
        assert!(similar("FFN.1.weight", keys).is_empty());
        assert_eq!(levenshtein(b"kitten", b"sitting"), 3);
    }

    #[test]
    fn common_segments_never_take_a_whole_key() {
        assert_eq!(common_segments(["module.a.b", "module.a.c"].into_iter()), ["module", "a"]);
        assert_eq!(common_segments(["module.a", "module"].into_iter()), Vec::<&str>::new());
        assert_eq!(common_segments(["module.x"].into_iter()), ["module"]);
    }
}
