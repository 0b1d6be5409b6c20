module github.com/baldurhq/baldurd/sdk/go

go 1.26.8

require (
	github.com/baldurhq/baldurd/api v0.0.0-00010101000000-000000000000
	golang.org/x/time v0.16.0
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261110000943-09e21b237f2c // indirect
)

// Used when building inside this repository. A replace applies to the main
// module only, so applications that require the SDK are not affected by it.
replace github.com/baldurhq/baldurd/api => ../../api
