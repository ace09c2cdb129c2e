package audit

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// TestDirectEntries: for every kind of event this package writes, the
// direct entries are exactly the registry's (the reference: FHIRPath over
// the official R4 definitions), or the body is left to the registry.
func TestDirectEntries(t *testing.T) {
	reg, err := resources.Load(resources.WithLogger(slog.New(slog.DiscardHandler)), resources.WithBaseURL("https://fhir.example.org/fhir"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.UTC)
	lockout := auth.AuditCategory{Type: auth.AuditCoding{System: "http://dicom.nema.org/resources/ontology/DCM", Code: "110113", Display: "Security Alert"},
		Subtypes: []auth.AuditCoding{{System: "http://dicom.nema.org/resources/ontology/DCM", Code: "110127", Display: "Emergency Override Stopped"}, {System: "urn:x", Code: "lock"}}}
	tests := []struct {
		name   string
		ev     auth.AuditEvent
		direct bool // false: left to the registry
	}{
		{"read by a client", auth.AuditEvent{Interaction: "read", Action: "R", Type: "Observation", IDs: []string{"o-1"}, Outcome: 200, ClientID: "app", Source: "https://fhir.example.org/fhir", RemoteAddr: "127.0.0.1"}, true},
		{"search with a query and a patient", auth.AuditEvent{Interaction: "search-type", Action: "E", Type: "Observation", Patients: []string{"p1", "p2"}, Query: "patient=p1&code=http://loinc.org|72514-3", Outcome: 200, ClientID: "app", RemoteAddr: "::1"}, true},
		{"a user who is a practitioner", auth.AuditEvent{Interaction: "vread", Action: "R", Type: "Patient", IDs: []string{"p1"}, Patients: []string{"p1"}, Outcome: 200, ClientID: "app", User: "Practitioner/dr.who", RemoteAddr: "2001:db8::7"}, true},
		{"a user who is a patient", auth.AuditEvent{Interaction: "read", Action: "R", Type: "Condition", IDs: []string{"c1", "c2"}, Outcome: 200, ClientID: "app", User: "Patient/p9"}, true},
		{"a user named, not referenced", auth.AuditEvent{Interaction: "read", Action: "R", Type: "Condition", IDs: []string{"c1"}, Outcome: 403, ClientID: "app", User: "Zoë Ødegård-Łukasz"}, true},
		{"commit refs", auth.AuditEvent{Interaction: "transaction", Action: "E", Refs: []string{"Observation/a", "Flag/b", "Patient/p1"}, Outcome: 200, ClientID: "app"}, true},
		{"research", auth.AuditEvent{Interaction: "search-system", Action: "E", Outcome: 200, ClientID: "r", ResearchProject: "study-42", Query: "_type=Observation"}, true},
		{"failure with a description", auth.AuditEvent{Interaction: "read", Action: "R", Type: "Observation", IDs: []string{"x"}, Outcome: 500, Description: "storage: unavailable"}, true},
		{"anonymous, refused", auth.AuditEvent{Interaction: "read", Action: "R", Type: "Observation", IDs: []string{"x"}, Outcome: 401, RemoteAddr: "10.0.0.1"}, true},
		{"a lock-out", auth.AuditEvent{Category: lockout, Action: "E", Outcome: 400, User: "alice", RemoteAddr: "192.0.2.1", Description: "account locked"}, true},
		{"a lock-out without subtypes", auth.AuditEvent{Category: auth.AuditCategory{Type: lockout.Type}, Action: "E", Outcome: 400}, true},
		{"an absolute user reference", auth.AuditEvent{Interaction: "read", Action: "R", Type: "Patient", IDs: []string{"p1"}, Outcome: 200, User: "https://fhir.example.org/fhir/Practitioner/7"}, false},
		{"a versioned entity id", auth.AuditEvent{Interaction: "vread", Action: "R", Refs: []string{"Patient/p1/_history/2"}, Outcome: 200}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.ev.Time = at
			body, err := encodeEvent(tc.ev, "0123456789abcdef", at.Add(time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			var decoded map[string]any
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.UseNumber()
			if err := dec.Decode(&decoded); err != nil {
				t.Fatal(err)
			}
			want, err := reg.Index("AuditEvent", decoded)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := directEntries(body)
			if ok != tc.direct {
				t.Fatalf("direct %v, want %v", ok, tc.direct)
			}
			if ok && !sameEntries(got, want) {
				t.Errorf("direct entries differ from the registry's\ndirect:   %+v\nregistry: %+v", got, want)
			}
		})
	}
	// A field the shape does not know leaves the body to the registry.
	if _, ok := directEntries([]byte(`{"resourceType":"AuditEvent","id":"x","period":{"start":"2020"}}`)); ok {
		t.Error("a body with an unknown field was indexed directly")
	}
}

// extraParam is the registry with one more AuditEvent parameter, as a
// SearchParameter resource would add.
type extraParam struct{ *resources.Registry }

func (x extraParam) Index(typ string, res map[string]any) ([]storage.Entry, error) {
	es, err := x.Registry.Index(typ, res)
	return append(es, storage.Entry{Param: "custom", Kind: storage.KindToken, Code: "c"}), err
}

// TestDirectRefusedWhenParamsDiffer: once the registry indexes AuditEvents
// differently, the materializer's batch check turns the direct path off.
func TestDirectRefusedWhenParamsDiffer(t *testing.T) {
	reg, err := resources.Load(resources.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	body, err := encodeEvent(auth.AuditEvent{Interaction: "read", Action: "R", Type: "Observation", IDs: []string{"o"}, Outcome: 200, ClientID: "app"}, "id1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		index Indexer
		agree bool
	}{{"R4 registry", reg, true}, {"an added parameter", extraParam{reg}, false}} {
		j := &Journal{index: tc.index, log: slog.New(slog.DiscardHandler)}
		if got := j.directAgrees(body); got != tc.agree {
			t.Errorf("%s: directAgrees %v, want %v", tc.name, got, tc.agree)
		}
		w, err := writeOfBody(tc.index, body, j.directAgrees(body))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := tc.index.Index("AuditEvent", decode(t, body))
		if !sameEntries(w.Index, want) {
			t.Errorf("%s: stored entries %+v, want the registry's %+v", tc.name, w.Index, want)
		}
	}
}

func decode(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}
