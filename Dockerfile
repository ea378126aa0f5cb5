# syntax=docker/dockerfile:1
# greenllm: one image, two entry points.
#   operator:   greenllm run   [--prometheus-url URL] [--namespace NS ...] [--metrics-port 9400] [--probe-port 8080] ...
#   node agent: greenllm agent --node-name "$NODE_NAME" [--backend nvml|simulated] [--metrics-port 9401] ...
# Build: docker build -t ghcr.io/greenllm/greenllm:0.1.0 .   (the chart's image.repository / appVersion)

ARG PYTHON_IMAGE=python:3.11-slim

# Stage 1: build the wheel and install it with its runtime dependencies into a self-contained virtual
# environment. The runtime set is pyproject's dependencies minus the [sim] extra (matplotlib, tqdm: the
# simulator's plots and progress bar), which the default `pip install .` includes and the image does not.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; sim = set(p["optional-dependencies"]["sim"]); print("\n".join(d for d in p["dependencies"] if d not in sim))' > /dist/runtime-requirements.txt \
 && python -m venv /opt/greenllm \
 && /opt/greenllm/bin/python -m pip install -r /dist/runtime-requirements.txt \
 && /opt/greenllm/bin/python -m pip install --no-deps /dist/greenllm-*.whl \
 && /opt/greenllm/bin/python -m pip uninstall --yes pip setuptools wheel \
 && /opt/greenllm/bin/greenllm --help >/dev/null

# Stage 2: the runtime. Only the virtual environment is copied; no pip, setuptools or compiler is left.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="greenllm" \
      org.opencontainers.image.description="Serve LLMs on Kubernetes with the least energy that meets their SLOs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/greenllm/greenllm"
RUN PIP_ROOT_USER_ACTION=ignore python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 greenllm \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin greenllm
COPY --from=build /opt/greenllm /opt/greenllm
ENV PATH=/opt/greenllm/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# The operator runs as this user; the agent's DaemonSet runs as root with CAP_SYS_ADMIN because NVML
# refuses power-limit changes to anyone else (see charts/greenllm/templates/agent-daemonset.yaml).
USER 10001:10001
# operator metrics, operator liveness (/healthz), agent metrics
EXPOSE 9400 8080 9401
ENTRYPOINT ["greenllm"]
CMD ["run"]
