package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	"github.com/anodyne-fhir/anodyne/resources"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Direct index entries of the AuditEvents this package writes.
//
// Why: extracting them with the search-parameter registry (FHIRPath over
// the decoded JSON) costs about as much CPU as the read the event records,
// and every read has one. The events have one fixed shape (auth.AuditEvent
// Resource), so their entries for the R4 AuditEvent parameters can be
// built from a typed decode of that shape at a fraction of the cost.
//
// The registry stays the reference: a body with any field the shape does
// not know, or a reference that is not a plain "Type/id", is indexed by
// the registry; TestDirectEntries holds both to the same entries for every
// kind of event; and the materializer checks the first event of every
// batch against the registry (a SearchParameter added for AuditEvent
// changes the registry's answer), indexing the batch with the registry
// when they differ.

type auditDoc struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         struct {
		VersionID   string `json:"versionId"`
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
	Type           auditCoding    `json:"type"`
	Subtype        []auditCoding  `json:"subtype"`
	Action         string         `json:"action"`
	Recorded       string         `json:"recorded"`
	Outcome        string         `json:"outcome"`
	OutcomeDesc    string         `json:"outcomeDesc"`
	PurposeOfEvent []auditConcept `json:"purposeOfEvent"`
	Agent          []struct {
		Type         *auditConcept  `json:"type"`
		Who          *auditRef      `json:"who"`
		Requestor    bool           `json:"requestor"`
		PurposeOfUse []auditConcept `json:"purposeOfUse"`
		Network      *struct {
			Address string `json:"address"`
			Type    string `json:"type"`
		} `json:"network"`
	} `json:"agent"`
	Source struct {
		Observer struct {
			Display string `json:"display"`
		} `json:"observer"`
	} `json:"source"`
	Entity []struct {
		What  *auditRef    `json:"what"`
		Role  *auditCoding `json:"role"`
		Type  *auditCoding `json:"type"`
		Name  string       `json:"name"`
		Query string       `json:"query"`
	} `json:"entity"`
}

type auditCoding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display"`
}

type auditConcept struct {
	Coding []auditCoding `json:"coding"`
}

type auditRef struct {
	Reference  string `json:"reference"`
	Display    string `json:"display"`
	Identifier *struct {
		System string `json:"system"`
		Value  string `json:"value"`
	} `json:"identifier"`
}

// directEntries returns the index entries of an AuditEvent body written by
// this package, or false when the registry must index it.
func directEntries(body []byte) ([]storage.Entry, bool) {
	var d auditDoc
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil || d.ResourceType != "AuditEvent" || d.ID == "" {
		return nil, false
	}
	var out []storage.Entry
	add := func(e storage.Entry) { out = append(out, e) }
	token := func(param, system, code, display string) {
		if system != "" || code != "" || display != "" {
			add(storage.Entry{Param: param, Kind: storage.KindToken, System: system, Code: code, Text: resources.Normalize(display)})
		}
	}
	date := func(param, s string) bool {
		lo, hi, err := resources.DateRange(s)
		if err != nil {
			return false
		}
		add(storage.Entry{Param: param, Kind: storage.KindDate, Low: lo, High: hi})
		return true
	}
	// ref adds the reference entries of r under param, and under
	// "patient" when it names a Patient; false for a reference the
	// registry must resolve (absolute, versioned, malformed).
	var patients []storage.Entry
	ref := func(param string, r *auditRef) bool {
		if r == nil {
			return true
		}
		if r.Reference != "" {
			typ, id, ok := plainRef(r.Reference)
			if !ok {
				return false
			}
			add(storage.Entry{Param: param, Kind: storage.KindReference, RefType: typ, RefID: id})
			// The patient parameter is a FHIRPath union, which keeps
			// one of equal references.
			p := storage.Entry{Param: "patient", Kind: storage.KindReference, RefType: typ, RefID: id}
			if typ == "Patient" && !slices.ContainsFunc(patients, func(e storage.Entry) bool { return e.RefID == id }) {
				patients = append(patients, p)
			}
		}
		if r.Identifier != nil && r.Identifier.Value != "" {
			add(storage.Entry{Param: param, Kind: storage.KindReference, System: r.Identifier.System, Code: r.Identifier.Value})
		}
		return true
	}

	add(storage.Entry{Param: "_id", Kind: storage.KindToken, Code: d.ID})
	if d.Meta.LastUpdated != "" && !date("_lastUpdated", d.Meta.LastUpdated) {
		return nil, false
	}
	if d.Action != "" {
		token("action", "", d.Action, "")
	}
	for _, a := range d.Agent {
		if a.Network != nil && a.Network.Address != "" {
			add(storage.Entry{Param: "address", Kind: storage.KindString, Text: resources.Normalize(a.Network.Address), Exact: a.Network.Address})
		}
	}
	for _, a := range d.Agent {
		if !ref("agent", a.Who) {
			return nil, false
		}
	}
	if d.Recorded != "" && !date("date", d.Recorded) {
		return nil, false
	}
	for _, e := range d.Entity {
		if !ref("entity", e.What) {
			return nil, false
		}
	}
	for _, e := range d.Entity {
		if e.Name != "" {
			add(storage.Entry{Param: "entity-name", Kind: storage.KindString, Text: resources.Normalize(e.Name), Exact: e.Name})
		}
	}
	for _, e := range d.Entity {
		if e.Role != nil {
			token("entity-role", e.Role.System, e.Role.Code, e.Role.Display)
		}
	}
	for _, e := range d.Entity {
		if e.Type != nil {
			token("entity-type", e.Type.System, e.Type.Code, e.Type.Display)
		}
	}
	if d.Outcome != "" {
		token("outcome", "", d.Outcome, "")
	}
	out = append(out, patients...)
	for _, s := range d.Subtype {
		token("subtype", s.System, s.Code, s.Display)
	}
	token("type", d.Type.System, d.Type.Code, d.Type.Display)
	return out, true
}

// plainRef splits a relative "Type/id" reference; false for anything the
// registry's reference rules must judge.
func plainRef(ref string) (typ, id string, ok bool) {
	typ, id, ok = strings.Cut(ref, "/")
	if !ok || typ == "" || typ[0] < 'A' || typ[0] > 'Z' || id == "" || len(id) > 64 {
		return "", "", false
	}
	for _, c := range []byte(typ) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return "", "", false
		}
	}
	for _, c := range []byte(id) {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return "", "", false
		}
	}
	return typ, id, true
}

// sameEntries reports whether two entry lists hold the same entries, in
// any order.
func sameEntries(a, b []storage.Entry) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(es []storage.Entry) []string {
		out := make([]string, len(es))
		for i, e := range es {
			raw, _ := json.Marshal(e)
			out[i] = string(raw)
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}
