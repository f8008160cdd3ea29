"""The FP-NAS search: configuration, the loop, checkpoints and read-only probes."""
