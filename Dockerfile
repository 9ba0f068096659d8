# keyward container image.
#   docker build -t keyward .
#   docker run --rm -p 50051:50051 -e KEYWARD_BOOTSTRAP_ADMIN_KEY=kwadmin_change_me_0123456789 keyward
# No protoc is needed (build.rs compiles the protos with protox); the bundled SQLite and ring
# need only the C compiler that the rust slim image already ships (gcc, libc6-dev).

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src

# 1. Dependencies only, in a layer that is rebuilt only when a manifest or Cargo.lock changes.
#    Every workspace member's manifest is needed to resolve the workspace; its sources are stubs
#    here (the stub build.rs still compiles the build-dependencies, protox and tonic-prost-build).
#    The stub builds of the workspace's own crates are then forgotten, so step 2 rebuilds them
#    whatever the files' timestamps say.
COPY Cargo.toml Cargo.lock ./
COPY crates/bench/Cargo.toml crates/bench/
COPY crates/core/Cargo.toml crates/core/
COPY crates/server/Cargo.toml crates/server/
COPY crates/store/Cargo.toml crates/store/
COPY migrations/Cargo.toml migrations/
RUN mkdir -p proto crates/bench/src crates/core/src crates/server/src crates/store/src migrations/src tests/e2e \
    && touch proto/lib.rs crates/core/src/lib.rs crates/server/src/lib.rs crates/store/src/lib.rs migrations/src/lib.rs \
    && for f in build.rs crates/bench/src/main.rs crates/server/src/main.rs tests/e2e/main.rs; do echo 'fn main() {}' > "$f"; done \
    && cargo build --release --locked --bin keyward \
    && rm -rf target/release/.fingerprint/keyward-* target/release/build/keyward-* \
              target/release/deps/keyward* target/release/deps/libkeyward* target/release/keyward*

# 2. The sources (tests/e2e/main.rs stays a stub: the test binary is not built here).
COPY build.rs ./
COPY proto proto
COPY migrations migrations
COPY crates crates
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
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["serve"]
