package server

import (
	"mime"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
)

// Browser safety for the HTTP port. A page on another origin can make a
// browser send "simple" requests without asking first: GET, and POST with
// a text/plain, form or multipart body. So every REST write must say it is
// JSON (the snapshot restore: raw bytes), which a browser only sends
// cross-origin after a CORS preflight, and preflights are answered only for
// the origins --cors-origins lists. Responses are never content-sniffed.

// writeMethods are the methods whose body must carry an allowed type.
var writeMethods = []string{http.MethodPost, http.MethodPut, http.MethodPatch}

// browserSafe wraps the HTTP port's handler.
func browserSafe(next http.Handler, corsOrigins []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		if origin := r.Header.Get("Origin"); origin != "" && slices.Contains(corsOrigins, origin) {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Baldur-Request-Id")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if slices.Contains(writeMethods, r.Method) && strings.HasPrefix(r.URL.Path, "/v1/") {
			want := "application/json"
			if r.URL.Path == "/v1/cluster/snapshot:restore" {
				want = "application/octet-stream"
			}
			got, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if got != want {
				shown := r.Header.Get("Content-Type")
				if shown == "" {
					shown = "none"
				}
				h.Set("Accept", want)
				writeHTTPStatus(w, http.StatusUnsupportedMediaType, withDetails(codes.InvalidArgument, "UNSUPPORTED_MEDIA_TYPE",
					"Content-Type "+shown+": "+r.URL.Path+" takes "+want))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
