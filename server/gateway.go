package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"regexp"
	"strconv"
	"strings"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	gw "github.com/baldurhq/baldurd/internal/gateway"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
)

// maxJSONBody caps REST request bodies (snapshot restore excepted).
const maxJSONBody = 1 << 20

// jsonMarshaler is the gateway's JSON: proto field names, defaults emitted,
// unknown fields refused.
func jsonMarshaler() runtime.Marshaler {
	return &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
}

// httpErrorBody is the JSON body of every REST error.
type httpErrorBody struct {
	Code    int    `json:"code"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

var jsonFieldPattern = regexp.MustCompile(`(?:field|name) "?([a-z_][a-z0-9_.]*)"?`)

// upperSnake turns a gRPC code name (FailedPrecondition) into the canonical
// spelling (FAILED_PRECONDITION).
func upperSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func writeHTTPError(w http.ResponseWriter, err error) {
	if writeApprovalRequired(w, err) {
		return
	}
	writeHTTPStatus(w, 0, err)
}

// writeHTTPStatus writes err as the REST error body with HTTP status code
// (0: the one its gRPC code and reason map to).
func writeHTTPStatus(w http.ResponseWriter, code int, err error) {
	code, body := httpError(code, err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// httpError is err's HTTP status (code, unless 0) and REST error body.
func httpError(code int, err error) (int, httpErrorBody) {
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	reason := statusReason(st.Err())
	if code == 0 {
		code = runtime.HTTPStatusFromCode(st.Code())
		if o, ok := httpOverride[reason]; ok {
			code = o
		}
	}
	field := statusField(st)
	if field == "" && st.Code() == codes.InvalidArgument {
		// protojson names the offending field in its message.
		if m := jsonFieldPattern.FindStringSubmatch(st.Message()); m != nil {
			field = m[1]
		}
	}
	return code, httpErrorBody{Code: code, Status: upperSnake(st.Code().String()), Reason: reason, Field: field, Message: st.Message()}
}

// gatewayErrors turns gateway-side failures (bad JSON, bad path values,
// body too large) into INVALID_ARGUMENT naming the problem.
func gatewayError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok && statusReason(err) == "" {
		reason := "INVALID_ARGUMENT"
		switch st.Code() {
		case codes.InvalidArgument:
		case codes.NotFound:
			reason = "NOT_FOUND"
		case codes.Unimplemented:
			reason = "METHOD_NOT_ALLOWED"
		default:
			reason = strings.ToUpper(st.Code().String())
		}
		var extra []*errdetails.BadRequest
		if body, _ := r.Context().Value(bodyKey{}).([]byte); body != nil && st.Code() == codes.InvalidArgument {
			if f := jsonFieldAt(body, st.Message()); f != "" {
				extra = append(extra, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: f, Description: st.Message()}}})
			}
		}
		err = withDetails(st.Code(), reason, st.Message(), extra...)
	}
	writeHTTPError(w, err)
}

type bodyKey struct{}

var (
	positionPattern = regexp.MustCompile(`\(line (\d+):(\d+)\)`)
	keyPattern      = regexp.MustCompile(`"([A-Za-z_][A-Za-z0-9_]*)"\s*:\s*$`)
)

// jsonFieldAt names the JSON key whose value protojson rejected, from the
// "(line L:C)" position in its message: the last key before that point.
func jsonFieldAt(body []byte, msg string) string {
	m := positionPattern.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	lines := strings.SplitAfter(string(body), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	off := col - 1
	for _, l := range lines[:line-1] {
		off += len(l)
	}
	if off < 0 || off > len(body) {
		return ""
	}
	if k := keyPattern.FindStringSubmatch(string(body[:off])); k != nil {
		return k[1]
	}
	return ""
}

func headerMatcher(key string) (string, bool) {
	switch strings.ToLower(key) {
	case mdRequestID:
		return mdRequestID, true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// newHTTPHandler builds the HTTP port: the REST gateway (dialing this node's
// own gRPC port), health endpoints, metrics and the OpenAPI document.
func (s *Server) newHTTPHandler(ctx context.Context, conn *grpc.ClientConn, gatherer prometheus.Gatherer) (http.Handler, error) {
	gwmux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, jsonMarshaler()),
		runtime.WithErrorHandler(gatewayError),
		runtime.WithRoutingErrorHandler(routingError),
		runtime.WithIncomingHeaderMatcher(headerMatcher),
		// gRPC response metadata stays inside: no Grpc-Metadata-* headers.
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingTrailerMatcher(func(string) (string, bool) { return "", false }),
	)
	for _, reg := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gw.RegisterClusterServiceHandler, gw.RegisterEmergencyServiceHandler, gw.RegisterAuditServiceHandler,
		gw.RegisterCircuitServiceHandler, gw.RegisterCoordinationServiceHandler, gw.RegisterDLQServiceHandler, gw.RegisterConfigServiceHandler, gw.RegisterCanaryServiceHandler, gw.RegisterSystemServiceHandler, gw.RegisterApprovalServiceHandler, gw.RegisterNotifyServiceHandler, gw.RegisterIdempotencyServiceHandler, gw.RegisterAdmissionServiceHandler,
	} {
		if err := reg(ctx, gwmux, conn); err != nil {
			return nil, fmt.Errorf("register gateway: %w", err)
		}
	}
	restore := s.restoreHTTP(conn)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/cluster/snapshot", s.saveHTTP(conn))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.withRole(pb.Role_VIEWER, "/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	if s.cfg.EnablePprof {
		// Go's profiler, as etcd's --enable-pprof: admin only (a profile
		// shows what the process holds and does).
		mux.Handle("GET /debug/pprof/", s.withRole(pb.Role_ADMIN, "/debug/pprof", http.HandlerFunc(pprof.Index)))
		for name, h := range map[string]http.HandlerFunc{"cmdline": pprof.Cmdline, "profile": pprof.Profile, "symbol": pprof.Symbol, "trace": pprof.Trace} {
			mux.Handle("GET /debug/pprof/"+name, s.withRole(pb.Role_ADMIN, "/debug/pprof", h))
		}
	}
	mux.Handle("GET /ui/", consoleHandler())
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(gw.OpenAPI)
	})
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/cluster/snapshot:restore" {
			restore(w, r)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeHTTPError(w, withDetails(codes.InvalidArgument, "REQUEST_TOO_LARGE", fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)))
			} else {
				writeHTTPError(w, withDetails(codes.InvalidArgument, "INVALID_ARGUMENT", "reading request body: "+err.Error()))
			}
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if isStreamRoute(r.URL.Path) {
			w = &streamErrorWriter{ResponseWriter: w, timeout: s.cfg.WatchSendTimeout}
		}
		gwmux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyKey{}, body)))
	})
	// Anything else: the same JSON error body as every route.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeHTTPStatus(w, http.StatusNotFound, withDetails(codes.NotFound, "NOT_FOUND", "no route "+r.URL.Path))
	})
	return browserSafe(mux, s.cfg.CORSOrigins), nil
}

// readyz is 200 only when a leader is known and this node has applied
// everything the leader had committed when it last heard from it.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var problems []string
	id, _ := s.store.Leader()
	if id == "" {
		problems = append(problems, "no leader")
	}
	if applied, commit := s.store.AppliedIndex(), s.store.CommitIndex(); applied+64 < commit {
		problems = append(problems, fmt.Sprintf("catching up (applied %d of %d)", applied, commit))
	}
	if s.hub.isClosed() {
		problems = append(problems, "shutting down")
	}
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+strings.Join(problems, "; "))
		return
	}
	fmt.Fprintf(w, "ok (leader %s)\n", id)
}

// restoreHTTP streams a raw snapshot body into RestoreSnapshot.
func (s *Server) restoreHTTP(conn *grpc.ClientConn) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, err := runtime.AnnotateContext(r.Context(), runtime.NewServeMux(runtime.WithIncomingHeaderMatcher(headerMatcher)), r, "/baldur.v1.ClusterService/RestoreSnapshot")
		if err != nil {
			writeHTTPError(w, status.Error(codes.InvalidArgument, err.Error()))
			return
		}
		stream, err := pb.NewClusterServiceClient(conn).RestoreSnapshot(ctx)
		if err != nil {
			writeHTTPError(w, err)
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, rerr := r.Body.Read(buf)
			if n > 0 {
				if err := stream.Send(&pb.RestoreSnapshotRequest{Data: append([]byte(nil), buf[:n]...)}); err != nil {
					break
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				writeHTTPError(w, status.Error(codes.InvalidArgument, "reading body: "+rerr.Error()))
				return
			}
		}
		resp, err := stream.CloseAndRecv()
		if err != nil {
			writeHTTPError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(resp)
		_, _ = w.Write(b)
	}
}

// withRole serves h to callers with at least role, resolved as a gRPC
// call would be: bearer token, client certificate, or anonymous on
// loopback.
func (s *Server) withRole(role pb.Role, what string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := metadata.NewIncomingContext(r.Context(), metadata.Pairs(mdAuthorization, r.Header.Get("Authorization")))
		p := &peer.Peer{}
		if addr, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
			p.Addr = addr
		}
		if r.TLS != nil {
			p.AuthInfo = credentials.TLSInfo{State: *r.TLS}
		}
		ctx = peer.NewContext(ctx, p)
		id, err := s.resolve(ctx)
		if err == nil && id.Role < role {
			err = fmt.Errorf("%w: %s requires role %s", errPermissionDenied, what, strings.ToLower(role.String()))
		}
		if err != nil {
			writeHTTPError(w, toStatus(s.log, err))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// saveHTTP streams SaveSnapshot's bytes as the raw response body, exactly
// as baldurctl writes them (the gateway's generic stream forwarding would
// put a delimiter between chunks).
func (s *Server) saveHTTP(conn *grpc.ClientConn) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, err := runtime.AnnotateContext(r.Context(), runtime.NewServeMux(runtime.WithIncomingHeaderMatcher(headerMatcher)), r, "/baldur.v1.ClusterService/SaveSnapshot")
		if err != nil {
			writeHTTPError(w, status.Error(codes.InvalidArgument, err.Error()))
			return
		}
		stream, err := pb.NewClusterServiceClient(conn).SaveSnapshot(ctx, &pb.SaveSnapshotRequest{})
		if err != nil {
			writeHTTPError(w, err)
			return
		}
		first, err := stream.Recv()
		if err != nil {
			writeHTTPError(w, err) // refused before any byte: a proper error
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="baldurd.snap"`)
		if md, err := stream.Header(); err == nil {
			if v := md.Get("baldur-snapshot-size"); len(v) > 0 {
				w.Header().Set("Baldur-Snapshot-Size", v[0])
			}
		}
		for chunk := first; ; {
			if _, err := w.Write(chunk.Data); err != nil {
				return
			}
			if chunk, err = stream.Recv(); err != nil {
				if err != io.EOF {
					// Mid-stream: the status line is gone; cut the body so the
					// client sees a short, unverifiable file, not a good one.
					s.log.Warn("cluster.snapshot_download_failed", "err", err)
					panic(http.ErrAbortHandler)
				}
				return
			}
		}
	}
}

// routingError answers a path the gateway does not serve (404) or serves
// with other methods (405, with Allow) in the REST error shape.
func routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		writeHTTPStatus(w, httpStatus, withDetails(codes.Unimplemented, "METHOD_NOT_ALLOWED", r.Method+" is not served on "+r.URL.Path))
	case http.StatusNotFound:
		writeHTTPStatus(w, httpStatus, withDetails(codes.NotFound, "NOT_FOUND", "no route "+r.URL.Path))
	default:
		writeHTTPStatus(w, httpStatus, withDetails(codes.InvalidArgument, "INVALID_ARGUMENT", http.StatusText(httpStatus)))
	}
}
