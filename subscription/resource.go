package subscription

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
)

// Extensions the server manages on Subscription resources.
const (
	// ownerURL records who owns the Subscription: client, scope, patient
	// (sub-extensions). Always set by the server from the writer's Principal.
	ownerURL = "http://anodyne-fhir.org/fhir/StructureDefinition/subscription-owner"
	// secretURL on Subscription.channel holds the HMAC secret (valueString).
	secretURL = "http://anodyne-fhir.org/fhir/StructureDefinition/subscription-secret"
)

// R4 Subscription.status values.
const (
	statusRequested = "requested"
	statusActive    = "active"
	statusError     = "error"
	statusOff       = "off"
)

const (
	payloadFHIRJSON = "application/fhir+json"
	minSecret       = 16
)

// owner is who a Subscription acts for: the parts of the writer's
// Principal that auth.Policy.Decide and the output filter judge by.
type owner struct {
	Client          string
	Scope           string
	Patient         string
	FHIRUser        string
	ResearchProject string
	ResearchAccess  string
}

// ownerParts are the sub-extensions of ownerURL (pinned: stored in
// resources; TestOwnerExtension).
var ownerParts = []struct {
	url string
	get func(*owner) *string
}{
	{"client", func(o *owner) *string { return &o.Client }},
	{"scope", func(o *owner) *string { return &o.Scope }},
	{"patient", func(o *owner) *string { return &o.Patient }},
	{"fhirUser", func(o *owner) *string { return &o.FHIRUser }},
	{"researchProject", func(o *owner) *string { return &o.ResearchProject }},
	{"researchAccess", func(o *owner) *string { return &o.ResearchAccess }},
}

// principal rebuilds the grant the owner had when writing the Subscription.
func (o owner) principal() *auth.Principal {
	return &auth.Principal{
		ClientID: o.Client, Subject: o.Client, Scopes: auth.ParseScopes(o.Scope), Patient: o.Patient,
		FHIRUser: o.FHIRUser, ResearchProject: o.ResearchProject, ResearchAccess: o.ResearchAccess,
	}
}

// sub is the parts of a Subscription the service uses.
type sub struct {
	ID       string
	Version  int64
	Status   string
	Criteria string
	Type     string // resource type of the criteria
	Endpoint string
	Payload  string
	Headers  []string
	Secret   string
	Channel  string   // channel.type
	Topic    string   // backport: the topic's canonical URL (criteria)
	Filters  []string // backport-filter-criteria
	Content  string   // backport-payload-content ("" for an R4 Subscription)
	// Heartbeat is backport-heartbeat-period: the longest silence before
	// a heartbeat notification (0: none).
	Heartbeat time.Duration
	// Timeout is backport-timeout: how long one notification attempt may
	// take (0: Config.Timeout; never more than it).
	Timeout time.Duration
	// MaxCount is backport-max-count: the most events one notification
	// may carry (0: absent, one per notification).
	MaxCount int64
	Error    string    // Subscription.error
	End      time.Time // zero: none
	Owner    *owner    // nil: written with authorization off
	// Patient is the server's patient tag: a patient/ app's Subscription.
	Patient string
}

func stringAt(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// parseSub reads a stored Subscription.
func parseSub(res map[string]any, version int64) (*sub, error) {
	s := &sub{ID: stringAt(res, "id"), Version: version, Status: stringAt(res, "status"), Criteria: stringAt(res, "criteria")}
	s.Type, _, _ = strings.Cut(s.Criteria, "?")
	if isTopic(s.Criteria) {
		s.Topic, s.Type = s.Criteria, ""
		if ce, ok := res["_criteria"].(map[string]any); ok {
			for _, e := range extensions(ce) {
				if em, ok := e.(map[string]any); ok && em["url"] == filterCriteriaURL {
					s.Filters = append(s.Filters, stringAt(em, "valueString"))
				}
			}
		}
	}
	if end := stringAt(res, "end"); end != "" {
		t, err := parseInstant(end)
		if err != nil {
			return nil, fmt.Errorf("Subscription.end: %w", err)
		}
		s.End = t
	}
	ch, _ := res["channel"].(map[string]any)
	if ch == nil {
		return nil, fmt.Errorf("Subscription.channel is required")
	}
	s.Channel = stringAt(ch, "type")
	s.Error = stringAt(res, "error")
	s.Endpoint = stringAt(ch, "endpoint")
	s.Payload = stringAt(ch, "payload")
	if pe, ok := ch["_payload"].(map[string]any); ok {
		for _, e := range extensions(pe) {
			if em, ok := e.(map[string]any); ok && em["url"] == payloadContentURL {
				s.Content = stringAt(em, "valueCode")
			}
		}
	}
	if s.Topic != "" && s.Content == "" {
		s.Content = contentEmpty
	}
	if hs, ok := ch["header"].([]any); ok {
		for _, h := range hs {
			if v, ok := h.(string); ok {
				s.Headers = append(s.Headers, v)
			}
		}
	}
	s.Secret = extString(ch, secretURL)
	for _, e := range extensions(ch) {
		if em, ok := e.(map[string]any); ok && em["url"] == heartbeatURL {
			n, err := positiveInt(em["valueUnsignedInt"])
			if err != nil {
				return nil, fmt.Errorf("backport-heartbeat-period: %w", err)
			}
			s.Heartbeat = time.Duration(n) * time.Second
		}
		if em, ok := e.(map[string]any); ok && em["url"] == timeoutURL {
			n, err := positiveInt(em["valueUnsignedInt"])
			if err != nil {
				return nil, fmt.Errorf("backport-timeout: %w", err)
			}
			s.Timeout = time.Duration(n) * time.Second
		}
		if em, ok := e.(map[string]any); ok && em["url"] == maxCountURL {
			n, err := jsonInt(em["valuePositiveInt"])
			if err != nil || n < 1 {
				return nil, fmt.Errorf("backport-max-count needs a valuePositiveInt of at least 1 (%v)", em["valuePositiveInt"])
			}
			s.MaxCount = n
		}
	}
	s.Owner = ownerOf(res)
	s.Patient = patientTagOf(res)
	return s, nil
}

// positiveInt reads a JSON integer (decoded with UseNumber) of at least 1
// and at most a day of seconds.
func positiveInt(v any) (int64, error) {
	if _, ok := v.(string); v == nil || ok {
		return 0, fmt.Errorf("needs valueUnsignedInt")
	}
	n, err := jsonInt(v)
	if err != nil {
		return 0, err
	}
	if n < 1 || n > 86400 {
		return 0, fmt.Errorf("%d is not 1 to 86400 seconds", n)
	}
	return n, nil
}

// jsonInt reads a JSON integer (decoded with UseNumber, or as float64).
func jsonInt(v any) (int64, error) {
	switch x := v.(type) {
	case json.Number:
		i, err := x.Int64()
		if err != nil {
			return 0, fmt.Errorf("%v is not an integer", x)
		}
		return i, nil
	case float64:
		n := int64(x)
		if float64(n) != x {
			return 0, fmt.Errorf("%v is not an integer", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%v is not an integer", v)
}

func parseInstant(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an instant", v)
}

func extensions(m map[string]any) []any {
	ext, _ := m["extension"].([]any)
	return ext
}

// extString is the valueString of the extension url on m.
func extString(m map[string]any, url string) string {
	for _, e := range extensions(m) {
		if em, ok := e.(map[string]any); ok && em["url"] == url {
			return stringAt(em, "valueString")
		}
	}
	return ""
}

// setExt replaces the extensions url on m with ext (nil: removes them).
func setExt(m map[string]any, url string, ext map[string]any) {
	var out []any
	for _, e := range extensions(m) {
		if em, ok := e.(map[string]any); ok && em["url"] == url {
			continue
		}
		out = append(out, e)
	}
	if ext != nil {
		out = append(out, ext)
	}
	if len(out) == 0 {
		delete(m, "extension")
		return
	}
	m["extension"] = out
}

func ownerOf(res map[string]any) *owner {
	for _, e := range extensions(res) {
		em, ok := e.(map[string]any)
		if !ok || em["url"] != ownerURL {
			continue
		}
		o := &owner{}
		for _, p := range extensions(em) {
			pm, _ := p.(map[string]any)
			for _, part := range ownerParts {
				if stringAt(pm, "url") == part.url {
					*part.get(o) = stringAt(pm, "valueString")
				}
			}
		}
		return o
	}
	return nil
}

func ownerExt(o *owner) map[string]any {
	var parts []any
	for _, part := range ownerParts {
		if v := *part.get(o); v != "" {
			parts = append(parts, map[string]any{"url": part.url, "valueString": v})
		}
	}
	return map[string]any{"url": ownerURL, "extension": parts}
}

func ownerFrom(p *auth.Principal) *owner {
	if p == nil {
		return nil
	}
	return &owner{
		Client: p.ClientID, Scope: p.Scopes.String(), Patient: p.Patient, FHIRUser: p.FHIRUser,
		ResearchProject: p.ResearchProject, ResearchAccess: p.ResearchAccess,
	}
}

func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a subscription secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func decode(raw []byte) (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decoding stored resource: %w", err)
	}
	return m, nil
}
