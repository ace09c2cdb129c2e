package subscription

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Channel credentials and patient-limited Subscriptions.
//
// A Subscription's channel.header values (the receiver's credentials) and
// its HMAC secret are stored as written, because delivery needs them, but
// never leave the server as stored: Redact (fhir.Config.Redact) masks
// every header value for every reader, and the secret for everyone but the
// owning client (which needs it to verify signatures, and sees it in the
// answer to its create). A client that writes back what it read sends the
// mask, which the server replaces with the stored value.
//
// R4 puts Subscription in no patient's compartment, so a patient/ scope
// opens none. An app holding only patient/ scopes may still subscribe for
// its own patient: Authorizer grants a patient/Subscription (or
// patient/*) scope read, search and delete of the Subscriptions tagged
// (patientTagSystem) with the token's patient, a tag the server alone
// sets, and create and update, which the observer checks (an update
// only of a Subscription tagged with that patient). Such a Subscription's criteria are matched ANDed
// with the owner's patient compartment (as every owner's read filter),
// so it never hears of another patient.
const (
	masked           = "[masked]"
	patientTagSystem = "http://anodyne-fhir.org/fhir/CodeSystem/subscription-patient"
)

// Redact is the fhir.Config.Redact entry for Subscription.
func (s *Service) Redact(ctx context.Context, res map[string]any) error {
	ch, _ := res["channel"].(map[string]any)
	if ch == nil {
		return nil
	}
	if hs, ok := ch["header"].([]any); ok {
		out := make([]any, 0, len(hs))
		for _, h := range hs {
			v, _ := h.(string)
			name, _, _ := strings.Cut(v, ":")
			out = append(out, strings.TrimSpace(name)+": "+masked)
		}
		ch["header"] = out
	}
	if extString(ch, secretURL) != "" && !s.ownerReads(ctx, ownerOf(res)) {
		setExt(ch, secretURL, map[string]any{"url": secretURL, "valueString": masked})
	}
	return nil
}

// ownerReads: the caller is the Subscription's owner, or authorization
// is off (there is no one to tell apart). With it on, output without a
// Principal (a bulk export job) is not the owner's.
func (s *Service) ownerReads(ctx context.Context, o *owner) bool {
	if _, off := s.cfg.Authorizer.(auth.AllowAll); off || s.cfg.Authorizer == nil {
		return true
	}
	p := auth.FromContext(ctx)
	return p != nil && o != nil && p.ClientID == o.Client
}

// unmask puts the stored values back where a client wrote the masks it
// read; a masked header the previous version does not have is refused.
func unmask(res map[string]any, prev *sub) error {
	ch, _ := res["channel"].(map[string]any)
	if ch == nil {
		return nil
	}
	if extString(ch, secretURL) == masked {
		setExt(ch, secretURL, nil) // the previous secret is kept
	}
	hs, _ := ch["header"].([]any)
	used := map[int]bool{}
	for i, h := range hs {
		v, _ := h.(string)
		name, val, _ := strings.Cut(v, ":")
		if strings.TrimSpace(val) != masked {
			continue
		}
		name = strings.TrimSpace(name)
		found := false
		if prev != nil {
			for j, ph := range prev.Headers {
				pn, _, _ := strings.Cut(ph, ":")
				if !used[j] && strings.EqualFold(strings.TrimSpace(pn), name) {
					hs[i], used[j], found = ph, true, true
					break
				}
			}
		}
		if !found {
			return invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.header", "header %s is masked and the Subscription has no stored value for it: send the value", name)
		}
	}
	return nil
}

// Authorizer wraps the decision point with the patient/ rule for
// Subscriptions (see above); everything else is inner's decision.
func (s *Service) Authorizer(inner auth.Authorizer) auth.Authorizer {
	return patientSubs{inner: inner, s: s}
}

type patientSubs struct {
	inner auth.Authorizer
	s     *Service
}

var letterOf = map[string]byte{fhir.ActionCreate: 'c', fhir.ActionRead: 'r', fhir.ActionUpdate: 'u', fhir.ActionDelete: 'd', fhir.ActionSearch: 's'}

func (a patientSubs) Decide(ctx context.Context, action, typ string) (auth.Decision, error) {
	d, err := a.inner.Decide(ctx, action, typ)
	if err != nil || d.Allowed || typ != "Subscription" {
		return d, err
	}
	p := auth.FromContext(ctx)
	if p == nil || p.Patient == "" || p.ResearchProject != "" || !patientScoped(p, action) {
		return d, nil
	}
	if action == fhir.ActionCreate || action == fhir.ActionUpdate {
		// The body need not carry the tag: the observer sets it, limits the
		// Subscription, and refuses (403) an update of one that is not
		// this patient's, before the Commit.
		return auth.Decision{Allowed: true, Reason: "patient/ Subscription of Patient/" + p.Patient}, nil
	}
	f, err := a.s.patientTag(ctx, p.Patient)
	if err != nil {
		return auth.Decision{}, err
	}
	return auth.Decision{Allowed: true, Filter: f, Reason: "patient/ Subscriptions of Patient/" + p.Patient}, nil
}

// patientScoped: a patient/ scope without a query grants action on
// Subscription.
func patientScoped(p *auth.Principal, action string) bool {
	letter, ok := letterOf[action]
	if !ok {
		return false
	}
	for _, sc := range p.Scopes.Resource {
		if sc.Context == auth.ContextPatient && (sc.Type == "Subscription" || sc.Type == "*") && len(sc.Query) == 0 && strings.IndexByte(sc.Letters, letter) >= 0 {
			return true
		}
	}
	return false
}

// patientLimited reports whether the writer on ctx reaches action on
// Subscription only through the patient/ rule.
func (s *Service) patientLimited(ctx context.Context, action string) (string, bool, error) {
	p := auth.FromContext(ctx)
	if s.cfg.Authorizer == nil || p == nil || p.Patient == "" || !patientScoped(p, action) {
		return "", false, nil
	}
	d, err := s.cfg.Authorizer.Decide(ctx, action, "Subscription")
	if err != nil {
		return "", false, fmt.Errorf("authorizing a Subscription write: %w", err)
	}
	return p.Patient, !d.Allowed, nil
}

func (s *Service) patientTag(ctx context.Context, patient string) (storage.Expr, error) {
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	_, e, err := srv.CompileCriteria(ctx, "Subscription?_tag="+patientTagSystem+"|"+patient)
	if err != nil {
		return nil, fmt.Errorf("compiling the patient tag filter: %w", err)
	}
	return e, nil
}

// setPatientTag replaces the server's patient tag on res (patient "":
// removes it), whatever the client wrote.
func setPatientTag(res map[string]any, patient string) {
	meta, _ := res["meta"].(map[string]any)
	if meta == nil {
		if patient == "" {
			return
		}
		meta = map[string]any{}
		res["meta"] = meta
	}
	tags, _ := meta["tag"].([]any)
	out := make([]any, 0, len(tags)+1)
	for _, t := range tags {
		if tm, ok := t.(map[string]any); ok && tm["system"] == patientTagSystem {
			continue
		}
		out = append(out, t)
	}
	if patient != "" {
		out = append(out, map[string]any{"system": patientTagSystem, "code": patient, "display": "Subscription of a patient/ app for Patient/" + patient})
	}
	if len(out) == 0 {
		delete(meta, "tag")
		return
	}
	meta["tag"] = out
}

// patientScopes keeps the patient/ resource scopes of a grant: what a
// patient-limited owner's Subscription acts with, so that its matching
// and payloads stay in the patient's compartment whatever else the token
// holds.
func patientScopes(sc auth.Scopes) string {
	var parts []string
	for _, r := range sc.Resource {
		if r.Context == auth.ContextPatient {
			parts = append(parts, r.Raw)
		}
	}
	return strings.Join(parts, " ")
}

// patientTagOf is the server's patient tag on a stored Subscription.
func patientTagOf(res map[string]any) string {
	meta, _ := res["meta"].(map[string]any)
	tags, _ := meta["tag"].([]any)
	for _, t := range tags {
		if tm, ok := t.(map[string]any); ok && tm["system"] == patientTagSystem {
			return stringAt(tm, "code")
		}
	}
	return ""
}
