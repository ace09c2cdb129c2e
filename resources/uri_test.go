package resources

import (
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

func TestURI(t *testing.T) {
	r := registry(t)
	p := param("url", storage.KindURI)
	vs := indexURI(p, node{"http://acme.org/fhir/ValueSet/123", "uri"})
	if len(vs) != 1 || vs[0].Exact != "http://acme.org/fhir/ValueSet/123" {
		t.Fatalf("indexURI = %+v", vs)
	}
	tests := []struct {
		mod, value string
		want       bool
	}{
		{"", "http://acme.org/fhir/ValueSet/123", true},
		{"", "http://acme.org/fhir/ValueSet/12", false},
		{"below", "http://acme.org/fhir/", true},
		{"below", "http://acme.org/other", false},
		{"above", "http://acme.org/fhir/ValueSet/123/_history/5", true},
		{"above", "http://acme.org/fhir/ValueSet/1234", false},
	}
	for _, tt := range tests {
		e := compileOne(t, r, "ValueSet", "url", tt.mod, tt.value)
		if got := matches(t, e, vs); got != tt.want {
			t.Errorf("url:%s=%s = %v, want %v (%s)", tt.mod, tt.value, got, tt.want, e)
		}
	}
	// :above never cuts into the scheme: "http:" alone must not be asked for.
	e := compileOne(t, r, "ValueSet", "url", "above", "http://acme.org/a")
	if got := e.String(); got != `(Match url uri (Or (Cmp Exact Eq "http://acme.org/a") (Cmp Exact Eq "http://acme.org")))` {
		t.Errorf("url:above = %s", got)
	}
}
