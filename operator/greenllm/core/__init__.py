"""The pure core: API-level decisions with no I/O (no kopf, kubernetes, Prometheus, NVML, clock, files)."""
