# syntax=docker/dockerfile:1
#
# pinroute container image: a static-ish Rust binary on distroless, non-root.
#
#   docker build -t REGISTRY/pinroute:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 -v $PWD/pinroute.toml:/etc/pinroute/pinroute.toml:ro REGISTRY/pinroute:0.1.0
#
# The build is `cargo build --profile dist --locked -p pinroute` (release plus
# fat LTO, see Cargo.toml): exactly the versions of Cargo.lock, nothing
# resolved anew. Two ways to get the crates:
#
# 1. Online (default): crates are downloaded from crates.io into a BuildKit
#    cache mount, so later builds reuse them (needs BuildKit, the default
#    builder of Docker 23+ and of `docker buildx`).
#
# 2. Offline, from vendored sources: run once, at the repository root,
#
#        cargo vendor --locked deploy/vendor
#
#    (deploy/vendor is git-ignored by deploy/.gitignore). When deploy/vendor
#    exists, this Dockerfile appends to .cargo/config.toml what cargo vendor
#    prints:
#
#        [source.crates-io]
#        replace-with = "vendored-sources"
#
#        [source.vendored-sources]
#        directory = "deploy/vendor"
#
#    and builds with --offline: no network access is needed in the build
#    (apt-get for cmake aside: use a builder image that has cmake, or a
#    Debian mirror, in an air-gapped build).
#
# cmake is needed by libz-ng-sys (pingora's compression). The binary links
# only glibc, libm and libgcc_s, all in distroless/cc.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
# The builder is thrown away: the current cmake of the base image's Debian is fine.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: cargo loads every member's manifest even for -p pinroute.
COPY . .
ENV CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never
RUN --mount=type=cache,id=pinroute-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=pinroute-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=pinroute-target,target=/src/target \
    set -eux; \
    offline=""; \
    if [ -d deploy/vendor ]; then \
      mkdir -p .cargo; \
      printf '\n[source.crates-io]\nreplace-with = "vendored-sources"\n\n[source.vendored-sources]\ndirectory = "deploy/vendor"\n' >> .cargo/config.toml; \
      offline="--offline"; \
    fi; \
    cargo build --profile dist --locked $offline -p pinroute; \
    # Keep the line tables (readable backtraces) but compress them.
    objcopy --compress-debug-sections=zlib target/dist/pinroute /pinroute; \
    /pinroute --version

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="pinroute" \
      org.opencontainers.image.description="Sticky-session reverse proxy for SkyPilot API servers" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /pinroute /pinroute
# distroless "nonroot": UID/GID 65532. The Helm chart also sets it and a
# read-only root filesystem with /tmp (upgrade socket, pid file) on an emptyDir.
USER 65532:65532
# 8080: client listener, 9090: admin (/healthz, /readyz, /metrics, drain API).
EXPOSE 8080 9090
ENTRYPOINT ["/pinroute"]
CMD ["run", "--config", "/etc/pinroute/pinroute.toml"]
