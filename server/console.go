package server

import (
	"embed"
	"io/fs"
	"net/http"
)

// The web console (docs/console.md): static files embedded in the binary,
// served by every node at /ui/. It reads and writes through the REST API
// like any client, with the caller's credentials; nothing is fetched from
// elsewhere (the policy below forbids it).
//
//go:embed ui
var consoleFiles embed.FS

const consolePolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

func consoleHandler() http.Handler {
	sub, err := fs.Sub(consoleFiles, "ui")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/ui", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", consolePolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
