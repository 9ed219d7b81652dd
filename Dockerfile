# syntax=docker/dockerfile:1
# One image with both binaries: /usr/local/bin/vigil-agent and /usr/local/bin/vigil-federator.
#   docker build -t ghcr.io/vigil-dev/vigil:0.1.0 .
# The manifests (manifests/) run it as user 65532 with a read-only root file system.

FROM rust:1.95-bookworm AS build
# rdkafka builds its bundled librdkafka (C): a compiler, make and zlib headers are in the rust
# image already; pkg-config and zlib1g-dev are named so a slimmer base fails loudly here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The generated protobuf code is checked in (proto/): no protoc needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vigil-agent -p vigil-federator \
    && mkdir -p /out \
    && cp target/release/vigil-agent target/release/vigil-federator /out/

# debian:bookworm-slim rather than distroless: the binaries link glibc, libgcc and possibly
# libz dynamically (all present here), and the agent DaemonSet's init container needs /bin/sh,
# mkdir and chown to hand the spill folder to user 65532.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 vigil \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vigil
COPY --from=build /out/vigil-agent /out/vigil-federator /usr/local/bin/
# A non-root process gets CAP_NET_RAW (raw ICMP for ping fallbacks and the deep check's TTL
# probing) only from a file capability; the pod must also add NET_RAW to its bounding set.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_raw+ep /usr/local/bin/vigil-agent \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y \
    && rm -rf /var/lib/apt/lists/*
USER 65532:65532
# 9115: agent /metrics, /probe, /healthz. 8080: federator HTTP. 7443: federator gRPC.
EXPOSE 9115 8080 7443
ENTRYPOINT ["/usr/local/bin/vigil-federator"]
CMD ["--help"]
