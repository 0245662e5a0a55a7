# Schema Reconciler: the daemon (`reconciler run`) and the CLI in one image.
#
#   docker build -t schema-reconciler .
#   docker run --rm -v "$PWD/config:/etc/reconciler/config" schema-reconciler --config /etc/reconciler/config/reconciler.yaml plans
#
# Stage 1 installs the project into a virtualenv (the same `pip install` of the project as scripts/bootstrap,
# not editable and without the dev extras); stage 2 copies that virtualenv into a slim Python with the PostgreSQL
# client tools (pg_dump, for vetting clones) of every supported major version, /usr/lib/postgresql/MAJOR/bin, and
# runs as an unprivileged user. In a cluster the scratch server is a separate PostgreSQL (`scratch:` in the config):
# the image starts no database server of its own.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN python -m venv /opt/reconciler \
    && /opt/reconciler/bin/pip install --no-cache-dir .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# The PostgreSQL majors whose pg_dump the image carries (PostgreSQL's own Debian repository has them all).
ARG PG_MAJORS="14 15 16 17"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
    && install -d -m 0755 /etc/apt/keyrings \
    && curl -fsSL https://www.postgresql.org/media/keys/ACCC4CF8.asc \
       | gpg --dearmor -o /etc/apt/keyrings/postgresql.gpg \
    && echo "deb [signed-by=/etc/apt/keyrings/postgresql.gpg] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
       > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && read -ra majors <<< "${PG_MAJORS}" \
    && apt-get install -y --no-install-recommends "${majors[@]/#/postgresql-client-}" \
    && apt-get purge -y --auto-remove curl gnupg \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/reconciler /opt/reconciler
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/reconciler --create-home reconciler
WORKDIR /var/lib/reconciler
ENV PATH=/opt/reconciler/bin:$PATH PYTHONUNBUFFERED=1 RECONCILER_CONFIG=/etc/reconciler/config/reconciler.yaml
USER 10001:10001
EXPOSE 9630
# /healthz answers 200 while the process is alive (no curl in the image: Python's own HTTP client).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9630/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["reconciler"]
CMD ["run", "--listen", "0.0.0.0"]
