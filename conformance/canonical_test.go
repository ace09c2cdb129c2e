package conformance

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// canonicalBase is the one base under which Anodyne defines extensions,
// profiles, code systems and identifier systems (README "Canonical URLs").
const canonicalBase = "http://anodyne-fhir.org/fhir/"

// ourURL finds URLs that name an Anodyne host, whatever its spelling, so a
// second base (anodyne.dev, https://, a typo) cannot creep in.
var ourURL = regexp.MustCompile(`https?://[a-z0-9.-]*anodyne[a-z0-9.-]*\.[a-z]+[^\s"'` + "`" + `)]*`)

// reservedHost matches the RFC 2606 names tests and placeholders use.
var reservedHost = regexp.MustCompile(`^https?://[^/]*\.(test|invalid|example|localhost)(:[0-9]+)?(/|$)`)

// TestCanonicalBase scans every Go string literal and every JSON file of the
// module for URLs on an Anodyne host and fails on one outside canonicalBase.
func TestCanonicalBase(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var checked int
	check := func(where, text string) {
		for _, u := range ourURL.FindAllString(text, -1) {
			if reservedHost.MatchString(u) {
				continue
			}
			checked++
			if !strings.HasPrefix(u+"/", canonicalBase) {
				t.Errorf("%s: %q is not under the canonical base %s", where, u, canonicalBase)
			}
		}
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if name == ".git" || name == "node_modules" || (strings.HasPrefix(name, ".") && path != root) {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		switch {
		case strings.HasSuffix(name, ".go"):
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && s != "" {
						check(rel, s)
					}
				}
				return true
			})
		case strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".js") || name == "README.md":
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			check(rel, string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no Anodyne URL found: the scan is not looking at the sources")
	}
}
