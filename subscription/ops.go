package subscription

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/fhir"
	"github.com/anodyne-fhir/anodyne/storage"
)

// Canonical URLs the backport (STU 1.1) defines for what a server
// declares and offers.
const (
	backportIG         = "http://hl7.org/fhir/uv/subscriptions-backport/ImplementationGuide/hl7.fhir.uv.subscriptions-backport"
	topicCanonicalURL  = backportBase + "capabilitystatement-subscriptiontopic-canonical"
	websocketExtURL    = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"
	opStatusURL        = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"
	opEventsURL        = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"
	opBindingTokenURL  = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-get-ws-binding-token"
	lastSentPrefix     = "subscription/last-sent/" // + Subscription id: unix nanoseconds of the last rest-hook notification
	defaultReplayCount = 20
)

func opDefinition(id, url, name, title string, params ...map[string]any) map[string]any {
	ps := make([]any, 0, len(params))
	for _, p := range params {
		ps = append(ps, p)
	}
	return map[string]any{
		"resourceType": "OperationDefinition", "id": id, "url": url, "name": name, "title": title,
		"status": "active", "kind": "operation", "code": name, "resource": []any{"Subscription"},
		"system": false, "type": false, "instance": true, "parameter": ps,
	}
}

// typeLevel marks an operation as served at [base]/Type/$name too.
func typeLevel(def map[string]any) map[string]any {
	def["type"] = true
	return def
}

func opParam(name, use, typ string, max string) map[string]any {
	return map[string]any{"name": name, "use": use, "min": 0, "max": max, "type": typ}
}

// Operations are the backport's Subscription operations, for
// fhir.Config.ResourceOperations: $status, $events and
// $get-ws-binding-token, each authorized by the server as a read of the
// Subscription.
func (s *Service) Operations() []fhir.ResourceOperation {
	return []fhir.ResourceOperation{
		{Type: "Subscription", Name: "status", Run: s.status, RunType: s.statusType,
			Definition: typeLevel(opDefinition("backport-subscription-status", opStatusURL, "status", "Subscription status",
				opParam("id", "in", "id", "*"), opParam("status", "in", "code", "*"), opParam("return", "out", "Bundle", "1")))},
		{Type: "Subscription", Name: "events", Run: s.events,
			Definition: opDefinition("backport-subscription-events", opEventsURL, "events", "Replay of a Subscription's numbered events",
				opParam("eventsSinceNumber", "in", "string", "1"), opParam("eventsUntilNumber", "in", "string", "1"),
				opParam("content", "in", "code", "1"), opParam("return", "out", "Bundle", "1"))},
		{Type: "Subscription", Name: "get-ws-binding-token", Run: s.bindingToken,
			Definition: opDefinition("backport-subscription-get-ws-binding-token", opBindingTokenURL, "get-ws-binding-token", "Token to bind a websocket to a Subscription",
				opParam("token", "out", "string", "1"), opParam("expiration", "out", "dateTime", "1"),
				opParam("subscription", "out", "string", "*"), opParam("websocket-url", "out", "url", "1"))},
	}
}

// Capability adds to the CapabilityStatement (fhir.Config.Capability)
// the served topics on the Subscription resource, the websocket URL and
// the backport implementation guide.
func (s *Service) Capability(cs map[string]any) {
	var urls []string
	for u := range s.topics {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	cs["implementationGuide"] = append(anyList(cs["implementationGuide"]), backportIG)
	for _, r := range anyList(cs["rest"]) {
		rest, _ := r.(map[string]any)
		if rest == nil {
			continue
		}
		if base, _ := cs["implementation"].(map[string]any)["url"].(string); base != "" {
			rest["extension"] = append(anyList(rest["extension"]), map[string]any{"url": websocketExtURL, "valueUri": wsURL(base)})
		}
		for _, res := range anyList(rest["resource"]) {
			rm, _ := res.(map[string]any)
			if rm == nil || rm["type"] != "Subscription" {
				continue
			}
			ext := anyList(rm["extension"])
			for _, u := range urls {
				ext = append(ext, map[string]any{"url": topicCanonicalURL, "valueCanonical": u})
			}
			rm["extension"] = ext
			rm["supportedProfile"] = append(anyList(rm["supportedProfile"]), backportBase+"backport-subscription")
		}
	}
}

func anyList(v any) []any {
	l, _ := v.([]any)
	return l
}

func (s *Service) parseRecord(rec storage.Record) (*sub, error) {
	res, err := decode(rec.JSON)
	if err != nil {
		return nil, err
	}
	sb, err := parseSub(res, rec.VersionID)
	if err != nil {
		return nil, fmt.Errorf("Subscription/%s: %w", rec.ID, err)
	}
	return sb, nil
}

// shownStatus is the status a notice reports.
func shownStatus(sb *sub) string { return sb.Status }

// status is Subscription/{id}/$status: a searchset Bundle holding the
// SubscriptionStatus (type query-status).
func (s *Service) status(ctx context.Context, rec storage.Record, _ url.Values) (map[string]any, error) {
	return s.statusBundle(ctx, []storage.Record{rec}, nil)
}

// statusType is Subscription/$status (the type level): the status of
// each Subscription the caller may read, of those named by id (all
// without one), whose status is one of the status parameters (any
// without one; repeated or comma-separated).
func (s *Service) statusType(ctx context.Context, recs []storage.Record, q url.Values) (map[string]any, error) {
	var want map[string]bool
	for _, v := range q["status"] {
		for _, st := range strings.Split(v, ",") {
			switch st = strings.TrimSpace(st); st {
			case statusRequested, statusActive, statusError, statusOff:
				if want == nil {
					want = map[string]bool{}
				}
				want[st] = true
			default:
				return nil, invalid(http.StatusBadRequest, "invalid", "status", "status must be requested, active, error or off, not %q", st)
			}
		}
	}
	return s.statusBundle(ctx, recs, want)
}

// statusBundle is the searchset of the SubscriptionStatus of each record
// (those whose status is in want, when set).
func (s *Service) statusBundle(ctx context.Context, recs []storage.Record, want map[string]bool) (map[string]any, error) {
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	var entries []any
	for _, rec := range recs {
		sb, err := s.parseRecord(rec)
		if err != nil {
			return nil, err
		}
		if want != nil && !want[sb.Status] {
			continue
		}
		n, err := s.eventCount(ctx, sb.ID)
		if err != nil {
			return nil, err
		}
		st := statusParams(srv.Base(), sb, notice{kind: noticeStatus, status: shownStatus(sb), since: n, error: sb.Error}, contentEmpty)
		entries = append(entries, map[string]any{
			"fullUrl": "urn:uuid:" + uuidOf(st["id"].(string)), "resource": st,
			"search": map[string]any{"mode": "match"},
		})
	}
	b := map[string]any{
		"resourceType": "Bundle", "id": newEventID(), "type": "searchset", "total": len(entries),
		"timestamp": time.Now().UTC().Format(time.RFC3339Nano),
	}
	if len(entries) > 0 {
		b["entry"] = entries
	}
	return b, nil
}

// events is Subscription/{id}/$events: the logged events numbered
// eventsSinceNumber..eventsUntilNumber (default: the last 20; at most
// maxReplay) as a history Bundle (type query-event), with content as the
// Subscription's unless asked otherwise. It acts for the owner: only the
// owner may call it.
func (s *Service) events(ctx context.Context, rec storage.Record, q url.Values) (map[string]any, error) {
	sb, err := s.parseRecord(rec)
	if err != nil {
		return nil, err
	}
	if sb.Topic == "" {
		return nil, invalid(http.StatusBadRequest, "not-supported", "Subscription.criteria", "Subscription/%s is not topic-based: its events are not numbered", sb.ID)
	}
	if err := s.ownerOnly(ctx, sb); err != nil {
		return nil, err
	}
	last, err := s.eventCount(ctx, sb.ID)
	if err != nil {
		return nil, err
	}
	num := func(name string, def int64) (int64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return 0, invalid(http.StatusBadRequest, "invalid", name, "%s must be a positive event number, not %q", name, v)
		}
		return n, nil
	}
	until, err := num("eventsUntilNumber", last)
	if err != nil {
		return nil, err
	}
	until = min(until, last)
	since, err := num("eventsSinceNumber", max(1, until-defaultReplayCount+1))
	if err != nil {
		return nil, err
	}
	content := sb.Content
	switch c := q.Get("content"); c {
	case "":
	case contentEmpty, contentIDOnly, contentFull:
		content = c
	default:
		return nil, invalid(http.StatusBadRequest, "invalid", "content", "content must be empty, id-only or full-resource, not %q", c)
	}
	evs, err := s.replay(ctx, sb, since, until, content)
	if err != nil {
		return nil, err
	}
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	return notificationBundle(srv.Base(), sb, notice{kind: noticeQuery, status: shownStatus(sb), since: last, events: evs}, content), nil
}

// heartbeat is a heartbeat notification Bundle of sb.
func (s *Service) heartbeat(ctx context.Context, sb *sub) ([]byte, error) {
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	n, err := s.eventCount(ctx, sb.ID)
	if err != nil {
		return nil, err
	}
	return json.Marshal(notificationBundle(srv.Base(), sb, notice{kind: noticeHeartbeat, status: shownStatus(sb), since: n}, sb.Content))
}

// sent records a rest-hook notification of a Subscription with a
// heartbeat period, which restarts its heartbeat clock (in the store, so
// that every process agrees).
func (s *Service) sent(ctx context.Context, sb *sub) {
	if sb.Heartbeat <= 0 {
		return
	}
	v := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := s.cfg.Backend.KV().Put(ctx, lastSentPrefix+sb.ID, []byte(v), 2*sb.Heartbeat+time.Minute); err != nil {
		s.log.Warn("subscription: recording a notification for heartbeats", "subscription", sb.ID, "err", err)
	}
}

// heartbeatDue reports whether sb's heartbeat period passed since its
// last notification; a Subscription never notified starts its clock now.
func (s *Service) heartbeatDue(ctx context.Context, sb *sub) (bool, error) {
	v, err := readCount(ctx, s.cfg.Backend.KV(), lastSentPrefix+sb.ID)
	if err != nil {
		return false, err
	}
	if v == 0 {
		s.sent(ctx, sb)
		return false, nil
	}
	return time.Since(time.Unix(0, v)) >= sb.Heartbeat, nil
}

// Configure adds to a server's configuration what the Service serves
// besides observing (add it to cfg.Observers, last, yourself): the
// backport operations, the CapabilityStatement additions, the masking of
// channel credentials and, when cfg.Authorizer is set, the patient/ rule
// for Subscriptions around it (call Configure after setting it).
func (s *Service) Configure(cfg *fhir.Config) {
	cfg.ResourceOperations = append(cfg.ResourceOperations, s.Operations()...)
	if cfg.Redact == nil {
		cfg.Redact = map[string]func(context.Context, map[string]any) error{}
	}
	cfg.Redact["Subscription"] = s.Redact
	if _, off := cfg.Authorizer.(auth.AllowAll); cfg.Authorizer != nil && !off {
		cfg.Authorizer = s.Authorizer(cfg.Authorizer) // AllowAll stays itself: the server tells auth off by it
	}
	prev := cfg.Capability
	cfg.Capability = func(cs map[string]any) {
		if prev != nil {
			prev(cs)
		}
		s.Capability(cs)
	}
}
