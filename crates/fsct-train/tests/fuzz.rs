//! Property tests of the input side: mutated configs (values, types, missing and extra keys) and
//! mutated checkpoint headers either work or fail with one input error; none panics.
//!
//! In-process cases are many and fast; a handful of mutated configs also go through the binary
//! (a short training run or exit code 2, never a panic).

use std::path::Path;
use std::process::Command;

use burn::backend::Flex;
use fsct_train::checkpoint::Checkpoint;
use fsct_train::config::Config;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use toml::Value;

mod common;

/// The common tiny run with VIC and mixed precision on, so mutations reach their fields too.
fn tiny() -> String {
    common::TINY.replace("[model]\n", "[model]\nuse_vic = true\n")
        + "\n[memory]\nprecision = \"mixed-f16\"\n"
}

/// Every config field as (section, key), from the default config's serialised form.
fn fields() -> Vec<(String, String)> {
    let value = Value::try_from(Config::default()).unwrap();
    let mut out = Vec::new();
    for (section, table) in value.as_table().unwrap() {
        for key in table.as_table().unwrap().keys() {
            out.push((section.clone(), key.clone()));
        }
    }
    out.push(("data".into(), "image_size".into())); // an Option: absent from the default
    out.push(("data".into(), "root".into()));
    out
}

/// Values of every TOML type, including the boundaries that break naive code.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Integer(0)),
        Just(Value::Integer(1)),
        Just(Value::Integer(2)),
        Just(Value::Integer(-1)),
        Just(Value::Integer(i64::MAX)),
        Just(Value::Integer(i64::MIN)),
        Just(Value::Integer(1 << 32)),
        Just(Value::Float(f64::NAN)),
        Just(Value::Float(f64::INFINITY)),
        Just(Value::Float(-0.0)),
        Just(Value::Float(1e-300)),
        Just(Value::Float(1e300)),
        Just(Value::Float(0.5)),
        Just(Value::String(String::new())),
        Just(Value::String("cuda".into())),
        Just(Value::String("mixed-bf16".into())),
        Just(Value::String("ResNet12".into())),
        Just(Value::String("../../etc/passwd".into())),
        Just(Value::Boolean(true)),
        Just(Value::Array(vec![])),
        Just(Value::Table(Default::default())),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, Value),
    Remove(usize),
    Extra(usize, String),
    DropSection(usize),
    SectionNotATable(usize, Value),
}

fn mutation(n_fields: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (0..n_fields, odd_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        1 => (0..n_fields).prop_map(Mutation::Remove),
        1 => (0..n_fields, "[a-z_]{1,8}").prop_map(|(i, k)| Mutation::Extra(i, k)),
        1 => (0..n_fields).prop_map(Mutation::DropSection),
        1 => (0..n_fields, odd_value()).prop_map(|(i, v)| Mutation::SectionNotATable(i, v)),
    ]
}

fn mutate(base: &str, fields: &[(String, String)], mutations: &[Mutation]) -> String {
    let mut root: Value = toml::from_str(base).unwrap();
    let table = root.as_table_mut().unwrap();
    for m in mutations {
        let (section, key) = match m {
            Mutation::Set(i, _)
            | Mutation::Remove(i)
            | Mutation::Extra(i, _)
            | Mutation::DropSection(i)
            | Mutation::SectionNotATable(i, _) => fields[*i].clone(),
        };
        let entry =
            table.entry(section.clone()).or_insert_with(|| Value::Table(Default::default()));
        match (m, entry.as_table_mut()) {
            (Mutation::Set(_, v), Some(t)) => {
                t.insert(key, v.clone());
            }
            (Mutation::Remove(_), Some(t)) => {
                t.remove(&key);
            }
            (Mutation::Extra(_, k), Some(t)) => {
                t.insert(format!("{k}_x"), Value::Integer(1));
            }
            (Mutation::DropSection(_), _) => {
                table.remove(&section);
            }
            (Mutation::SectionNotATable(_, v), _) => {
                table.insert(section, v.clone());
            }
            _ => {}
        }
    }
    toml::to_string(&root).unwrap_or_default()
}

/// Parse and validate, the binary's first steps; then build the model for what validated.
fn config_outcome(text: &str) -> Result<(), String> {
    let path = Path::new("mutated.toml");
    let config = Config::parse(text, path).map_err(|e| e.to_string())?;
    config.validate(path).map_err(|e| e.to_string())?;
    // Building the model is the next place a value could reach an assert: only for sizes that
    // build in moments in a test (the binary path below covers running).
    let small =
        config.image_size() <= 64 && config.model.mlp_dim <= 4096 && config.model.depth <= 4;
    if small {
        fsct_train::model::build_model::<Flex>(&config, &Default::default())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn mutated_configs_validate_or_fail_with_a_message_never_panic() {
    let fields = fields();
    let configs_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut bases = vec![tiny()];
    for name in ["quickstart.toml", "medium_16gb.toml", "miniimagenet.toml"] {
        bases.push(std::fs::read_to_string(configs_dir.join(name)).unwrap());
    }
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (0..bases.len(), proptest::collection::vec(mutation(fields.len()), 1..4));
    runner
        .run(&strategy, |(base, mutations)| {
            let text = mutate(&bases[base], &fields, &mutations);
            let outcome = std::panic::catch_unwind(|| config_outcome(&text));
            prop_assert!(outcome.is_ok(), "panicked on:\n{text}");
            if let Ok(Err(message)) = outcome {
                prop_assert!(!message.trim().is_empty(), "an empty message for\n{text}");
            }
            Ok(())
        })
        .unwrap();
}

/// The checkpoint format, written by hand with valid checksums so mutations reach the header.
fn checkpoint_bytes(header: &[u8], model: &[u8], optimizer: &[u8]) -> Vec<u8> {
    let mut out = b"FSCTCKPT".to_vec();
    out.extend_from_slice(&2u32.to_le_bytes());
    for block in [header, model, optimizer] {
        out.extend_from_slice(&(block.len() as u64).to_le_bytes());
        out.extend_from_slice(block);
        out.extend_from_slice(&crc32fast::hash(block).to_le_bytes());
    }
    out
}

fn json_mutation() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(0.5)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("Conv6")),
        Just(serde_json::json!("CTX_cosine")),
        Just(serde_json::json!(null)),
        Just(serde_json::json!(true)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!(24)),
        Just(serde_json::json!(5)),
    ]
}

/// Every leaf of a JSON value by its pointer.
fn leaves(value: &serde_json::Value, prefix: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                leaves(v, format!("{prefix}/{k}"), out);
            }
            out.push(prefix);
        }
        _ => out.push(prefix),
    }
}

#[test]
fn mutated_checkpoint_headers_load_or_fail_with_a_message_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse(&tiny(), Path::new("tiny.toml")).unwrap();
    config.memory.precision = fsct_train::config::Precision::F32;
    config.run.output = dir.path().join("run");
    fsct_train::train::run_experiment::<burn::backend::Autodiff<Flex>>(
        &config,
        &Default::default(),
    )
    .unwrap();
    let ckpt = Checkpoint::load(&dir.path().join("run/best.ckpt")).unwrap();
    let header = serde_json::to_value(&ckpt.header).unwrap();
    let mut pointers = Vec::new();
    leaves(&header, String::new(), &mut pointers);
    pointers.retain(|p| !p.is_empty());
    let path = dir.path().join("mutated.ckpt");

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = proptest::collection::vec(
        (0..pointers.len(), prop_oneof![3 => json_mutation().prop_map(Some), 1 => Just(None)]),
        1..4,
    );
    runner
        .run(&strategy, |mutations| {
            let mut h = header.clone();
            for (i, value) in &mutations {
                let pointer = &pointers[*i];
                let (parent, key) = pointer.rsplit_once('/').unwrap();
                if let Some(serde_json::Value::Object(map)) = h.pointer_mut(parent) {
                    match value {
                        Some(v) => map.insert(key.to_string(), v.clone()),
                        None => map.remove(key),
                    };
                }
            }
            std::fs::write(
                &path,
                checkpoint_bytes(&serde_json::to_vec(&h).unwrap(), &ckpt.model, &ckpt.optimizer),
            )
            .unwrap();
            // What `test` does with a checkpoint, up to the first episode.
            let outcome = std::panic::catch_unwind(|| -> Result<(), String> {
                let loaded = Checkpoint::load(&path).map_err(|e| e.to_string())?;
                let config = &loaded.header.config;
                config.validate(&path).map_err(|e| e.to_string())?;
                let device = Default::default();
                let model = fsct_train::model::build_model::<Flex>(config, &device)
                    .map_err(|e| e.to_string())?;
                fsct_train::weights::load_model_bytes(
                    model,
                    &loaded.model,
                    "mutated.ckpt",
                    &device,
                )
                .map_err(|e| e.to_string())?;
                Ok(())
            });
            prop_assert!(outcome.is_ok(), "panicked on header {h}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_configs_through_the_binary_run_or_exit_2() {
    let fields = fields();
    let dir = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 10,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    // Small values only: a run must finish in seconds.
    let small = prop_oneof![
        Just(Value::Integer(0)),
        Just(Value::Integer(1)),
        Just(Value::Integer(2)),
        Just(Value::Integer(3)),
        Just(Value::Integer(-1)),
        Just(Value::Float(f64::NAN)),
        Just(Value::String("x".into())),
        Just(Value::Boolean(true)),
    ];
    let strategy = proptest::collection::vec((0..fields.len(), small), 1..3);
    let case = std::cell::Cell::new(0);
    runner
        .run(&strategy, |sets| {
            case.set(case.get() + 1);
            let case = case.get();
            let mutations: Vec<Mutation> =
                sets.into_iter().map(|(i, v)| Mutation::Set(i, v)).collect();
            let text = mutate(&tiny(), &fields, &mutations);
            let config = dir.path().join(format!("case{case}.toml"));
            std::fs::write(&config, &text).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_fsct-train"))
                .args([
                    "--config",
                    config.to_str().unwrap(),
                    "--output",
                    dir.path().join(format!("run{case}")).to_str().unwrap(),
                ])
                .env("RUST_LOG", "error")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(
                !stderr.contains("panicked") && !stderr.contains("internal error"),
                "{text}\n{stderr}"
            );
            // 0: it ran; 2: one input error; 1 only for a run that diverged.
            let code = out.status.code();
            prop_assert!(
                code == Some(0)
                    || code == Some(2)
                    || (code == Some(1) && stderr.contains("diverged")),
                "exit {code:?} for\n{text}\n{stderr}"
            );
            if code != Some(0) {
                prop_assert_eq!(stderr.matches("error:").count(), 1, "{}", stderr);
            }
            Ok(())
        })
        .unwrap();
}
