//! The Envoy descriptor sets embedded at build time, and decoding them into descriptor pools.
//!
//! A decoded `DescriptorPool` is large: the whole set that envoy-types ships (514 files) takes
//! about 70 ms and 47 MiB of heap; the core set (the files behind `src/core_types.txt`, about
//! 90) about 25 ms and 16 MiB. A long-lived tool can afford to keep one ([`crate::json::pool`]);
//! the proxy builds the core pool only while it converts something ([`crate::json::Codec`])
//! and gives the memory back afterwards ([`release_free_memory`]).

use prost_reflect::DescriptorPool;
use std::cell::Cell;

static FULL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));
static CORE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_core_descriptors.bin"));
static CORE_TYPES: &str = include_str!("core_types.txt");

thread_local! {
    static FULL_USES: Cell<usize> = const { Cell::new(0) };
}

/// The encoded `FileDescriptorSet` of every Envoy, xDS and well-known type.
pub fn full_set_bytes() -> &'static [u8] {
    FULL
}

/// The encoded `FileDescriptorSet` of the files defining [`core_types`], with their imports.
pub fn core_set_bytes() -> &'static [u8] {
    CORE
}

/// The message types the core set was cut for (`src/core_types.txt`).
pub fn core_types() -> impl Iterator<Item = &'static str> {
    CORE_TYPES
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
}

/// Decodes the whole set (counted by [`full_set_uses_on_this_thread`]).
pub fn decode_full() -> DescriptorPool {
    note_full_set_use();
    // The bytes are embedded at build time from envoy-types; failing here is a build defect.
    DescriptorPool::decode(FULL).expect("envoy-types descriptor set decodes")
}

/// Decodes the core set.
pub fn decode_core() -> DescriptorPool {
    // Cut from the same set at build time, imports included: failing is a build defect.
    DescriptorPool::decode(CORE).expect("core descriptor set decodes")
}

/// How many times this thread decoded the whole set or used the process-wide pool
/// ([`crate::json::pool`] and the free functions of [`crate::json`]): lets a test check that a
/// code path makes do with the core set, whether or not another thread decoded the pool first.
pub fn full_set_uses_on_this_thread() -> usize {
    FULL_USES.with(Cell::get)
}

pub(crate) fn note_full_set_use() {
    FULL_USES.with(|n| n.set(n.get() + 1));
}

/// Returns freed heap memory to the operating system. glibc's allocator keeps freed memory in
/// its arenas (one per thread that allocated); after a pool of tens of MiB is dropped, this is
/// what makes the process's RSS go back down. Elsewhere it does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and may be called at any time from
        // any thread; it only releases free memory.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_set_defines_its_types_and_is_a_fraction_of_the_whole() {
        let core = decode_core();
        let types: Vec<&str> = core_types().collect();
        assert!(types.contains(&"envoy.config.bootstrap.v3.Bootstrap"));
        for t in &types {
            assert!(
                core.get_message_by_name(t).is_some(),
                "{t} not in the core set"
            );
        }
        let full = decode_full();
        assert!(
            core.files().len() * 4 < full.files().len(),
            "core {} files of {}",
            core.files().len(),
            full.files().len()
        );
        // Byte for byte the same files as the whole set (options and extensions included).
        for file in core.files() {
            let whole = full
                .get_file_by_name(file.name())
                .expect("in the whole set");
            assert_eq!(
                file.encode_to_vec(),
                whole.encode_to_vec(),
                "{} differs",
                file.name()
            );
        }
    }

    #[test]
    fn full_set_uses_are_counted_per_thread() {
        let before = full_set_uses_on_this_thread();
        drop(decode_core());
        assert_eq!(full_set_uses_on_this_thread(), before);
        drop(decode_full());
        assert_eq!(full_set_uses_on_this_thread(), before + 1);
        // The process-wide pool counts on every use, decoded already or not.
        let _ = crate::json::pool();
        let _ = crate::json::pool();
        assert_eq!(full_set_uses_on_this_thread(), before + 3);
        let other = std::thread::spawn(full_set_uses_on_this_thread)
            .join()
            .expect("thread");
        assert_eq!(other, 0);
    }
}
