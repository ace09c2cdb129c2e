package profile

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzValidate: any JSON object, valid or hostile, gets issues, never a
// panic or a hang (go test -fuzz FuzzValidate -fuzztime 30s).
func FuzzValidate(f *testing.F) {
	files, _ := filepath.Glob("testdata/valid/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"resourceType":"Observation","component":[{"valueQuantity":{"code":"mg"}}],"contained":[{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}]}`))
	f.Add([]byte(`{"resourceType":"StructureDefinition","url":"x","baseDefinition":"http://hl7.org/fhir/StructureDefinition/Patient","differential":{"element":[{"path":"Patient.name:a.b"}]}}`))
	r := registry(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		res, err := decode(raw)
		if err != nil || res == nil {
			return
		}
		r.Validate(bg, res, Options{Profiles: []string{BaseURL + "anodyne-pain-score"}})
	})
}
