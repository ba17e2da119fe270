# metastore-operator image: build with `make images` (docker build -f deploy/docker/operator.Dockerfile .).
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p metastore-operator --bin metastore-operator \
 && cp target/release/metastore-operator /metastore-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /metastore-operator /usr/local/bin/metastore-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/metastore-operator"]
