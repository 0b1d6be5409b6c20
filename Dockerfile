# syntax=docker/dockerfile:1
# baldurd and baldurctl, statically linked, on a distroless base as a
# non-root user: `make image`.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY api/go.mod api/go.sum api/
COPY sdk/go/go.mod sdk/go/go.sum sdk/go/
RUN go mod download
COPY . .
RUN ./scripts/build-static.sh /out

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/baldurd /out/baldurctl /
USER 65532:65532
EXPOSE 7400 7401 7402
ENTRYPOINT ["/baldurd"]
