# The python+node variant's base: BASE_IMAGE plus Python 3 (pip, venv) and Node.js (npm) from the
# base's own package manager. images/build.sh --variant python-node layers the server on top.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
USER root
RUN set -eu; \
    if command -v apt-get >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-pip python3-venv nodejs npm && rm -rf /var/lib/apt/lists/*; \
    elif command -v apk >/dev/null; then apk add --no-cache python3 py3-pip nodejs npm; \
    elif command -v dnf >/dev/null; then dnf install -y python3 python3-pip nodejs npm && dnf clean all; \
    else echo "no known package manager" >&2; exit 1; fi; \
    ln -sf "$(command -v python3)" /usr/local/bin/python
