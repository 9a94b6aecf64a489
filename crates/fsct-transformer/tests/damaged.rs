//! Damaged, inflated and hostile checkpoint files: each gets one `ImportError::Read` naming the
//! file and what is wrong, and nothing — no panic message, no backtrace — reaches stderr.
//!
//! The files are made here from the fixtures (truncated at many points, a zip member cut short
//! or corrupted) or written by hand (`common::torchfile`) claiming more than they hold. The
//! imports run in a child process (this test binary re-run on `damaged_files_child`) with
//! `RUST_BACKTRACE=1`, and the parent checks the child's stderr.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use burn_store::pytorch::PytorchReader;
use common::local_fixture;
use common::torchfile::{
    f32_entry, legacy_header, main_pickle, write_legacy, write_legacy_with, write_zip,
    write_zip_with, Entry, Pickle,
};
use fsct_backbone::ConvNetConfig;
use fsct_transformer::import::{import_reference, ImportError, ImportOptions};
use fsct_transformer::FsctConfig;

type B = Flex;

const CHILD: &str = "FSCT_DAMAGED_CHILD";

fn import(path: &Path) -> Result<(), ImportError> {
    let device = Default::default();
    let backbone = ConvNetConfig::conv(1).init::<B>(&device);
    let model = FsctConfig::new(3, 2, 64)
        .with_heads(2)
        .with_dim_head(8)
        .with_mlp_dim(16)
        .init(backbone, &device);
    import_reference(model, path, &ImportOptions::default()).map(|_| ())
}

/// A damaged file and a word its error must contain (besides the file's name).
struct Case {
    name: String,
    path: PathBuf,
    expect: &'static str,
    /// Whether the error must be `ImportError::Read` (the others are readable files that do not
    /// fit the model).
    read: bool,
}

fn cases(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, expect: &'static str, write: &dyn Fn(&Path)| {
        let path = dir.join(format!("{name}.pt"));
        write(&path);
        cases.push(Case { name: name.into(), path, expect, read: !name.starts_with("fits_not") });
    };

    // Truncated copies of real files, zip and legacy, cut at many points.
    for (source, tag) in
        [("micro_cosine_dataparallel.pt", "zip"), ("micro_cosine_legacy.tar", "legacy")]
    {
        let bytes = std::fs::read(local_fixture(source)).unwrap();
        let n = bytes.len();
        for cut in [
            0,
            1,
            14,
            16,
            40,
            100,
            200,
            700,
            2000,
            n / 3,
            n / 2,
            n - 600,
            n - 100,
            n - 30,
            n - 22,
            n - 9,
            n - 1,
        ] {
            add(&format!("{tag}_cut_{cut}"), "", &|p| std::fs::write(p, &bytes[..cut]).unwrap());
        }
    }
    // A real zip whose one storage member is cut short, or has a flipped byte (CRC mismatch).
    let source = local_fixture("micro_cosine_dataparallel.pt");
    add("zip_member_truncated", "data/", &|p| {
        rewrite_member(&source, p, "data/3", |d| d.truncate(d.len() / 2))
    });
    add("zip_member_emptied", "data/", &|p| rewrite_member(&source, p, "data/3", |d| d.clear()));
    add("zip_member_corrupt", "damaged", &|p| corrupt_member_byte(&source, p, "data/3"));
    // The central directory claims a larger member: its size alone, or its stored size too.
    add("zip_directory_size_inflated", "data/3", &|p| {
        inflate_directory_sizes(&source, p, "data/3", false)
    });
    add("zip_directory_sizes_inflated", "data/3", &|p| {
        inflate_directory_sizes(&source, p, "data/3", true)
    });

    // Hand-written files claiming more than they hold.
    let honest =
        || vec![f32_entry("proto_weight", "0", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2, 1])];
    let with = |f: &dyn Fn(&mut Entry)| {
        let mut entries = honest();
        f(&mut entries[0]);
        entries
    };
    for (tag, legacy) in [("zip", false), ("legacy", true)] {
        let write = move |p: &Path, entries: &[Entry]| {
            if legacy {
                write_legacy(p, entries, Some(1))
            } else {
                write_zip(p, entries, Some(1))
            }
        };
        add(&format!("{tag}_storage_numel_inflated"), "storage `0`", &|p| {
            write(p, &with(&|e| e.numel = 1000))
        });
        add(&format!("{tag}_storage_numel_huge"), "storage `0`", &|p| {
            write(p, &with(&|e| e.numel = 1 << 61))
        });
        add(&format!("{tag}_storage_numel_max"), "storage `0`", &|p| {
            write(p, &with(&|e| e.numel = i64::MAX as u64))
        });
        add(&format!("{tag}_shape_beyond_storage"), "proto_weight", &|p| {
            write(p, &with(&|e| e.shape = vec![30, 2, 1]))
        });
        add(&format!("{tag}_offset_beyond_storage"), "proto_weight", &|p| {
            write(p, &with(&|e| e.offset = 5))
        });
        add(&format!("{tag}_negative_offset"), "offset", &|p| write(p, &with(&|e| e.offset = -4)));
        add(&format!("{tag}_negative_dim"), "dimension", &|p| {
            write(p, &with(&|e| e.shape = vec![-3, 2, 1]))
        });
        add(&format!("{tag}_shape_product_overflows"), "proto_weight", &|p| {
            write(p, &with(&|e| e.shape = vec![1 << 40, 1 << 40, 1 << 40]))
        });
        add(&format!("{tag}_data_short"), "storage `0`", &|p| {
            write(p, &with(&|e| e.data.truncate(8)))
        });
        add(&format!("{tag}_complex_storage"), "ComplexFloatStorage", &|p| {
            write(p, &with(&|e| e.kind = "ComplexFloatStorage"))
        });
    }
    add("legacy_count_header_inflated", "storage `0`", &|p| {
        write_legacy(p, &with(&|e| e.count_header = Some(1 << 40)), None)
    });
    add("legacy_count_header_short", "storage `0`", &|p| {
        write_legacy(p, &with(&|e| e.count_header = Some(2)), None)
    });
    add("legacy_storage_not_listed", "storage list", &|p| {
        let entries = honest();
        let mut out = legacy_header();
        out.extend(main_pickle(&entries, None, true));
        out.extend(Pickle::start().op(b']').stop());
        std::fs::write(p, out).unwrap();
    });
    add("legacy_storage_listed_but_unused", "storage list", &|p| {
        let mut entries = honest();
        entries.push(f32_entry("extra", "1", &[1.0], &[1]));
        let pickle = main_pickle(&entries[..1], None, true);
        write_legacy_with(p, &pickle, &entries);
    });
    add("zip_member_missing", "no data", &|p| {
        let entries = honest();
        write_zip_with(p, &main_pickle(&entries, None, false), &[]);
    });
    add("deeply_nested", "levels deep", &|p| {
        let mut pickle = Pickle::start();
        pickle.op(b'}').str("x");
        for _ in 0..100_000 {
            pickle.op(b']');
        }
        for _ in 0..100_000 {
            pickle.op(b'a');
        }
        let pickle = pickle.op(b's').stop();
        write_zip_with(p, &pickle, &[]);
    });
    add("memo_bomb", "over and over", &|p| {
        // A list of 2000 items, fetched from the memo and appended to another list 2000 times.
        let mut pickle = Pickle::start();
        pickle.op(b'}').str("x").op(b']').op(b']').op(b'(');
        for i in 0..2000 {
            pickle.int(i);
        }
        pickle.op(b'e').op(b'q').op(0).op(b'a');
        for _ in 0..2000 {
            pickle.op(b'h').op(0).op(b'a');
        }
        write_zip_with(p, &pickle.op(b's').stop(), &[])
    });
    add("empty_file", "empty", &|p| std::fs::write(p, b"").unwrap());
    add("text_file", "torch.save", &|p| std::fs::write(p, b"this is not a checkpoint").unwrap());
    add("no_tensors", "no tensors", &|p| {
        let mut pickle = Pickle::start();
        write_zip_with(p, &pickle.op(b'}').str("epoch").int(3).op(b's').stop(), &[])
    });
    add("pickle_protocol_4", "protocol 4", &|p| {
        let mut pickle = Pickle::start();
        write_zip_with(p, &pickle.op(b'}').op(0x8c).op(1).op(b'a').int(1).op(b's').stop(), &[])
    });

    // Pickles that would run code, or build arbitrary objects, if loaded in Python.
    add("evil_real_torch_save", "posix.system", &|p| {
        std::fs::copy(local_fixture("evil_os_system.pt"), p).map(|_| ()).unwrap()
    });
    let evil = |module: &str, name: &str, arg: &str| {
        let mut pickle = Pickle::start();
        pickle
            .op(b'}')
            .str("proto_weight")
            .global(module, name)
            .op(b'(')
            .str(arg)
            .op(b't')
            .op(b'R')
            .op(b's');
        pickle.stop()
    };
    add("evil_eval_zip", "builtins.eval", &|p| {
        write_zip_with(p, &evil("builtins", "eval", "print('ran')"), &[])
    });
    add("evil_system_legacy", "os.system", &|p| {
        write_legacy_with(p, &evil("os", "system", "echo ran"), &[])
    });
    add("evil_exec_nested", "builtins.exec", &|p| {
        let entries = honest();
        let mut pickle = Pickle::start();
        pickle.op(b'}').op(b'(').str("state").state_dict(&entries, false);
        pickle
            .str("hook")
            .global("builtins", "exec")
            .op(b'(')
            .str("import os")
            .op(b't')
            .op(b'R')
            .op(b'u');
        write_zip_with(p, &pickle.stop(), &entries)
    });
    add("evil_newobj", "subprocess.Popen", &|p| {
        let mut pickle = Pickle::start();
        pickle
            .op(b'}')
            .str("x")
            .global("subprocess", "Popen")
            .op(b'(')
            .str("ls")
            .op(b't')
            .op(0x81)
            .op(b's');
        write_zip_with(p, &pickle.stop(), &[])
    });
    add("evil_reduce_of_torch_internal", "torch.load", &|p| {
        let mut pickle = Pickle::start();
        pickle
            .op(b'}')
            .str("x")
            .global("torch", "load")
            .op(b'(')
            .str("/etc/passwd")
            .op(b't')
            .op(b'R')
            .op(b's');
        write_zip_with(p, &pickle.stop(), &[])
    });

    // Readable files that do not fit the model: other errors, but no panic either (burn-store
    // panics, and prints it, on a tensor with no elements).
    add("fits_not_empty_tensor", "proto_weight", &|p| {
        write_zip(p, &with(&|e| e.shape = vec![0, 2, 1]), None)
    });
    add("fits_not_empty_storage", "proto_weight", &|p| {
        write_legacy(
            p,
            &with(&|e| (e.shape, e.stride, e.numel, e.data) = (vec![0], vec![1], 0, vec![])),
            None,
        )
    });
    cases
}

/// Copies a zip, applying `change` to the data of the member whose name ends with `suffix`.
fn rewrite_member(source: &Path, target: &Path, suffix: &str, change: impl Fn(&mut Vec<u8>)) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(source).unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(target).unwrap());
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        if member.name().ends_with(suffix) {
            let name = member.name().to_string();
            let mut data = Vec::new();
            member.read_to_end(&mut data).unwrap();
            change(&mut data);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            writer.start_file(name, options).unwrap();
            writer.write_all(&data).unwrap();
        } else {
            writer.raw_copy_file(member).unwrap();
        }
    }
    writer.finish().unwrap();
}

/// Copies a zip with one byte of a member's stored data flipped (its CRC no longer matches).
fn corrupt_member_byte(source: &Path, target: &Path, suffix: &str) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(source).unwrap()).unwrap();
    let index = (0..archive.len())
        .find(|&i| archive.by_index(i).unwrap().name().ends_with(suffix))
        .unwrap();
    let start = archive.by_index(index).unwrap().data_start().unwrap() as usize;
    let mut bytes = std::fs::read(source).unwrap();
    bytes[start + 5] ^= 0x40;
    std::fs::write(target, bytes).unwrap();
}

/// Copies a zip with the member's sizes in the central directory raised to 2 GiB (the
/// uncompressed size only, or the compressed one too).
fn inflate_directory_sizes(source: &Path, target: &Path, suffix: &str, both: bool) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(source).unwrap()).unwrap();
    let index = (0..archive.len())
        .find(|&i| archive.by_index(i).unwrap().name().ends_with(suffix))
        .unwrap();
    let header = archive.by_index(index).unwrap().central_header_start() as usize;
    let mut bytes = std::fs::read(source).unwrap();
    assert_eq!(&bytes[header..header + 4], b"PK\x01\x02");
    let huge = (1u32 << 31).to_le_bytes();
    bytes[header + 24..header + 28].copy_from_slice(&huge); // uncompressed size
    if both {
        bytes[header + 20..header + 24].copy_from_slice(&huge); // compressed size
    }
    std::fs::write(target, bytes).unwrap();
}

/// Runs in the child process only.
#[test]
fn damaged_files_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fsct-damaged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for case in cases(&dir) {
        match import(&case.path) {
            Err(err) if !case.read => {
                println!("{}: {err}", case.name);
                let text = err.to_string();
                if !text.contains(&case.path.display().to_string()) || !text.contains(case.expect) {
                    failures.push(format!(
                        "{}: the error does not name the file and `{}`: {text}",
                        case.name, case.expect
                    ));
                }
            }
            Err(ImportError::Read { ref path, ref message }) => {
                let text =
                    ImportError::Read { path: path.clone(), message: message.clone() }.to_string();
                println!("{}: {text}", case.name);
                if path != &case.path || !text.contains(&case.path.display().to_string()) {
                    failures
                        .push(format!("{}: the error does not name the file: {text}", case.name));
                }
                if !message.contains(case.expect) {
                    failures.push(format!(
                        "{}: the error does not mention `{}`: {text}",
                        case.name, case.expect
                    ));
                }
            }
            Err(other) => {
                failures.push(format!("{}: expected a read error, got: {other}", case.name))
            }
            Ok(()) => failures.push(format!("{}: imported without error", case.name)),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn damaged_files_give_one_clear_error_and_print_no_panic() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["damaged_files_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child did not run the cases:\n{stdout}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "a panic reached stderr:\n{stderr}\n(stdout:\n{stdout})"
    );
    // Every case printed its error.
    assert!(stdout.lines().filter(|l| l.contains("cannot read `")).count() >= 60, "{stdout}");
}

/// burn-store refuses a pickle that calls `os.system` by itself too (fsct refuses it earlier,
/// with its own message).
#[test]
fn burn_store_refuses_code_in_pickles() {
    let evil = local_fixture("evil_os_system.pt");
    let err = PytorchReader::new(&evil).err().expect("burn-store refuses the payload");
    assert!(err.to_string().contains("posix.system"), "{err}");
    let err = import(&evil).unwrap_err().to_string();
    assert!(
        err.contains("evil_os_system.pt")
            && err.contains("refused")
            && err.contains("posix.system"),
        "{err}"
    );
}
