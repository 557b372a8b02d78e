//! The registry's bookkeeping, on registries of the tests' own (the process's one is shared
//! with every other test in the binary).
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

fn fresh() -> &'static Shared {
    Box::leak(Box::new(Mutex::new(Registry::new())))
}

extern "C" fn version() -> u32 {
    7
}
extern "C" fn metadata() -> *const std::ffi::c_char {
    std::ptr::null()
}
extern "C" fn execute(_: *const std::ffi::c_char) -> *const std::ffi::c_char {
    std::ptr::null()
}

fn symbols() -> PluginSymbols {
    PluginSymbols {
        version,
        metadata,
        execute,
        free_string: None,
        host_init: None,
    }
}

fn load(registry: &'static Shared, digest: u8, limit: usize) -> Reservation {
    match claim_in(registry, &[digest; 32], 100, limit).unwrap() {
        Claim::Load(r) => r,
        Claim::Reuse(_) => panic!("bytes {digest} are new"),
    }
}

#[test]
fn the_same_bytes_are_loaded_once_and_reused_after() {
    let registry = fresh();
    load(registry, 1, 10).register(symbols());
    let Claim::Reuse(reused) = claim_in(registry, &[1; 32], 100, 10).unwrap() else {
        panic!("resident bytes are reused");
    };
    assert_eq!(reused.call_version(), 7);
    assert_eq!(
        resident_in(registry),
        Resident {
            libraries: 1,
            bytes: 100,
            reuses: 1
        }
    );
}

#[test]
fn new_bytes_past_the_limit_are_refused_and_resident_ones_still_reused() {
    let registry = fresh();
    load(registry, 1, 2).register(symbols());
    // A load under way holds its place: the limit counts it.
    let pending = load(registry, 2, 2);
    let e = claim_in(registry, &[3; 32], 100, 2).unwrap_err();
    assert!(matches!(
        e,
        LoadError::ThreadLibraryLimit {
            resident: 2,
            limit: 2
        }
    ));
    assert!(matches!(
        claim_in(registry, &[1; 32], 100, 2).unwrap(),
        Claim::Reuse(_)
    ));
    // A load that failed before registering gives its place back, and left nothing to
    // reuse.
    drop(pending);
    let again = load(registry, 2, 2);
    again.register(symbols());
    assert_eq!(resident_in(registry).libraries, 2);
    assert!(matches!(
        claim_in(registry, &[3; 32], 100, 2),
        Err(LoadError::ThreadLibraryLimit {
            resident: 2,
            limit: 2
        })
    ));
}

#[test]
fn two_racing_loads_of_the_same_bytes_are_both_counted() {
    let registry = fresh();
    let first = load(registry, 4, 10);
    let second = load(registry, 4, 10);
    first.register(symbols());
    second.register(symbols());
    let counted = resident_in(registry);
    assert_eq!((counted.libraries, counted.bytes), (2, 200));
}
