"""Reference methods run through ddad's data and metrics code (for side-by-side benchmarks)."""
