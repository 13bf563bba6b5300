# The agent-server image: a small runtime (bash, git, coreutils, tini) plus the Rust server.
#
# Targets (`docker build --target …`):
#   runtime   (default) compiles the server from this repository in RUST_IMAGE, then layers it on BASE_IMAGE.
#   prebuilt  layers a binary built on the host onto BASE_IMAGE; needs no registry when BASE_IMAGE is
#             local. The context must hold the binary at BINARY (images/build.sh --prebuilt makes a tiny
#             context). The binary links glibc dynamically: the base needs a glibc at least as new as the
#             build host's (Debian bookworm = 2.36).
#   base      BASE_IMAGE plus bash/git/tini and the `openhands` user, without the server.
#
# ARG BASE_IMAGE: any Debian/Ubuntu (apt), Alpine (apk, with a musl binary) or Fedora/RHEL (dnf/microdnf)
# image; missing tools are installed with whichever package manager exists.
#
# Contract with the launchers (same as the Python image): ENTRYPOINT is the server under tini (PID 1
# reaps zombies), arguments are appended (`--host 0.0.0.0 --port 8000`), user `openhands` uid/gid
# 10001 by default; any other uid works too (`docker run --user "$(id -u):$(id -g)"`, which makes a
# mounted host directory writable): /workspace is writable by all with the sticky bit, like /tmp.
# WORKDIR / (state under /workspace), port 8000, also reachable as
# /usr/local/bin/openhands-agent-server (the Runtime API launcher's command).
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${BASE_IMAGE} AS base
USER root
RUN set -eu; \
    missing=""; \
    for tool in bash git tini; do \
      command -v "$tool" >/dev/null 2>&1 || [ -x "/sbin/$tool" ] || missing="$missing $tool"; \
    done; \
    if [ -n "$missing" ]; then \
      if command -v apt-get >/dev/null; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
          bash git tini ca-certificates && rm -rf /var/lib/apt/lists/*; \
      elif command -v apk >/dev/null; then apk add --no-cache bash git tini ca-certificates coreutils; \
      elif command -v microdnf >/dev/null; then microdnf install -y bash git tini && microdnf clean all; \
      elif command -v dnf >/dev/null; then dnf install -y bash git tini && dnf clean all; \
      else echo "cannot install:$missing (no known package manager)" >&2; exit 1; fi; \
    fi; \
    if ! getent passwd 10001 >/dev/null; then \
      if command -v useradd >/dev/null; then \
        (getent group 10001 >/dev/null || groupadd -g 10001 openhands) && \
        useradd -m -u 10001 -g 10001 -s /bin/bash openhands; \
      else addgroup -g 10001 openhands && adduser -D -u 10001 -G openhands -s /bin/bash openhands; fi; \
    fi; \
    mkdir -p /workspace/project; \
    chown -R 10001:10001 /workspace; \
    chmod 1777 /workspace; \
    ln -sf "$(command -v tini || echo /sbin/tini)" /usr/local/bin/agent-server-init
ENV LANG=C.UTF-8 LC_ALL=C.UTF-8
USER 10001:10001
WORKDIR /
EXPOSE 8000
# No curl in the image: bash's /dev/tcp speaks just enough HTTP. AGENT_SERVER_PORT for other ports.
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${AGENT_SERVER_PORT:-8000} && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/agent-server-init", "--", "/usr/local/bin/agent-server"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

FROM base AS prebuilt
ARG BINARY=agent-server
COPY ${BINARY} /usr/local/bin/agent-server
USER root
RUN ln -s agent-server /usr/local/bin/openhands-agent-server && /usr/local/bin/agent-server --version
USER 10001:10001

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin agent-server && strip target/release/agent-server || true

FROM base AS runtime
COPY --from=builder /src/target/release/agent-server /usr/local/bin/agent-server
USER root
RUN ln -s agent-server /usr/local/bin/openhands-agent-server && /usr/local/bin/agent-server --version
USER 10001:10001
