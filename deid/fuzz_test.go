package deid

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzRules: any rules file either compiles or is a *RuleError; never a panic.
func FuzzRules(f *testing.F) {
	f.Add(DefaultRules())
	f.Add([]byte(`{"version":"x","rules":[{"path":"Patient.name","method":"redact"}]}`))
	f.Add([]byte(`{"version":"x","rules":[{"path":"Patient.name.where(","method":"keep"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := New(data)
		var re *RuleError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("error is not a RuleError: %v", err)
		}
	})
}

// FuzzApply: the default rules on any JSON object never panic, and what
// they return still encodes.
func FuzzApply(f *testing.F) {
	d, err := New(DefaultRules())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(`{"resourceType":"Patient","id":"p","name":[{"family":"x"}],"birthDate":"1900"}`)
	f.Add(`{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/p"},"effectiveDateTime":"2024-01-01T00:00:00.123+02:00","valueQuantity":{"value":1}}`)
	f.Fuzz(func(t *testing.T, s string) {
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		var m map[string]any
		if dec.Decode(&m) != nil || m == nil {
			return
		}
		out, _, err := d.Apply(m, []byte("k"))
		if err != nil {
			return
		}
		if _, err := json.Marshal(out); err != nil {
			t.Fatalf("output does not encode: %v", err)
		}
	})
}
