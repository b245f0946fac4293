# toolgate's container image: built from the locked dependency tree, run
# as a non-root user on a distroless base (no shell, no package manager).
#
#   docker build -t toolgate:0.1.0 .
#   docker run --rm -p 8000:8000 -p 9090:9090 -v "$PWD/examples:/etc/toolgate/policy:ro" \
#     toolgate:0.1.0 run --config /etc/toolgate/policy/minimal.yaml \
#     --listen 0.0.0.0:8000 --admin-listen 0.0.0.0:9090

# The full image: aws-lc-rs (the crypto provider) is compiled from C with
# the gcc it carries (no cmake needed).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin toolgate \
 && install -D -m 0755 target/release/toolgate /out/toolgate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/toolgate /usr/local/bin/toolgate
USER 65532:65532
# MCP traffic, and the admin endpoints (/healthz, /readyz, /metrics).
EXPOSE 8000 9090
ENTRYPOINT ["/usr/local/bin/toolgate"]
CMD ["run", "--config", "/etc/toolgate/policy/policy.yaml", "--listen", "0.0.0.0:8000", "--admin-listen", "0.0.0.0:9090"]
