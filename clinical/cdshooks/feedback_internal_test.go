package cdshooks

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestCardRecordEncoding pins the KV encoding of a card record (version
// 1): records written by one release are read by the next.
func TestCardRecordEncoding(t *testing.T) {
	const golden = `{"v":1,"client":"https://ehr.example.org","base":"https://cds.example.org/cds-services","service":"opioid-mme",` +
		`"hook":"order-sign","hookInstance":"d1577c69","patient":"p1","user":"PractitionerRole/123","summary":"Projected opioid dose",` +
		`"suggestions":["a","b"],"overrideReasons":["http://anodyne-fhir.org/fhir/CodeSystem/cds-override-reason|palliative"],"issued":"2026-12-07T12:00:00Z"}`
	rec := cardRecord{V: 1, Client: "https://ehr.example.org", Base: "https://cds.example.org/cds-services", Service: "opioid-mme",
		Hook: "order-sign", HookInstance: "d1577c69", Patient: "p1", User: "PractitionerRole/123", Summary: "Projected opioid dose",
		Suggestions: []string{"a", "b"}, OverrideReasons: []string{"http://anodyne-fhir.org/fhir/CodeSystem/cds-override-reason|palliative"}, Issued: "2026-12-07T12:00:00Z"}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != golden {
		t.Errorf("encoding changed:\n got %s\nwant %s", raw, golden)
	}
	var back cardRecord
	if err := json.Unmarshal([]byte(golden), &back); err != nil || !reflect.DeepEqual(back, rec) {
		t.Errorf("decoding: %+v (%v)", back, err)
	}
}
