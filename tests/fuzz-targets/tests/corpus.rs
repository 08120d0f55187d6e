//! The CI run of the fuzz targets on the stable toolchain: every seed in `fuzz/corpus/<target>/`
//! is replayed, then a bounded run of the crate's simple mutator explores around them.
//!
//! The run is deterministic for a seed, which is printed: `BERTH_FUZZ_SEED=<n>` replays it,
//! `BERTH_FUZZ_ITERS=<n>` lengthens it. A failing input is saved under the cargo target directory
//! (the path is printed) for `cargo fuzz run <target> <file>` or for the corpus.
//!
//! `cargo test -p berth-fuzz-targets -- --ignored generate_corpus` rewrites the seed corpora
//! from `berth_fuzz_targets::seeds`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use berth_fuzz_targets::mutate::{mutate, Rng, Shape};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

/// Runs `f` on `input`; on a panic saves the input and fails naming it.
fn guarded(target: &str, what: &str, input: &[u8], f: fn(&[u8])) {
    let start = Instant::now();
    let ok = catch_unwind(AssertUnwindSafe(|| f(input))).is_ok();
    let took = start.elapsed();
    if took.as_millis() > 500 {
        eprintln!("{target}: {what} took {took:.1?}");
    }
    if ok {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{}", what.replace(['/', ' '], "_")));
    let saved = match std::fs::write(&path, input) {
        Ok(()) => format!("saved to {}", path.display()),
        Err(e) => format!("could not be saved to {}: {e}", path.display()),
    };
    panic!(
        "{target}: {what} failed (see the panic above); the input ({} bytes) {saved}",
        input.len()
    );
}

fn run(target: &str, f: fn(&[u8]), shape: Shape, default_iters: u64) {
    let dir = corpus_dir(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    let start = Instant::now();
    // The pool to mutate: the seeds, but not the slow ones (the deep-nesting layers take
    // seconds in a debug build; their mutants would eat the whole budget).
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for (name, bytes) in &seeds {
        let t = Instant::now();
        guarded(target, &format!("seed {name}"), bytes, f);
        if t.elapsed().as_millis() < 100 {
            pool.push(bytes.clone());
        }
    }
    let replayed = start.elapsed();

    // Per-target default seeds differ, so the four runs do not mirror each other.
    let salt = target
        .bytes()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    let seed = env_u64("BERTH_FUZZ_SEED").unwrap_or(0xB3E7_F022 ^ salt);
    let iters = env_u64("BERTH_FUZZ_ITERS").unwrap_or(default_iters);
    // Some mutants join the pool, so mutations stack over iterations.
    let n_seeds = pool.len();
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    for i in 0..iters {
        let parent = rng.below(pool.len());
        let child = mutate(&mut rng, &pool[parent], &pool, shape);
        guarded(
            target,
            &format!("mutant {i} of BERTH_FUZZ_SEED={seed}"),
            &child,
            f,
        );
        if rng.below(8) == 0 {
            if pool.len() < n_seeds + 256 {
                pool.push(child);
            } else {
                let slot = n_seeds + rng.below(256);
                pool[slot] = child;
            }
        }
    }
    eprintln!(
        "{target}: {} seeds replayed in {replayed:.1?}; {iters} mutants of {n_seeds} in {:.1?} \
         (BERTH_FUZZ_SEED={seed} BERTH_FUZZ_ITERS={iters} replays)",
        seeds.len(),
        start.elapsed()
    );
}

#[test]
fn layer_apply() {
    run(
        "layer_apply",
        berth_fuzz_targets::layer_apply,
        Shape::Layer,
        12_000,
    );
}

#[test]
fn reference() {
    run(
        "reference",
        berth_fuzz_targets::reference,
        Shape::Text,
        100_000,
    );
}

#[test]
fn filters() {
    run("filters", berth_fuzz_targets::filters, Shape::Text, 30_000);
}

#[test]
fn image_json() {
    run(
        "image_json",
        berth_fuzz_targets::image_json,
        Shape::Json,
        50_000,
    );
}

/// Writes `fuzz/corpus/<target>/<seed>` from the generators (files of other names are kept).
#[test]
#[ignore = "rewrites fuzz/corpus; run by hand when the seeds change"]
fn generate_corpus() {
    let mut total = 0;
    for (target, seeds) in berth_fuzz_targets::seeds::all() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            total += bytes.len();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    eprintln!("{total} bytes of seeds written");
    assert!(
        total < 1 << 20,
        "the seed corpora should stay well under 1 MiB"
    );
}
