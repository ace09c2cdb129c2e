package cdshooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Feedback (CDS Hooks 1.0/2.0, POST {service}/feedback): the CDS client
// says what the user did with a card, accepted (with the suggestions
// taken) or overridden (with a reason). The service keeps, for each card
// it returns, a record in the KV store (cardKey, for cardRecordTTL) with
// the client it went to and the patient; feedback is accepted only from
// that client, about its own cards and their suggestions.
//
// Each item becomes an AuditEvent (type cds-hooks#feedback, subtype the
// outcome, the card and the patient as entities) written through the
// FHIR server's commit path (fhir.Server.PutOwned) when the service runs
// in the server, else stored in the KV store under feedbackKey as the
// same JSON. The AuditEvent's id is derived from the item (card,
// outcome, timestamp, suggestions), so a client that retries a request
// after a failure part-way writes nothing twice; the whole request is
// checked before anything is written.

const (
	cardRecordTTL   = 30 * 24 * time.Hour
	cardKeyPrefix   = "cds-hooks/card/"
	feedbackKeyPref = "cds-hooks/feedback/"
	maxFeedback     = 100
	// EventSystem codes Anodyne's CDS Hooks events (AuditEvent.type and subtype).
	EventSystem = "http://anodyne-fhir.org/fhir/CodeSystem/cds-hooks-event"
)

// feedbackNamespace derives AuditEvent ids from feedback items.
var feedbackNamespace = uuid.MustParse("6f1c1a52-4a57-4b89-9a36-3f0e7c1d2b90")

// cardRecord is what the service remembers of a card it returned. Its
// JSON encoding is pinned (TestCardRecordEncoding): version 1.
type cardRecord struct {
	V            int      `json:"v"`
	Client       string   `json:"client"`
	Base         string   `json:"base"` // the service root (BaseURL/cds-services) that returned it
	Service      string   `json:"service"`
	Hook         string   `json:"hook"`
	HookInstance string   `json:"hookInstance"`
	Patient      string   `json:"patient"`
	User         string   `json:"user,omitempty"`
	Encounter    string   `json:"encounter,omitempty"`
	Summary      string   `json:"summary"`
	Suggestions  []string `json:"suggestions,omitempty"`
	// OverrideReasons are the card's, as "system|code".
	OverrideReasons []string `json:"overrideReasons,omitempty"`
	Issued          string   `json:"issued"` // RFC 3339, UTC
}

// recordCards remembers the cards of an answer for their feedback. A
// failure is logged, not answered: the cards matter more than a later
// feedback on them.
func (s *Service) recordCards(ctx context.Context, service, client string, req *Request, oc *orderContext, cards []Card) {
	kv := s.kv()
	if kv == nil {
		return
	}
	for _, c := range cards {
		if c.UUID == "" {
			continue
		}
		rec := cardRecord{V: 1, Client: client, Base: s.base, Service: service, Hook: req.Hook, HookInstance: req.HookInstance, Patient: oc.PatientID,
			User: oc.UserID, Encounter: oc.EncounterID, Summary: c.Summary, Issued: s.cfg.Now().UTC().Format(time.RFC3339)}
		for _, sg := range c.Suggestions {
			rec.Suggestions = append(rec.Suggestions, sg.UUID)
		}
		for _, o := range c.OverrideReasons {
			rec.OverrideReasons = append(rec.OverrideReasons, o.System+"|"+o.Code)
		}
		raw, err := json.Marshal(rec)
		if err == nil {
			err = kv.Put(ctx, cardKeyPrefix+c.UUID, raw, cardRecordTTL)
		}
		if err != nil {
			s.log.ErrorContext(ctx, "CDS card not recorded: feedback on it will be refused", "card", c.UUID, "err", err)
		}
	}
}

func (s *Service) kv() storage.KV {
	if s.cfg.KV != nil {
		return s.cfg.KV
	}
	kv, _ := s.cfg.Replay.(storage.KV)
	return kv
}

// Coding is a FHIR Coding as CDS Hooks carries it.
type Coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

type feedbackItem struct {
	Card                string `json:"card"`
	Outcome             string `json:"outcome"`
	AcceptedSuggestions []struct {
		ID string `json:"id"`
	} `json:"acceptedSuggestions"`
	OverrideReason *struct {
		Reason      *Coding `json:"reason"`
		UserComment string  `json:"userComment"`
	} `json:"overrideReason"`
	OutcomeTimestamp string `json:"outcomeTimestamp"`
}

func (s *Service) feedback(c echo.Context) error {
	s.devHeader(c)
	ctx := c.Request().Context()
	id := c.Param("id")
	known := false
	for _, d := range s.services {
		known = known || d.ID == id
	}
	if !known {
		return s.fail(c, &callError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("no CDS service %q (see %s)", id, s.base)})
	}
	client, err := s.authenticate(c, s.base+"/"+id+"/feedback", s.base+"/"+id, s.base)
	if err != nil {
		return s.fail(c, err)
	}
	kv := s.kv()
	if kv == nil {
		return s.fail(c, &callError{Status: http.StatusNotImplemented, Code: "not_implemented", Message: "this CDS service has no store to record feedback in"})
	}
	body, err := s.readBody(c)
	if err != nil {
		return s.fail(c, err)
	}
	items, err := decodeFeedback(body)
	if err != nil {
		return s.fail(c, err)
	}
	events := make([]map[string]any, len(items))
	for i, it := range items {
		rec, err := s.cardOf(ctx, kv, it.Card, id, client)
		if err != nil {
			return s.fail(c, err)
		}
		for _, a := range it.AcceptedSuggestions {
			if !contains(rec.Suggestions, a.ID) {
				return s.fail(c, badRequest("feedback[%d]: suggestion %q is not one of card %s", i, a.ID, it.Card))
			}
		}
		if r := it.OverrideReason; r != nil && r.Reason != nil && !contains(rec.OverrideReasons, r.Reason.System+"|"+r.Reason.Code) {
			return s.fail(c, badRequest("feedback[%d]: override reason %s|%s is not one of card %s's overrideReasons", i, r.Reason.System, r.Reason.Code, it.Card))
		}
		events[i] = s.feedbackEvent(it, rec)
	}
	for _, ev := range events {
		if err := s.storeFeedback(ctx, kv, ev); err != nil {
			return s.fail(c, fmt.Errorf("recording CDS feedback %s: %w", ev["id"], err))
		}
	}
	s.log.InfoContext(ctx, "CDS Hooks feedback", "service", id, "client", client, "items", len(items))
	return c.JSON(http.StatusOK, map[string]any{})
}

func decodeFeedback(body []byte) ([]feedbackItem, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var fr struct {
		Feedback []feedbackItem `json:"feedback"`
	}
	if err := dec.Decode(&fr); err != nil {
		return nil, badRequest("the body is not a CDS Hooks feedback request: %v", err)
	}
	if dec.More() {
		return nil, badRequest("data after the feedback object")
	}
	if len(fr.Feedback) == 0 || len(fr.Feedback) > maxFeedback {
		return nil, badRequest("feedback must hold 1 to %d items, not %d", maxFeedback, len(fr.Feedback))
	}
	for i, it := range fr.Feedback {
		if it.Card == "" {
			return nil, badRequest("feedback[%d].card is required", i)
		}
		if _, err := time.Parse(time.RFC3339Nano, it.OutcomeTimestamp); err != nil {
			return nil, badRequest("feedback[%d].outcomeTimestamp %q is not an ISO 8601 instant with a time zone", i, it.OutcomeTimestamp)
		}
		switch it.Outcome {
		case "accepted":
			if len(it.AcceptedSuggestions) == 0 {
				return nil, badRequest("feedback[%d]: an accepted outcome lists its acceptedSuggestions", i)
			}
			if it.OverrideReason != nil {
				return nil, badRequest("feedback[%d]: an accepted outcome has no overrideReason", i)
			}
			for j, a := range it.AcceptedSuggestions {
				if a.ID == "" {
					return nil, badRequest("feedback[%d].acceptedSuggestions[%d].id is required", i, j)
				}
			}
		case "overridden":
			if len(it.AcceptedSuggestions) > 0 {
				return nil, badRequest("feedback[%d]: an overridden card has no acceptedSuggestions", i)
			}
			if r := it.OverrideReason; r != nil && r.Reason != nil && r.Reason.Code == "" {
				return nil, badRequest("feedback[%d].overrideReason.reason has no code", i)
			}
		default:
			return nil, badRequest("feedback[%d].outcome must be accepted or overridden, not %q", i, it.Outcome)
		}
	}
	return fr.Feedback, nil
}

// cardOf returns the record of a card this service gave client; another
// client's card, or another service's sharing the store, is as unknown as
// one never issued.
func (s *Service) cardOf(ctx context.Context, kv storage.KV, card, service, client string) (*cardRecord, error) {
	notFound := &callError{Status: http.StatusNotFound, Code: "not_found", Message: fmt.Sprintf("card %q is not one this service returned to this client (or its record expired after %v)", card, cardRecordTTL)}
	if strings.ContainsAny(card, "/") {
		return nil, notFound
	}
	raw, err := kv.Get(ctx, cardKeyPrefix+card)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading the record of card %s: %w", card, err)
	}
	var rec cardRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.V != 1 {
		return nil, fmt.Errorf("the record of card %s is not a version 1 card record: %v", card, err)
	}
	if rec.Client != client || rec.Service != service || rec.Base != s.base {
		return nil, notFound
	}
	return &rec, nil
}

// feedbackEvent is the AuditEvent of one feedback item.
func (s *Service) feedbackEvent(it feedbackItem, rec *cardRecord) map[string]any {
	var ids []string
	for _, a := range it.AcceptedSuggestions {
		ids = append(ids, a.ID)
	}
	id := uuid.NewSHA1(feedbackNamespace, []byte(strings.Join([]string{it.Card, it.Outcome, it.OutcomeTimestamp, strings.Join(ids, ",")}, "|"))).String()
	detail := []any{
		map[string]any{"type": "outcome", "valueString": it.Outcome},
		map[string]any{"type": "outcomeTimestamp", "valueString": it.OutcomeTimestamp},
		map[string]any{"type": "hook", "valueString": rec.Hook},
		map[string]any{"type": "hookInstance", "valueString": rec.HookInstance},
		map[string]any{"type": "summary", "valueString": rec.Summary},
	}
	for _, x := range ids {
		detail = append(detail, map[string]any{"type": "acceptedSuggestion", "valueString": x})
	}
	if r := it.OverrideReason; r != nil {
		if r.Reason != nil {
			detail = append(detail, map[string]any{"type": "overrideReason", "valueString": r.Reason.System + "|" + r.Reason.Code})
		}
		if r.UserComment != "" {
			detail = append(detail, map[string]any{"type": "userComment", "valueString": r.UserComment})
		}
	}
	clientAgent := map[string]any{
		"type":      map[string]any{"coding": []any{map[string]any{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}}},
		"who":       map[string]any{"identifier": map[string]any{"system": "urn:ietf:rfc:3986", "value": rec.Client}, "display": "CDS client " + rec.Client},
		"requestor": false,
	}
	agents := []any{clientAgent}
	if ref := userRef(rec.User); ref != "" {
		agents = []any{map[string]any{"who": map[string]any{"reference": ref}, "requestor": true}, clientAgent}
	} else {
		clientAgent["requestor"] = true
	}
	ev := map[string]any{
		"resourceType": "AuditEvent",
		"id":           id,
		"type":         map[string]any{"system": EventSystem, "code": "feedback", "display": "CDS Hooks card feedback"},
		"subtype":      []any{map[string]any{"system": EventSystem, "code": it.Outcome}},
		"action":       "E",
		"period":       map[string]any{"start": it.OutcomeTimestamp, "end": it.OutcomeTimestamp},
		"recorded":     s.cfg.Now().UTC().Format(time.RFC3339Nano),
		"outcome":      "0",
		"agent":        agents,
		"source": map[string]any{
			"site":     s.base + "/" + rec.Service,
			"observer": map[string]any{"display": "Anodyne CDS Hooks service " + rec.Service},
		},
		"entity": []any{
			map[string]any{
				"what":   map[string]any{"identifier": map[string]any{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:" + it.Card}, "display": "CDS Hooks card"},
				"type":   map[string]any{"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
				"detail": detail,
			},
			map[string]any{
				"what": map[string]any{"reference": "Patient/" + rec.Patient},
				"type": map[string]any{"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
				"role": map[string]any{"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"},
			},
		},
	}
	return ev
}

// userRef is context.userId when it is a reference to a person.
func userRef(u string) string {
	typ, id, ok := strings.Cut(u, "/")
	if !ok || id == "" || strings.ContainsAny(id, "/?#") {
		return ""
	}
	switch typ {
	case "Practitioner", "PractitionerRole", "Patient", "RelatedPerson":
		return u
	}
	return ""
}

// storeFeedback writes one AuditEvent; one already written (a retry) is done.
func (s *Service) storeFeedback(ctx context.Context, kv storage.KV, ev map[string]any) error {
	if s.cfg.FHIR != nil {
		_, err := s.cfg.FHIR.PutOwned(ctx, ev, 0)
		if errors.Is(err, storage.ErrVersionConflict) {
			return nil
		}
		return err
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = kv.PutIfAbsent(ctx, feedbackKeyPref+ev["id"].(string), raw, 0)
	return err
}
