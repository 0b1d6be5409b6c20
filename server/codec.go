package server

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protov2 "google.golang.org/protobuf/proto"
)

// maxRequestMessage caps one request message; larger ones are refused with
// REQUEST_TOO_LARGE. gRPC itself refuses messages over maxGRPCMessage
// (RESOURCE_EXHAUSTED) before any of our code runs.
const maxRequestMessage = 1 << 20

// strictCodec is the protobuf codec with one change: a request that does
// not decode (or is too large) is not failed by gRPC as INTERNAL. The
// message is left empty and marked, and the first interceptor answers
// INVALID_ARGUMENT naming the problem. gRPC wraps every codec error as
// INTERNAL, so the mark is the only way to report bad input as such.
type strictCodec struct {
	base encoding.CodecV2
}

// badRequests maps a request message (by pointer) to its decoding error
// until an interceptor takes it.
var badRequests sync.Map

func newStrictCodec() strictCodec { return strictCodec{base: encoding.GetCodecV2(proto.Name)} }

func (c strictCodec) Name() string { return c.base.Name() }

func (c strictCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		return f.marshal(), nil // a watch message encoded once (watch_frames.go)
	}
	return c.base.Marshal(v)
}

func (c strictCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if n := data.Len(); n > maxRequestMessage {
		return c.poison(v, withDetails(codes.InvalidArgument, "REQUEST_TOO_LARGE", fmt.Sprintf("request message is %d bytes, at most %d", n, maxRequestMessage)))
	}
	if err := c.base.Unmarshal(data, v); err != nil {
		return c.poison(v, withDetails(codes.InvalidArgument, "INVALID_ARGUMENT", "malformed protobuf request: "+err.Error()))
	}
	return nil
}

func (c strictCodec) poison(v any, err error) error {
	m, ok := v.(protov2.Message)
	if !ok {
		return err // not ours to handle; gRPC reports it
	}
	protov2.Reset(m)
	badRequests.Store(v, err)
	return nil
}

// takeBadRequest returns (and forgets) the decoding error of req, if any.
func takeBadRequest(req any) error {
	if err, ok := badRequests.LoadAndDelete(req); ok {
		return err.(error)
	}
	return nil
}

// checkedStream reports a malformed streamed message as its Recv error.
type checkedStream struct {
	grpc.ServerStream
}

func (s checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return takeBadRequest(m)
}
