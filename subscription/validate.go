package subscription

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/conformance"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// reservedHeaders are set by the delivery itself; a channel.header naming
// one is refused so that a Subscription cannot forge a signature or the
// request's framing.
var reservedHeaders = map[string]bool{
	HeaderEventID: true, HeaderSubscription: true, HeaderSignature: true,
	"Content-Type": true, "Content-Length": true, "Host": true, "Transfer-Encoding": true, "Connection": true,
}

func invalid(status int, code, expression, format string, args ...any) error {
	return &fhir.Error{Status: status, Issues: []conformance.Issue{{
		Severity: "error", Code: code, Diagnostics: fmt.Sprintf(format, args...), Expression: expression,
	}}}
}

// observeSubscription checks a Subscription write and completes it: the
// owner from the writer's Principal, the secret, and the status the
// server moves it to (requested → active). A Subscription that cannot be
// served refuses the write (422, 403), so that what is stored is what
// will be delivered.
func (s *Service) observeSubscription(ctx context.Context, cs *fhir.CommitSet, i int) error {
	w := cs.Write(i)
	if w.Deleted {
		s.reg.observed(w.ID, w.VersionID, nil)
		return nil
	}
	res, err := decode(w.JSON)
	if err != nil {
		return err
	}
	if ownedWrite(ctx) {
		sb, err := parseSub(res, w.VersionID)
		if err != nil {
			return err
		}
		a, err := s.compile(ctx, sb)
		if err != nil {
			return fmt.Errorf("subscription: own write of Subscription/%s: %w", w.ID, err)
		}
		s.reg.observed(w.ID, w.VersionID, a)
		return nil
	}
	var prev *sub
	if w.ExpectVersion > 0 {
		rec, err := cs.Backend().Read(ctx, "Subscription", w.ID)
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return fmt.Errorf("reading Subscription/%s: %w", w.ID, err)
		case !rec.Deleted:
			pres, err := decode(rec.JSON)
			if err != nil {
				return err
			}
			if prev, err = parseSub(pres, rec.VersionID); err != nil {
				prev = nil // an unreadable old version has nothing to keep
			}
		}
	}
	p := auth.FromContext(ctx)
	own := ownerFrom(p)
	if prev != nil && prev.Owner != nil {
		if own == nil {
			own = prev.Owner // an operator's write keeps the owner
		} else if own.Client != prev.Owner.Client {
			return invalid(http.StatusForbidden, "forbidden", "Subscription", "Subscription/%s belongs to another client", w.ID)
		}
	}
	action := fhir.ActionCreate
	if prev != nil {
		action = fhir.ActionUpdate
	}
	patient, limited, err := s.patientLimited(ctx, action)
	if err != nil {
		return err
	}
	if limited && prev != nil && prev.Patient != patient {
		return invalid(http.StatusForbidden, "forbidden", "Subscription", "Subscription/%s is not a Subscription of Patient/%s", w.ID, patient)
	}
	switch {
	case limited:
		// A patient/ app's Subscription acts with its patient/ scopes only.
		own.Scope = patientScopes(p.Scopes)
	case prev != nil && prev.Owner != nil && (own == prev.Owner || own.Client == prev.Owner.Client):
		patient = prev.Patient // the owner (or an operator) keeps what it was
		if patient != "" {
			own.Scope = prev.Owner.Scope
		}
	default:
		patient = ""
	}
	setPatientTag(res, patient) // never the client's word
	setExt(res, ownerURL, nil)  // never the client's word
	if own != nil {
		setExt(res, ownerURL, ownerExt(own))
	}
	if err := unmask(res, prev); err != nil {
		return err
	}
	sb, err := parseSub(res, w.VersionID)
	if err != nil {
		return invalid(http.StatusUnprocessableEntity, "invalid", "Subscription", "%v", err)
	}
	a, err := s.check(ctx, sb, prev)
	if err != nil {
		return err
	}
	ch := res["channel"].(map[string]any) // parseSub checked it
	secret := sb.Secret
	if secret == "" && prev != nil {
		secret = prev.Secret
	}
	if secret == "" {
		if secret, err = newSecret(); err != nil {
			return err
		}
	}
	setExt(ch, secretURL, map[string]any{"url": secretURL, "valueString": secret})
	sb.Secret = secret
	// The server moves an accepted Subscription to active (a client may
	// only ask: requested, or active on a round trip); an end in the past
	// turns it off.
	status := statusActive
	if sb.Status == statusOff || (!sb.End.IsZero() && !cs.At().Before(sb.End)) {
		status = statusOff
	}
	if sb.Status == statusError && prev != nil && prev.Status == statusError {
		status = statusError // an unchanged round trip keeps the server's verdict
	}
	if sb.Topic != "" && sb.Channel == channelRestHook && status == statusActive {
		// The backport's handshake: a new (or re-aimed) topic-based
		// Subscription stays requested until its endpoint accepted the
		// handshake notification, queued first in its stream.
		renewed := prev == nil || prev.Status == statusOff || prev.Endpoint != sb.Endpoint || prev.Topic != sb.Topic || prev.Channel != sb.Channel
		switch {
		case renewed:
			status = statusRequested
			cs.Enqueue(i, storage.Event{Stream: streamOf(w.ID), ID: newEventID(), Data: encodeHandshake()})
			s.signal(streamOf(w.ID))
			defer s.poke()
		case prev.Status == statusRequested:
			status = statusRequested
		}
	}
	if status != statusError {
		delete(res, "error")
		sb.Error = ""
	}
	res["status"] = status
	sb.Status = status
	if err := cs.Replace(i, res); err != nil {
		return err
	}
	s.reg.observed(w.ID, w.VersionID, a)
	return nil
}

// check validates what the service serves and returns the Subscription
// compiled for matching.
func (s *Service) check(ctx context.Context, sb *sub, prev *sub) (*active, error) {
	switch sb.Status {
	case statusRequested, statusActive, statusOff:
	case statusError:
		if prev == nil || prev.Status != statusError {
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.status", "a client may set status requested or off, not error")
		}
	default:
		return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.status", "unknown status %q", sb.Status)
	}
	switch sb.Channel {
	case channelRestHook:
		if _, err := s.policy.checkURL(sb.Endpoint); err != nil {
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.endpoint", "%v", err)
		}
	case channelWebsocket:
		// A criteria search is the R4 protocol ("bind ID", "ping ID"); a
		// topic the Backport's (bind-with-token, notification Bundles).
		if sb.Endpoint != "" || len(sb.Headers) > 0 {
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.endpoint", "a websocket Subscription has no endpoint or headers: the client connects to the server (bind ID with its bearer token, or Subscription/{id}/$get-ws-binding-token)")
		}
	default:
		return nil, invalid(http.StatusUnprocessableEntity, "not-supported", "Subscription.channel.type", "channel type %q is not supported (rest-hook and websocket are)", sb.Channel)
	}
	switch sb.Payload {
	case "", payloadFHIRJSON:
	default:
		return nil, invalid(http.StatusUnprocessableEntity, "not-supported", "Subscription.channel.payload", "payload %q is not supported (leave it out, or %s)", sb.Payload, payloadFHIRJSON)
	}
	if sb.Topic != "" {
		if sb.Payload != payloadFHIRJSON {
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.payload", "a topic-based Subscription needs payload %s (its notifications are Bundles)", payloadFHIRJSON)
		}
		switch sb.Content {
		case contentEmpty, contentIDOnly, contentFull:
		default:
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.payload.extension", "backport-payload-content %q is not empty, id-only or full-resource", sb.Content)
		}
	}
	for _, h := range sb.Headers {
		name, _, ok := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || !validHeaderName(name) {
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.header", "header %q is not \"Name: value\"", h)
		}
		if reservedHeaders[textproto.CanonicalMIMEHeaderKey(name)] {
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.header", "header %s is set by the server", name)
		}
		if strings.ContainsAny(h, "\r\n") {
			return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.header", "header %s contains a line break", name)
		}
	}
	if sb.Secret != "" && len(sb.Secret) < minSecret {
		return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.channel.extension", "the secret extension must be at least %d characters", minSecret)
	}
	a, err := s.compile(ctx, sb)
	if err != nil {
		var ce *fhir.CriteriaError
		if errors.As(err, &ce) {
			return nil, fhir.CriteriaOutcome(ce, "Subscription.criteria")
		}
		return nil, err
	}
	if sb.Type == "Subscription" {
		return nil, invalid(http.StatusUnprocessableEntity, "invalid", "Subscription.criteria", "criteria on Subscription are not supported")
	}
	if a.denied {
		return nil, invalid(http.StatusForbidden, "forbidden", "Subscription.criteria", "the client may not search %s, so it cannot subscribe to it", sb.Type)
	}
	if sb.Owner != nil && sb.Status != statusOff {
		if n := s.reg.countOwned(sb.Owner.Client, sb.ID); n >= s.cfg.MaxPerClient {
			return nil, invalid(http.StatusUnprocessableEntity, "business-rule", "Subscription", "client %s already has %d Subscriptions that are not off (the limit)", sb.Owner.Client, n)
		}
	}
	return a, nil
}

func validHeaderName(name string) bool {
	for _, c := range name {
		if c > 0x7e || c <= ' ' || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

// ended reports whether the Subscription's end has passed.
func (sb *sub) ended(now time.Time) bool { return !sb.End.IsZero() && !now.Before(sb.End) }
