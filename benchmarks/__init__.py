"""hwquant benchmarks on real trained models with real inputs (see docs/benchmarks.md)."""
