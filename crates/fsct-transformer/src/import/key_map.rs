//! The mapping between reference (PyTorch) keys and fsct parameter paths (the table of the
//! `import` docs), and the reference keys dropped on purpose.

use std::collections::BTreeSet;

use burn_store::TensorSnapshot;

/// Keys dropped on purpose.
pub(super) fn is_ignored(key: &str) -> bool {
    key.starts_with("FCN.")
        || key.starts_with("vic_regularization.")
        || key.ends_with("num_batches_tracked")
}

/// For an aliased conv-block key `feature.trunk.{i}.trunk.{0,1}.*`, the primary `C`/`BN` key.
pub(super) fn alias_target(key: &str) -> Option<String> {
    let rest = key.strip_prefix("feature.trunk.")?;
    let (block, rest) = rest.split_once('.')?;
    let rest = rest.strip_prefix("trunk.")?;
    let (index, leaf) = rest.split_once('.')?;
    let module = match index {
        "0" => "C",
        "1" => "BN",
        _ => return None,
    };
    Some(format!("feature.trunk.{block}.{module}.{leaf}"))
}

/// The reference key of an fsct parameter path.
pub(crate) fn reference_key(fsct_path: &str) -> String {
    const SEGMENTS: [(&str, &str); 10] = [
        ("input_linear.norm.", "input_linear.0."),
        ("input_linear.proj.", "input_linear.1."),
        ("FFN.norm.", "FFN.0."),
        ("FFN.fc1.", "FFN.1."),
        ("FFN.fc2.", "FFN.3."),
        ("linear.norm.", "linear.0."),
        ("linear.fc.", "linear.1."),
        ("linear.last.", "linear.2."),
        ("downsample.conv.", "downsample.0."),
        ("downsample.bn.", "downsample.1."),
    ];
    // The cosine head's weight-norm pair sits one module deeper in the reference (`L`).
    for leaf in ["weight_g", "weight_v"] {
        if fsct_path == format!("linear.last.{leaf}") {
            return format!("linear.2.L.{leaf}");
        }
    }
    let mut key = fsct_path.to_string();
    for (from, to) in SEGMENTS {
        if key.starts_with(from) || key.contains(&format!(".{from}")) {
            key = key.replacen(from, to, 1);
        }
    }
    if let Some(stem) = key.strip_suffix(".gamma") {
        key = format!("{stem}.weight");
    } else if let Some(stem) = key.strip_suffix(".beta") {
        key = format!("{stem}.bias");
    }
    key
}

/// The reference keys of a model's parameters.
pub(super) fn expected_keys(params: &[TensorSnapshot]) -> BTreeSet<String> {
    params.iter().map(|param| reference_key(&param.full_path())).collect()
}
