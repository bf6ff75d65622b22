//! PLACEHOLDER — the python provider is being implemented.
