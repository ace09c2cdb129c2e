package auth

import (
	"context"
	"encoding/base64"
	"time"
)

// AuditEvent is one request that touched patient data, following the
// Basic Audit Log Patterns (BALP) idea: who (client and user), what
// (interaction, type, ids, patient), when, and the outcome. The FHIR layer
// builds one per request and hands it to an AuditSink, which stores it as
// an R4 AuditEvent resource (see Resource) in the same store as the data.
type AuditEvent struct {
	Time        time.Time
	Interaction string // FHIR interaction: read, vread, search-type, create, transaction...
	Action      string // C, R, U, D, E (R4 AuditEvent.action)
	Type        string // resource type, may be empty for system interactions
	IDs         []string
	// Refs names touched resources as "Type/id" when they may be of
	// several types (the writes of one Commit).
	Refs     []string
	Patients []string // ids of the patients whose data was touched
	Query    string   // the query string of a search, without the token
	Outcome  int      // HTTP status
	ClientID string
	User     string // fhirUser, or the subject when there is none
	// ResearchProject is the project of a research client: the event then
	// carries purposeOfUse HRESCH (research) and names the project.
	ResearchProject string
	Source          string // our FHIR base URL (the observer)
	RemoteAddr      string
	// Category, when its Type is set, makes the event a security event
	// (an account lock-out) instead of a RESTful operation: it replaces
	// AuditEvent.type and the interaction subtype.
	Category AuditCategory
	// Description is AuditEvent.outcomeDesc.
	Description string
}

// AuditCategory is the type and subtypes of a security AuditEvent.
type AuditCategory struct {
	Type     AuditCoding
	Subtypes []AuditCoding
}

// AuditCoding is one Coding of an AuditEvent's type or subtype.
type AuditCoding struct{ System, Code, Display string }

func (c AuditCoding) coding() map[string]any {
	m := map[string]any{"system": c.System, "code": c.Code}
	if c.Display != "" {
		m["display"] = c.Display
	}
	return m
}

// ResearchProjectSystem names research projects in AuditEvent entities.
const ResearchProjectSystem = "http://anodyne-fhir.org/fhir/research-project"

// AuditSink records audit events durably. The FHIR layer implements it.
type AuditSink interface {
	RecordAudit(ctx context.Context, ev AuditEvent) error
}

// NewAuditEvent fills the who of an AuditEvent from the Principal on ctx.
func NewAuditEvent(ctx context.Context, interaction, action, typ string) AuditEvent {
	ev := AuditEvent{Time: time.Now().UTC(), Interaction: interaction, Action: action, Type: typ}
	if p := FromContext(ctx); p != nil {
		ev.ClientID = p.ClientID
		ev.User = p.FHIRUser
		if ev.User == "" && p.Subject != p.ClientID {
			ev.User = p.Subject
		}
		if p.Patient != "" {
			ev.Patients = append(ev.Patients, p.Patient)
		}
		ev.ResearchProject = p.ResearchProject
	}
	return ev
}

// Resource renders the event as an R4 AuditEvent resource (BALP style:
// type rest, subtype the interaction, agents for client and user, entities
// for the patient and the resources).
func (ev AuditEvent) Resource() map[string]any {
	outcome := "0"
	switch {
	case ev.Outcome >= 500:
		outcome = "8"
	case ev.Outcome >= 400:
		outcome = "4"
	}
	agents := []any{}
	if ev.ClientID != "" {
		agents = append(agents, map[string]any{
			"type":      map[string]any{"coding": []any{map[string]any{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}}},
			"who":       map[string]any{"identifier": map[string]any{"system": "urn:ietf:params:oauth:client-id", "value": ev.ClientID}},
			"requestor": ev.User == "",
		})
	}
	if ev.User != "" {
		who := map[string]any{"display": ev.User}
		if isReference(ev.User) {
			who = map[string]any{"reference": ev.User}
		}
		agents = append(agents, map[string]any{
			"type":      map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}}},
			"who":       who,
			"requestor": true,
		})
	}
	if len(agents) == 0 {
		agents = append(agents, map[string]any{"who": map[string]any{"display": "anonymous"}, "requestor": true})
	}
	if ev.RemoteAddr != "" {
		agents[0].(map[string]any)["network"] = map[string]any{"address": ev.RemoteAddr, "type": "2"}
	}
	var purpose []any
	if ev.ResearchProject != "" {
		purpose = []any{map[string]any{"coding": []any{map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH", "display": "healthcare research",
		}}}}
		agents[0].(map[string]any)["purposeOfUse"] = purpose
	}
	var entities []any
	for _, p := range ev.Patients {
		entities = append(entities, map[string]any{
			"what": map[string]any{"reference": "Patient/" + p},
			"role": map[string]any{"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
		})
	}
	for _, id := range ev.IDs {
		entities = append(entities, map[string]any{
			"what": map[string]any{"reference": ev.Type + "/" + id},
			"role": map[string]any{"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"},
		})
	}
	for _, ref := range ev.Refs {
		entities = append(entities, map[string]any{
			"what": map[string]any{"reference": ref},
			"role": map[string]any{"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4", "display": "Domain Resource"},
		})
	}
	if ev.ResearchProject != "" {
		entities = append(entities, map[string]any{
			"what": map[string]any{"identifier": map[string]any{"system": ResearchProjectSystem, "value": ev.ResearchProject}},
			"type": map[string]any{"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "4", "display": "Other"},
			"name": "research project",
		})
	}
	if ev.Query != "" {
		entities = append(entities, map[string]any{
			"type":  map[string]any{"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
			"role":  map[string]any{"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
			"query": encodeB64(ev.Query),
		})
	}
	res := map[string]any{
		"resourceType": "AuditEvent",
		"type":         map[string]any{"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
		"subtype":      []any{map[string]any{"system": "http://hl7.org/fhir/restful-interaction", "code": ev.Interaction}},
		"action":       ev.Action,
		"recorded":     ev.Time.UTC().Format(time.RFC3339Nano),
		"outcome":      outcome,
		"agent":        agents,
		"source":       map[string]any{"observer": map[string]any{"display": ev.Source}},
	}
	if len(entities) > 0 {
		res["entity"] = entities
	}
	if ev.Category.Type.Code != "" {
		res["type"] = ev.Category.Type.coding()
		subs := make([]any, len(ev.Category.Subtypes))
		for i, c := range ev.Category.Subtypes {
			subs[i] = c.coding()
		}
		res["subtype"] = subs
		if len(subs) == 0 {
			delete(res, "subtype")
		}
	}
	if ev.Description != "" {
		res["outcomeDesc"] = ev.Description
	}
	if purpose != nil {
		res["purposeOfEvent"] = purpose
	}
	return res
}

func isReference(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return i > 0 && i < len(s)-1
		}
	}
	return false
}

func encodeB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
