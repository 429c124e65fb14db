# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a minimal non-root image.
#   docker build -t ghcr.io/edgexds/edgexds:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p edgexds \
    && strip -o /edgexds target/release/edgexds

# distroless/cc: glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /edgexds /usr/local/bin/edgexds
USER 65532:65532
EXPOSE 18000 19000
ENTRYPOINT ["/usr/local/bin/edgexds"]
CMD ["serve"]
