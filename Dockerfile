# keyward container image.
#   docker build -t keyward .
#   docker run --rm -p 50051:50051 -p 8080:8080 -e KEYWARD_BOOTSTRAP_ADMIN_KEY=kwadmin_change_me_0123456789 keyward
# No protoc is needed (build.rs compiles the protos with protox); the bundled SQLite and ring
# need only the C compiler that the rust slim image already ships (gcc, libc6-dev).

FROM rust:1.95-slim-bookworm AS planner
WORKDIR /src
# 0. The dependency-only skeleton of the workspace: Cargo.lock, every package's Cargo.toml and a
#    stub for each target, listed by `cargo metadata --no-deps` (no network) rather than by hand,
#    so a crate added to the workspace needs no edit here. See docker/skeleton.sh.
COPY . .
RUN sh docker/skeleton.sh /skeleton

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# 1. Dependencies only. COPY --from compares file contents, so this layer and the build below
#    are rebuilt only when a manifest or Cargo.lock changes, not when a source file does (the
#    stub build.rs still compiles the build-dependencies, protox and tonic-prost-build).
#    The stub builds of the workspace's own crates are then forgotten, so step 2 rebuilds them
#    whatever the files' timestamps say (skeleton.sh refuses a package not named keyward*).
COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked --bin keyward \
    && rm -rf target/release/.fingerprint/keyward-* target/release/build/keyward-* \
              target/release/deps/keyward* target/release/deps/libkeyward* target/release/keyward*

# 2. The sources: the whole build context (.dockerignore keeps out target/, .git, helm/, docs).
#    The e2e test binary is not built here.
COPY . .
RUN cargo build --release --locked --bin keyward \
    && install -m 0755 target/release/keyward /usr/local/bin/keyward


FROM debian:bookworm-slim
# CA certificates for TLS to PostgreSQL and to the identity provider's JWKS URL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 keyward \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
               --shell /usr/sbin/nologin keyward \
    && mkdir /data \
    && chown 10001:10001 /data
COPY --from=builder /usr/local/bin/keyward /usr/local/bin/keyward

# Embedded SQLite and generated secrets when no PostgreSQL URL is given; mount a volume here
# (the Helm chart mounts an emptyDir and runs with a read-only root filesystem).
ENV KEYWARD_DATA_DIR=/data
WORKDIR /data
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# gRPC (KEYWARD_GRPC_ADDR) and the REST gateway with /metrics (KEYWARD_HTTP_ADDR).
EXPOSE 50051 8080
# No HEALTHCHECK: the image carries no gRPC client to run one. Probe grpc.health.v1.Health on
# 50051 instead: Kubernetes' native grpc probe (the Helm chart does), or from the host
#   grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["serve"]
