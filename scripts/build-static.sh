#!/bin/sh
# Builds statically linked baldurd and baldurctl into OUTDIR: the command the
# Dockerfile's build stage runs (and deploy/deploy_test.go checks).
set -eu
out=${1:?usage: scripts/build-static.sh OUTDIR}
export CGO_ENABLED=0
go build -trimpath -ldflags="-s -w" -o "$out/baldurd" ./cmd/baldurd
go build -trimpath -ldflags="-s -w" -o "$out/baldurctl" ./cmd/baldurctl
