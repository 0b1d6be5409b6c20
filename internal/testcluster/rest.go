package testcluster

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// REST calls a node's REST API in a test.
type REST struct {
	T    testing.TB
	Base string // http://host:port
}

// Do sends a JSON request and returns the status and JSON body.
func (r REST) Do(method, path, body string) (int, map[string]any) {
	r.T.Helper()
	code, _, out := r.DoAs(method, path, "application/json", body, nil)
	return code, out
}

// DoAs sends a request with the given Content-Type ("" for none) and extra
// headers, and returns the status, headers and JSON body (a body that is
// not JSON as {"raw": text}).
func (r REST) DoAs(method, path, contentType, body string, headers map[string]string) (int, http.Header, map[string]any) {
	r.T.Helper()
	req, err := http.NewRequest(method, r.Base+path, strings.NewReader(body))
	if err != nil {
		r.T.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.T.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 && json.Unmarshal(raw, &out) != nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, resp.Header, out
}

// Dig reads a nested field of a JSON object (a list's element by its
// index in decimal).
func Dig(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i := 0
			for _, ch := range p {
				if ch < '0' || ch > '9' {
					return nil
				}
				i = i*10 + int(ch-'0')
			}
			if i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}
