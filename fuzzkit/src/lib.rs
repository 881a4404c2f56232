//! Shared by the fuzz targets' two drivers.
//!
//! Each target (`fuzz_*` test in its crate) states its properties as `check_*` functions.
//! proptest feeds them generated cases (`cargo test`, `scripts/fuzz --property`); the
//! coverage-guided fuzzer (libFuzzer, `fuzz/`, `scripts/fuzz --coverage`) feeds them cases
//! read from the bytes it mutates, through each target's `fuzz_bytes`. This crate is what
//! those `fuzz_bytes` share: a reader over the fuzzer's bytes that never runs dry (it gives
//! zeros), a way to fail, and the replay of inputs the fuzzer saved.

use std::path::Path;

use proptest::test_runner::TestCaseError;

/// Reads a case out of the fuzzer's bytes, front to back.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// One of `items`, by the next byte.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let n = self.u8();
        (!items.is_empty()).then(|| items[usize::from(n) % items.len()])
    }

    /// Up to the next `stop` byte (dropped) or the end.
    pub fn until(&mut self, stop: u8) -> &'a [u8] {
        let end = self
            .data
            .iter()
            .position(|&b| b == stop)
            .unwrap_or(self.data.len());
        let (taken, rest) = self.data.split_at(end);
        self.data = rest.get(1..).unwrap_or_default();
        taken
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// A property's verdict on the fuzzer's case: a failure panics, which the fuzzer records;
/// a case the property turns away as not applicable passes.
pub fn holds(verdict: Result<(), TestCaseError>) {
    if let Err(TestCaseError::Fail(why)) = verdict {
        panic!("property failed: {why}");
    }
}

/// Runs `fuzz` on the committed inputs of `target` under `fuzz_dir` (`regressions/`: what
/// the coverage-guided fuzzer found; `seeds/`: its starting corpus) and on `extra` fixed
/// pseudo-random inputs of up to 256 bytes, so the byte-driven path runs in every
/// `cargo test`. Returns how many inputs ran.
pub fn replay(fuzz_dir: &Path, target: &str, extra: usize, fuzz: impl Fn(&[u8])) -> usize {
    let mut ran = 0;
    for kind in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            fuzz(&std::fs::read(file).unwrap_or_default());
            ran += 1;
        }
    }
    // xorshift64: the same inputs on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.to_le_bytes()[0]
    };
    for i in 0..extra {
        let input: Vec<u8> = (0..i % 257).map(|_| next()).collect();
        fuzz(&input);
        ran += 1;
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn the_reader_takes_bytes_in_order_and_gives_zeros_when_dry() {
        let mut b = Bytes::new(b"\x01\x02\x03ab\ncd");
        assert_eq!(b.u8(), 1);
        assert_eq!(b.u16(), 0x0302);
        assert_eq!(b.until(b'\n'), b"ab");
        assert_eq!(b.pick(&['x', 'y']), Some('y')); // 'c' is 99, odd
        assert_eq!(b.rest(), b"d");
        assert!(b.is_empty());
        assert_eq!((b.u8(), b.u16()), (0, 0));
        assert_eq!(b.until(b'\n'), b"");
        assert_eq!(b.pick::<u8>(&[]), None);
    }

    #[test]
    #[should_panic(expected = "property failed: odd")]
    fn a_failed_property_panics_with_its_reason() {
        holds(Err(TestCaseError::fail("odd")));
    }

    #[test]
    fn a_rejected_case_passes() {
        holds(Err(TestCaseError::reject("not this one")));
        holds(Ok(()));
    }

    #[test]
    fn replay_runs_saved_inputs_and_the_fixed_ones() {
        let dir = std::env::temp_dir().join(format!("fuzzkit-{}", std::process::id()));
        for kind in ["regressions", "seeds"] {
            std::fs::create_dir_all(dir.join(kind).join("t")).expect("dir");
        }
        std::fs::write(dir.join("regressions/t/crash-1"), b"\x01saved").expect("file");
        std::fs::write(dir.join("seeds/t/frame"), b"seed").expect("file");
        std::fs::write(dir.join("seeds/other"), b"not this target").expect("file");
        let inputs = RefCell::new(Vec::new());
        let ran = replay(&dir, "t", 5, |b| inputs.borrow_mut().push(b.to_vec()));
        std::fs::remove_dir_all(&dir).expect("clean up");
        let inputs = inputs.into_inner();
        assert_eq!(ran, 7);
        assert_eq!(inputs[0], b"\x01saved");
        assert_eq!(inputs[1], b"seed");
        let lengths: Vec<usize> = inputs[2..].iter().map(Vec::len).collect();
        assert_eq!(lengths, [0, 1, 2, 3, 4]);
        // Deterministic: a second run gives the same inputs.
        let again = RefCell::new(Vec::new());
        replay(Path::new("/nonexistent"), "t", 5, |b| {
            again.borrow_mut().push(b.to_vec())
        });
        assert_eq!(again.into_inner(), inputs[2..]);
    }
}
