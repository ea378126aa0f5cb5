"""The loop layer between the pure core and the shells: what to ask Prometheus and what its answers
mean, for the operator (controller/) and the simulator (sim/) alike. Pure: no I/O."""
