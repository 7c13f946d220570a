//! Locates the FileDescriptorSet that envoy-types ships (`src/generated/types.bin`) and copies it
//! into OUT_DIR, so that `legate-proto` can map Envoy messages to and from Envoy's JSON form.
//! The file is found through `cargo metadata`, never copied into this repository.
//!
//! It also writes the *core* set (`envoy_core_descriptors.bin`): only the files that define the
//! message types listed in `src/core_types.txt`, with every file they import. The files are
//! copied byte for byte (options and extensions included); only the selection is made here,
//! with a minimal reader of the protobuf wire format (no build dependency beyond serde_json).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--filter-platform"])
        .arg(std::env::var("TARGET").expect("TARGET"))
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("envoy-types is a dependency");
    let descriptor = PathBuf::from(manifest)
        .parent()
        .expect("manifest dir")
        .join("src/generated/types.bin");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let full =
        std::fs::read(&descriptor).unwrap_or_else(|e| panic!("read {}: {e}", descriptor.display()));
    std::fs::write(out_dir.join("envoy_descriptors.bin"), &full)
        .unwrap_or_else(|e| panic!("write envoy_descriptors.bin: {e}"));

    let types_path = manifest_dir.join("src/core_types.txt");
    let types = std::fs::read_to_string(&types_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", types_path.display()));
    let roots: Vec<&str> = types
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    std::fs::write(
        out_dir.join("envoy_core_descriptors.bin"),
        core_set(&full, &roots),
    )
    .unwrap_or_else(|e| panic!("write envoy_core_descriptors.bin: {e}"));

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", types_path.display());
    println!("cargo:rerun-if-changed={}", descriptor.display());
}

/// One file of the set: its encoded `FileDescriptorProto` and what the selection needs.
struct File<'a> {
    bytes: &'a [u8],
    name: String,
    dependencies: Vec<String>,
}

/// The `FileDescriptorSet` of the files defining `roots`, with their imports, in the order of
/// `full` (which lists every file after its imports).
fn core_set(full: &[u8], roots: &[&str]) -> Vec<u8> {
    let mut files = Vec::new();
    let mut defined_in: HashMap<String, usize> = HashMap::new();
    for (number, value) in fields(full) {
        let Value::Bytes(bytes) = value else { continue };
        if number != 1 {
            continue;
        }
        let index = files.len();
        let mut file = File {
            bytes,
            name: String::new(),
            dependencies: Vec::new(),
        };
        let mut package = String::new();
        let mut messages = Vec::new();
        for (number, value) in fields(bytes) {
            match (number, value) {
                (1, Value::Bytes(b)) => file.name = utf8(b),
                (2, Value::Bytes(b)) => package = utf8(b),
                (3, Value::Bytes(b)) => file.dependencies.push(utf8(b)),
                (4, Value::Bytes(b)) => messages.push(b),
                _ => {}
            }
        }
        for message in messages {
            message_names(&package, message, &mut |n| {
                defined_in.insert(n, index);
            });
        }
        files.push(file);
    }
    let by_name: HashMap<&str, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    let mut keep = BTreeSet::new();
    let mut stack: Vec<usize> = roots
        .iter()
        .map(|r| {
            *defined_in
                .get(*r)
                .unwrap_or_else(|| panic!("src/core_types.txt: `{r}` is not in envoy-types"))
        })
        .collect();
    while let Some(i) = stack.pop() {
        if keep.insert(i) {
            for d in &files[i].dependencies {
                let dep = by_name
                    .get(d.as_str())
                    .unwrap_or_else(|| panic!("{} imports {d}, not in the set", files[i].name));
                stack.push(*dep);
            }
        }
    }
    let mut out = Vec::new();
    for i in keep {
        out.push(0x0a); // field 1, length-delimited
        put_varint(&mut out, files[i].bytes.len() as u64);
        out.extend_from_slice(files[i].bytes);
    }
    out
}

/// Calls `found` with the full name of `message` (a `DescriptorProto`) and of its nested types.
fn message_names(prefix: &str, message: &[u8], found: &mut dyn FnMut(String)) {
    let mut name = String::new();
    let mut nested = Vec::new();
    for (number, value) in fields(message) {
        match (number, value) {
            (1, Value::Bytes(b)) => name = utf8(b),
            (3, Value::Bytes(b)) => nested.push(b),
            _ => {}
        }
    }
    let full = if prefix.is_empty() {
        name
    } else {
        format!("{prefix}.{name}")
    };
    for n in nested {
        message_names(&full, n, found);
    }
    found(full);
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("descriptor names are UTF-8")
}

/// A field value, as far as the selection needs it.
enum Value<'a> {
    Bytes(&'a [u8]),
    Other,
}

/// The fields of an encoded message, in order: `(field number, value)`. The descriptor set is
/// embedded at build time from envoy-types; a malformed one is a build defect (panic).
fn fields(mut buf: &[u8]) -> impl Iterator<Item = (u64, Value<'_>)> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let key = varint(&mut buf);
        let value = match key & 7 {
            0 => {
                varint(&mut buf);
                Value::Other
            }
            1 => {
                buf = &buf[8..];
                Value::Other
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)).expect("length fits usize");
                let (value, rest) = buf.split_at(len);
                buf = rest;
                Value::Bytes(value)
            }
            5 => {
                buf = &buf[4..];
                Value::Other
            }
            wire => panic!("unexpected wire type {wire} in the descriptor set"),
        };
        Some((key >> 3, value))
    })
}

fn varint(buf: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().expect("truncated varint");
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes");
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
