"""greenllm: serve LLMs on Kubernetes with the least energy that meets their SLOs."""

__version__ = "0.1.0"
