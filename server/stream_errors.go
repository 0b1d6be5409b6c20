package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// One error shape on every route: grpc-gateway answers a streaming route's
// error with its own envelope ({"error": <google.rpc.Status>}). Before the
// first message the answer becomes the REST error body every other route
// gives (with its HTTP status); a failure after messages were sent is the
// chunk {"error": <that same body>}.

// streamRoutes matches the REST paths of server-streaming methods, read
// from the descriptors' google.api.http rules.
var streamRoutes = readStreamRoutes()

var pathVariable = regexp.MustCompile(`\{[^}]+\}`)

func readStreamRoutes() []*regexp.Regexp {
	var out []*regexp.Regexp
	protoregistry.GlobalFiles.RangeFilesByPackage("baldur.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if !md.IsStreamingServer() || rule == nil {
					continue
				}
				path := rule.GetGet() + rule.GetPost()
				if path == "" {
					continue
				}
				parts := pathVariable.Split(path, -1)
				for k := range parts {
					parts[k] = regexp.QuoteMeta(parts[k])
				}
				out = append(out, regexp.MustCompile("^"+strings.Join(parts, "[^/]+")+"$"))
			}
		}
		return true
	})
	return out
}

func isStreamRoute(path string) bool {
	for _, re := range streamRoutes {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

// streamErrorWriter rewrites the gateway's stream error envelope.
type streamErrorWriter struct {
	http.ResponseWriter
	held    int  // an error status not yet written (the body decides)
	started bool // headers are out
	done    bool // the answer was an error body: the rest is dropped
	// timeout bounds each write: a client that takes nothing for
	// --watch-send-timeout fails it, which ends the stream (the gateway
	// cancels its call) and frees what it held.
	timeout time.Duration
}

func (w *streamErrorWriter) deadline() {
	if w.timeout > 0 {
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

var gatewayErrorPrefix = []byte(`{"error":`)

func (w *streamErrorWriter) WriteHeader(code int) {
	if code >= 400 && !w.started {
		w.held = code
		return
	}
	w.started = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *streamErrorWriter) Write(p []byte) (int, error) {
	if w.done {
		return len(p), nil // the gateway's delimiter after its error chunk
	}
	if st, ok := gatewayStatus(p); ok {
		if !w.started {
			// Nothing was sent: the whole answer is the usual error.
			w.started, w.held, w.done = true, 0, true
			writeHTTPError(w.ResponseWriter, st.Err())
			return len(p), nil
		}
		_, body := httpError(0, st.Err())
		chunk, _ := json.Marshal(map[string]httpErrorBody{"error": body})
		_, err := w.ResponseWriter.Write(append(chunk, '\n'))
		return len(p), err
	}
	if w.held != 0 {
		w.ResponseWriter.WriteHeader(w.held)
		w.held = 0
	}
	w.started = true
	w.deadline()
	return w.ResponseWriter.Write(p)
}

// gatewayStatus decodes a gateway error chunk.
func gatewayStatus(p []byte) (*status.Status, bool) {
	if !bytes.HasPrefix(p, gatewayErrorPrefix) {
		return nil, false
	}
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(bytes.TrimSpace(p), &env) != nil || len(env.Error) == 0 {
		return nil, false
	}
	var sp spb.Status
	if (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(env.Error, &sp) != nil {
		return nil, false
	}
	return status.FromProto(&sp), true
}

func (w *streamErrorWriter) Flush() {
	if w.held != 0 {
		return
	}
	w.deadline()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *streamErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
