package fhir

import (
	"encoding/json"
	"testing"
)

// TestIdempotencyRecordEncoding pins the stored form of an Idempotency-Key
// record: records outlive the process that wrote them (a replay may reach
// a newer server), so field names and the version must not drift.
func TestIdempotencyRecordEncoding(t *testing.T) {
	rec := idemRecord{V: 1, Hash: "ab", Results: []idemResult{
		{N: -1, Status: 201, Type: "Patient", ID: "p1", Version: 1, Wrote: true},
		{N: 3, Status: 204},
		{N: 4, Status: 200, Type: "Patient", ID: "p2", Version: 7, Minimal: true},
	}}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"v":1,"hash":"ab","results":[{"n":-1,"status":201,"type":"Patient","id":"p1","version":1,"wrote":true},{"n":3,"status":204},{"n":4,"status":200,"type":"Patient","id":"p2","version":7,"minimal":true}]}`
	if string(raw) != want {
		t.Errorf("encoding\n%s\nwant\n%s", raw, want)
	}
	var back idemRecord
	if err := json.Unmarshal([]byte(want), &back); err != nil || back.Results[2].Version != 7 || !back.Results[0].Wrote {
		t.Errorf("decoding: %+v %v", back, err)
	}
}
