package resources

import (
	"reflect"
	"testing"
)

func TestSplitValues(t *testing.T) {
	tests := []struct {
		raw  string
		want []string
		err  bool
	}{
		{"a", []string{"a"}, false},
		{"a,b", []string{"a", "b"}, false},
		{`a\,b,c`, []string{"a,b", "c"}, false},
		{`a\$b\|c\\d`, []string{`a$b|c\d`}, false},
		{`a\xb`, []string{`a\xb`}, false},
		{`a\`, nil, true},
		{"", []string{""}, false},
	}
	for _, tt := range tests {
		got, err := SplitValues(tt.raw)
		if (err != nil) != tt.err {
			t.Fatalf("SplitValues(%q) error = %v", tt.raw, err)
		}
		if !tt.err && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitValues(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}

func TestSplitEscapedKeepsEscapes(t *testing.T) {
	got := splitEscaped(`a\|b|c`, '|')
	if want := []string{`a\|b`, "c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("splitEscaped = %q, want %q", got, want)
	}
}

func TestSplitPrefix(t *testing.T) {
	tests := []struct {
		in   string
		pfx  prefix
		rest string
		err  bool
	}{
		{"2020", pfxEq, "2020", false},
		{"ge2020", pfxGe, "2020", false},
		{"ap5.4", pfxAp, "5.4", false},
		{"-5", pfxEq, "-5", false},
		{"xx5", "", "", true},
	}
	for _, tt := range tests {
		p, rest, err := splitPrefix(tt.in)
		if (err != nil) != tt.err || p != tt.pfx || rest != tt.rest {
			t.Errorf("splitPrefix(%q) = %q, %q, %v", tt.in, p, rest, err)
		}
	}
}
