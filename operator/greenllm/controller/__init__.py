"""The operator: kopf handlers, Kubernetes and Prometheus access (the shell around the core)."""
