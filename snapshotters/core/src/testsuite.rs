//! The conformance suite (filled in by the suite's author).
