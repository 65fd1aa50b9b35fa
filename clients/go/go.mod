// The Go example. Its stubs come from `buf generate` at the repository's top (buf.gen.yaml:
// managed mode gives them go_package switchboard.dev/gen/go/...), written to gen/go:
//
//	buf generate && (cd gen/go && go mod init switchboard.dev/gen/go && go mod tidy)
//	cd clients/go && go mod tidy && go run . 127.0.0.1:50051 echo
//
// go mod tidy adds grpc-go, protobuf-go and genproto at their current releases. The
// repository's test builds it in GOPATH mode against Debian's packages instead
// (tests/test_go_client.py).
module switchboard.dev/example

go 1.19

replace switchboard.dev/gen/go => ../../gen/go
