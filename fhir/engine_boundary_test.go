package fhir

import (
	"go/ast"
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

// adapterFiles are the REST adapters the fhir/rest split moves out of
// the package: they may call only the engine's exported API.
func isAdapterFile(name string) bool {
	return name == "content.go" || strings.HasPrefix(name, "rest_")
}

// TestAdaptersUseExportedEngineAPI parses the package and fails when a
// REST adapter (rest_*.go, content.go) names an unexported identifier of
// an engine file: a package-level function, type, constant or variable,
// or a method or field of Server. Such an adapter reaches into the
// engine's private state, which it could not from the package above that
// the adapters become; the engine's typed calls (ReadFunc, Write, Bundle,
// ImportNDJSON, the export calls, BeginIdempotent/KeyedWrite) are its API.
func TestAdaptersUseExportedEngineAPI(t *testing.T) {
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	engineTop, engineMembers := map[string]bool{}, map[string]bool{}
	adapterTop, adapterMembers := map[string]bool{}, map[string]bool{}
	adapters := map[string]*ast.File{}
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		top, members := engineTop, engineMembers
		if isAdapterFile(name) {
			top, members = adapterTop, adapterMembers
			adapters[name] = f
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv != nil {
					members[d.Name.Name] = true
				} else {
					top[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, sp := range d.Specs {
					switch sp := sp.(type) {
					case *ast.TypeSpec:
						top[sp.Name.Name] = true
						if st, ok := sp.Type.(*ast.StructType); ok && sp.Name.Name == "Server" {
							for _, fl := range st.Fields.List {
								for _, n := range fl.Names {
									members[n.Name] = true
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range sp.Names {
							top[n.Name] = true
						}
					}
				}
			}
		}
	}
	private := func(n string) bool { return n != "_" && !ast.IsExported(n) }
	if len(adapters) < 4 || len(engineTop) < 100 {
		t.Fatalf("%d adapter files, %d engine names: the walk misses the package's files", len(adapters), len(engineTop))
	}
	for name, f := range adapters {
		sels := map[*ast.Ident]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			if fd, ok := n.(*ast.FuncDecl); ok {
				sels[fd.Name] = true // the adapter's own name
			}
			if se, ok := n.(*ast.SelectorExpr); ok {
				sels[se.Sel] = true
				if private(se.Sel.Name) && engineMembers[se.Sel.Name] && !adapterMembers[se.Sel.Name] {
					if x, ok := se.X.(*ast.Ident); ok && x.Name == "s" {
						t.Errorf("%s: %s: s.%s is the engine's private state; call its exported API", name, fset.Position(se.Pos()), se.Sel.Name)
					}
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			id, ok := n.(*ast.Ident)
			if !ok || sels[id] || id.Obj != nil {
				return true
			}
			if private(id.Name) && engineTop[id.Name] && !adapterTop[id.Name] {
				t.Errorf("%s: %s: %s is unexported in the engine; call its exported API", name, fset.Position(id.Pos()), id.Name)
			}
			return true
		})
	}
}
