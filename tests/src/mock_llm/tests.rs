//! Unit tests of the mock LLM.
