# syntax=docker/dockerfile:1
# Legate's binaries in one image: legate-cp, legate-proxy, legate-upstream and legate-demo.
# docker-compose.yml builds it; by hand: docker build -t legate:dev .

# Pinned Rust (the workspace's rust-version is a floor; this is what CI builds with).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries are copied out
# of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p legate-control-plane -p legate-proxy -p legate-test-upstream -p legate-demo --bins \
    && mkdir -p /out \
    && cp target/release/legate-cp target/release/legate-proxy \
          target/release/legate-upstream target/release/legate-demo /out/

FROM debian:bookworm-slim
RUN useradd --system --no-create-home --uid 10001 legate
COPY --from=build /out/ /usr/local/bin/
USER legate
# No default command: docker-compose.yml says which binary each service runs.
CMD ["legate-demo", "--help"]
