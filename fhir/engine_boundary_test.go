package fhir

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// restFiles are the REST layer of the package: the router and server
// (server.go), content negotiation and encoding (content.go) and the
// adapters (rest_*.go). Every other non-test file is the engine, which
// speaks in Go values (ReadRequest/ReadResult, WriteRequest/WriteResult,
// *Error) and never sees an HTTP request.
func isRESTFile(name string) bool {
	return name == "server.go" || name == "content.go" || strings.HasPrefix(name, "rest_")
}

// httpLayer are the imports only the REST layer may use.
var httpLayer = []string{"github.com/labstack/echo/v4", "net/http/httptest"}

// TestEngineFilesNoHTTPLayer parses the imports of every non-test file of
// the package and fails when an engine file imports the router or
// httptest: an interaction written against echo.Context (or replayed
// through a recorder) could not be called by batch entries, the importer
// or the packages above as a Go call.
func TestEngineFilesNoHTTPLayer(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	engine, rest := 0, 0
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		if isRESTFile(name) {
			rest++
			continue
		}
		engine++
		for _, is := range f.Imports {
			p, _ := strconv.Unquote(is.Path.Value)
			for _, banned := range httpLayer {
				if p == banned {
					t.Errorf("%s imports %s: engine files take and return Go values; an HTTP adapter belongs in rest_*.go", name, p)
				}
			}
		}
	}
	if engine < 40 || rest < 3 {
		t.Errorf("%d engine and %d REST files: the walk misses the package's files", engine, rest)
	}
}
