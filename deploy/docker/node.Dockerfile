# metastore-node image: build with `make images` (docker build -f deploy/docker/node.Dockerfile .).
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p metastore-node \
 && cp target/release/metastore-node /metastore-node

# Small, shell-less, non-root final image.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /metastore-node /usr/local/bin/metastore-node
USER 65532:65532
EXPOSE 2379 2380 2381
ENTRYPOINT ["/usr/local/bin/metastore-node"]
