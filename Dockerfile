# syntax=docker/dockerfile:1
# notifyd image: a static binary on distroless, running as nonroot (65532).
#
#   docker build -t notifyd .
#   docker run --rm -p 8080:8080 -v ./my.yaml:/etc/notifyd/notifyd.yaml:ro notifyd
#
# The configuration is read from NOTIFYD_CONFIG=/etc/notifyd/notifyd.yaml; the
# file baked in is the compose stack's (deploy/notifyd/notifyd.yaml: Kafka at
# kafka:9092, email to mailpit:1025): mount your own over it. The store
# (store.dir) is /var/lib/notifyd, owned by nonroot; it is a cache of the
# topics, so a volume there only saves the rebuild at start-up.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
# go.mod names Go 1.27.3: the image's Go fetches that toolchain from the
# module proxy.
ENV GOTOOLCHAIN=go1.27.3
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
# VERSION becomes main.version (notifyd_build_info{version}); e.g.
#   docker build --build-arg VERSION=$(git describe --tags --always) .
# .git is not in the build context, so the revision label reads "unknown".
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/notifyd ./cmd/notifyd \
 && /out/notifyd check-config -config deploy/notifyd/notifyd.yaml \
 && install -d -m 0700 /out/store

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/notifyd /notifyd
COPY deploy/notifyd/notifyd.yaml /etc/notifyd/notifyd.yaml
COPY --from=build --chown=65532:65532 /out/store /var/lib/notifyd
ENV NOTIFYD_CONFIG=/etc/notifyd/notifyd.yaml
USER 65532:65532
WORKDIR /var/lib/notifyd
EXPOSE 8080 8000
ENTRYPOINT ["/notifyd"]
CMD ["serve"]
