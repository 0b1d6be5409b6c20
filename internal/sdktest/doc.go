// Package sdktest holds the Go SDK's tests and benchmarks that need a real
// cluster (internal/testcluster), PostgreSQL or peer libraries. They live in
// the server module so the SDK module (sdk/go) depends on grpc, protobuf and
// the generated API only, as etcd keeps client/v3's integration tests outside
// the client module. It has tests only.
package sdktest
