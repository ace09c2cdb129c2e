package cdshooks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Hooks the opioid-mme service answers.
const (
	HookOrderSelect = "order-select"
	HookOrderSign   = "order-sign"
)

// Request is a CDS Hooks service request (CDS Hooks 1.0 and 2.0 share
// these fields).
type Request struct {
	Hook              string                     `json:"hook"`
	HookInstance      string                     `json:"hookInstance"`
	FHIRServer        string                     `json:"fhirServer,omitempty"`
	FHIRAuthorization *FHIRAuthorization         `json:"fhirAuthorization,omitempty"`
	Context           map[string]any             `json:"context"`
	Prefetch          map[string]json.RawMessage `json:"prefetch,omitempty"`
}

// FHIRAuthorization is the access token the CDS client hands the service
// for its FHIR server.
type FHIRAuthorization struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
	Subject     string `json:"subject"`
	Patient     string `json:"patient,omitempty"` // CDS Hooks 2.0
}

// orderContext is the context of order-select and order-sign.
type orderContext struct {
	UserID      string
	PatientID   string
	EncounterID string
	Selections  []string       // order-select: "MedicationRequest/id" of the selected drafts
	Drafts      map[string]any // the draftOrders Bundle
}

// decodeRequest parses and checks a request body; a *callError is the
// client's 400.
func decodeRequest(body []byte, hooks []string) (*Request, *orderContext, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, nil, badRequest("the body is not a CDS Hooks request: %v", err)
	}
	if dec.More() {
		return nil, nil, badRequest("data after the request object")
	}
	if !contains(hooks, req.Hook) {
		return nil, nil, badRequest("hook %q is not one this service answers (%s)", req.Hook, strings.Join(hooks, ", "))
	}
	if req.HookInstance == "" {
		return nil, nil, badRequest("hookInstance is required")
	}
	if req.FHIRServer != "" {
		u, err := url.Parse(req.FHIRServer)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, nil, badRequest("fhirServer %q is not an absolute http(s) URL", req.FHIRServer)
		}
	}
	if a := req.FHIRAuthorization; a != nil {
		if req.FHIRServer == "" {
			return nil, nil, badRequest("fhirAuthorization without fhirServer")
		}
		if a.AccessToken == "" || !strings.EqualFold(a.TokenType, "Bearer") {
			return nil, nil, badRequest("fhirAuthorization needs an access_token and token_type Bearer")
		}
	}
	if req.Context == nil {
		return nil, nil, badRequest("context is required")
	}
	oc := &orderContext{}
	oc.UserID, _ = req.Context["userId"].(string)
	oc.PatientID, _ = req.Context["patientId"].(string)
	oc.EncounterID, _ = req.Context["encounterId"].(string)
	if oc.PatientID == "" {
		return nil, nil, badRequest("context.patientId is required")
	}
	if strings.ContainsAny(oc.PatientID, "/?#") {
		return nil, nil, badRequest("context.patientId %q is not a logical id", oc.PatientID)
	}
	if a := req.FHIRAuthorization; a != nil && a.Patient != "" && a.Patient != oc.PatientID {
		// CDS Hooks 2.0: fhirAuthorization.patient is the patient the
		// token is bound to; a request about another one is malformed.
		return nil, nil, badRequest("fhirAuthorization.patient %q is not context.patientId %q", a.Patient, oc.PatientID)
	}
	drafts, ok := req.Context["draftOrders"].(map[string]any)
	if !ok || drafts["resourceType"] != "Bundle" {
		return nil, nil, badRequest("context.draftOrders must be a Bundle of the draft orders")
	}
	if entries, present := drafts["entry"]; present {
		if _, ok := entries.([]any); !ok {
			return nil, nil, badRequest("context.draftOrders.entry must be an array")
		}
	}
	oc.Drafts = drafts
	if req.Hook == HookOrderSelect {
		sel, ok := req.Context["selections"].([]any)
		if !ok || len(sel) == 0 {
			return nil, nil, badRequest("order-select needs context.selections")
		}
		for _, s := range sel {
			str, ok := s.(string)
			if !ok || str == "" {
				return nil, nil, badRequest("context.selections must be strings")
			}
			oc.Selections = append(oc.Selections, str)
		}
	}
	return &req, oc, nil
}

// prefetched returns the prefetch value of key: ok false when the client
// did not prefetch it (absent or null: the service fetches it itself).
// A value that is neither a resource nor null is a 400.
func (r *Request) prefetched(key string) (map[string]any, bool, error) {
	raw, present := r.Prefetch[key]
	if !present || len(raw) == 0 || string(raw) == "null" {
		return nil, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, false, badRequest("prefetch %q is not a FHIR resource: %v", key, err)
	}
	if _, ok := m["resourceType"].(string); !ok {
		return nil, false, badRequest("prefetch %q has no resourceType", key)
	}
	// CDS Hooks 2.0: a client that failed to prefetch may send the
	// OperationOutcome it got; the service then fetches itself.
	if m["resourceType"] == "OperationOutcome" {
		return nil, false, nil
	}
	return m, true, nil
}

// bundleResources returns the resources of a Bundle's entries.
func bundleResources(b map[string]any) []map[string]any {
	entries, _ := b["entry"].([]any)
	var out []map[string]any
	for _, e := range entries {
		em, _ := e.(map[string]any)
		if res, ok := em["resource"].(map[string]any); ok {
			out = append(out, res)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// callError is an answer other than 200: status and a JSON body.
type callError struct {
	Status  int
	Code    string
	Message string
}

func (e *callError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func badRequest(format string, args ...any) error {
	return &callError{Status: 400, Code: "bad_request", Message: fmt.Sprintf(format, args...)}
}

func preconditionFailed(format string, args ...any) error {
	return &callError{Status: 412, Code: "prefetch_required", Message: fmt.Sprintf(format, args...)}
}
