package subscription

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/conformance/fhirpath"
	"github.com/anodyne-fhir/anodyne/storage"
)

// The R5 Subscriptions Backport for R4 (topic-based subscriptions): a
// Subscription whose criteria is a topic's canonical URL, narrowed by
// backport-filter-criteria, with backport-payload-content saying how much
// of each focus resource the notification Bundle carries.
const (
	backportBase          = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
	filterCriteriaURL     = backportBase + "backport-filter-criteria"
	payloadContentURL     = backportBase + "backport-payload-content"
	heartbeatURL          = backportBase + "backport-heartbeat-period"
	timeoutURL            = backportBase + "backport-timeout"
	statusProfile         = backportBase + "backport-subscription-status-r4"
	contentEmpty          = "empty"
	contentIDOnly         = "id-only"
	contentFull           = "full-resource"
	eventNumberPrefix     = "subscription/event-number/" // + event id: the number given at first attempt
	eventCounterPrefix    = "subscription/event-count/"  // + Subscription id: the last number given
	eventNumberKeepFor    = 30 * 24 * time.Hour
	notificationEventType = "event-notification"
)

//go:embed data/topics.json
var topicsJSON []byte

// topic is one entry of data/topics.json.
type topic struct {
	URL      string `json:"url"`
	Title    string `json:"title"`
	Resource string `json:"resource"`
	Criteria string `json:"criteria"`
	FHIRPath string `json:"fhirPath"`
	path     *fhirpath.Expression
}

func loadTopics() (map[string]*topic, error) {
	var f struct {
		Topics []*topic `json:"topics"`
	}
	if err := json.Unmarshal(topicsJSON, &f); err != nil {
		return nil, fmt.Errorf("subscription topics: %w", err)
	}
	out := map[string]*topic{}
	for _, t := range f.Topics {
		if t.URL == "" || t.Resource == "" || !strings.HasPrefix(t.Criteria, t.Resource) || out[t.URL] != nil {
			return nil, fmt.Errorf("subscription topic %q: needs a unique url, a resource and criteria on it", t.URL)
		}
		if t.FHIRPath != "" {
			p, err := fhirpath.Parse(t.FHIRPath)
			if err != nil {
				return nil, fmt.Errorf("subscription topic %s: fhirPath: %w", t.URL, err)
			}
			t.path = p
		}
		out[t.URL] = t
	}
	return out, nil
}

// Topics lists the canonical URLs and titles of the served topics.
func (s *Service) Topics() map[string]string {
	out := map[string]string{}
	for u, t := range s.topics {
		out[u] = t.Title
	}
	return out
}

// isTopic tells a backport Subscription's criteria from an R4 search.
func isTopic(criteria string) bool {
	return strings.HasPrefix(criteria, "http://") || strings.HasPrefix(criteria, "https://")
}

// truthy is FHIRPath's boolean reading of a condition's result.
func truthy(c fhirpath.Collection) bool {
	return len(c) == 1 && c[0].Value() == true
}

// eventNumber gives an event its number in its Subscription's sequence
// (events-since-subscription-start), once: a retry, also after a
// restart, reuses it. Only the lease holder numbers a stream, so the
// counter has one writer; a crash between the puts skips a number. The
// numbered event is also kept in the Subscription's event log (for
// $events) for eventNumberKeepFor.
func (s *Service) eventNumber(ctx context.Context, subID, eventID string, le logEntry) (int64, error) {
	kv := s.cfg.Backend.KV()
	if n, err := readCount(ctx, kv, eventNumberPrefix+eventID); err != nil || n > 0 {
		return n, err
	}
	last, err := readCount(ctx, kv, eventCounterPrefix+subID)
	if err != nil {
		return 0, err
	}
	n := last + 1
	if err := kv.Put(ctx, eventLogKey(subID, n), encodeLogEntry(le), eventNumberKeepFor); err != nil {
		return 0, fmt.Errorf("logging event %d of Subscription/%s: %w", n, subID, err)
	}
	if err := kv.Put(ctx, eventCounterPrefix+subID, []byte(strconv.FormatInt(n, 10)), 0); err != nil {
		return 0, fmt.Errorf("counting events of Subscription/%s: %w", subID, err)
	}
	if err := kv.Put(ctx, eventNumberPrefix+eventID, []byte(strconv.FormatInt(n, 10)), eventNumberKeepFor); err != nil {
		return 0, fmt.Errorf("numbering event %s: %w", eventID, err)
	}
	return n, nil
}

// eventCount is the number of the Subscription's last numbered event.
func (s *Service) eventCount(ctx context.Context, subID string) (int64, error) {
	return readCount(ctx, s.cfg.Backend.KV(), eventCounterPrefix+subID)
}

func readCount(ctx context.Context, kv storage.KV, key string) (int64, error) {
	v, err := kv.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", key, err)
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", key, err)
	}
	return n, nil
}

// Notification kinds (SubscriptionStatus.type, backport STU 1.1).
const (
	noticeEvent     = notificationEventType
	noticeHandshake = "handshake"
	noticeHeartbeat = "heartbeat"
	noticeStatus    = "query-status"
	noticeQuery     = "query-event"
)

// notice is what one SubscriptionStatus says.
type notice struct {
	kind   string
	status string
	since  int64 // events-since-subscription-start
	events []numbered
	error  string
}

// numbered is one event of a notice, with its focus as the owner may
// receive it (id: the id the owner knows; json: only for full-resource).
type numbered struct {
	n       int64
	at      time.Time
	typ, id string
	version int64
	json    []byte
}

// statusParams is the backport's SubscriptionStatus (a Parameters
// resource, profile backport-subscription-status-r4).
func statusParams(base string, sb *sub, nt notice, content string) map[string]any {
	params := []any{
		map[string]any{"name": "subscription", "valueReference": map[string]any{"reference": base + "/Subscription/" + sb.ID}},
	}
	if sb.Topic != "" {
		params = append(params, map[string]any{"name": "topic", "valueCanonical": sb.Topic})
	}
	params = append(params,
		map[string]any{"name": "status", "valueCode": nt.status},
		map[string]any{"name": "type", "valueCode": nt.kind},
		map[string]any{"name": "events-since-subscription-start", "valueString": strconv.FormatInt(nt.since, 10)},
	)
	for _, e := range nt.events {
		part := []any{
			map[string]any{"name": "event-number", "valueString": strconv.FormatInt(e.n, 10)},
			map[string]any{"name": "timestamp", "valueInstant": e.at.UTC().Format(time.RFC3339Nano)},
		}
		if content != contentEmpty {
			part = append(part, map[string]any{"name": "focus", "valueReference": map[string]any{"reference": base + "/" + e.typ + "/" + e.id}})
		}
		params = append(params, map[string]any{"name": "notification-event", "part": part})
	}
	if nt.error != "" {
		params = append(params, map[string]any{"name": "error", "valueCodeableConcept": map[string]any{"text": nt.error}})
	}
	return map[string]any{
		"resourceType": "Parameters", "id": newEventID(),
		"meta":      map[string]any{"profile": []any{statusProfile}},
		"parameter": params,
	}
}

// notificationBundle is the backport's history Bundle: the
// SubscriptionStatus, then each event's focus (full-resource: with the
// resource; id-only: its fullUrl and request; empty: none).
func notificationBundle(base string, sb *sub, nt notice, content string) map[string]any {
	st := statusParams(base, sb, nt, content)
	entries := []any{map[string]any{
		"fullUrl":  "urn:uuid:" + uuidOf(st["id"].(string)),
		"resource": st,
		"request":  map[string]any{"method": "GET", "url": base + "/Subscription/" + sb.ID + "/$status"},
		"response": map[string]any{"status": "200"},
	}}
	if content != contentEmpty {
		for _, ev := range nt.events {
			method, url, code := "PUT", ev.typ+"/"+ev.id, "200"
			if ev.version == 1 {
				method, url, code = "POST", ev.typ, "201"
			}
			e := map[string]any{
				"fullUrl":  base + "/" + ev.typ + "/" + ev.id,
				"request":  map[string]any{"method": method, "url": url},
				"response": map[string]any{"status": code},
			}
			if content == contentFull && ev.json != nil {
				e["resource"] = json.RawMessage(ev.json)
			}
			entries = append(entries, e)
		}
	}
	return map[string]any{
		"resourceType": "Bundle", "id": newEventID(), "type": "history",
		"timestamp": time.Now().UTC().Format(time.RFC3339Nano), "entry": entries,
	}
}

// uuidOf formats 32 hex digits as a UUID.
func uuidOf(h string) string {
	if len(h) != 32 {
		return h
	}
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
