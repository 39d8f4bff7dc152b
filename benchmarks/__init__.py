"""LensQ's benchmark scripts: each measures one thing side by side and returns its section of RESULTS.md."""
