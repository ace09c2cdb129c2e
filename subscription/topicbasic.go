package subscription

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/anodyne-fhir/anodyne/storage"
)

// The served topics as R4 resources: the Subscriptions Backport IG
// represents a SubscriptionTopic in R4 as a Basic resource (code
// SubscriptionTopic of http://hl7.org/fhir/fhir-types) carrying the R5
// elements as cross-version extensions. Run writes one per topic of
// data/topics.json (generated here, never by hand) through the server's
// commit path when it is missing or differs, so every read path (read,
// search, history, _include, export) serves them under the one decision
// point and output filter. A client write that would change or delete one
// is refused (422); the server's own writes (and a write of the same
// content, such as a restore) pass.
const (
	topicBasicPrefix = "anodyne-topic-" // + the last segment of the topic's url
	xverR5           = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
	xverR4B          = "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic."
	fhirTypesSystem  = "http://hl7.org/fhir/fhir-types"
)

// basicID is the id of the Basic resource of a topic.
func (t *topic) basicID() string {
	return topicBasicPrefix + t.URL[strings.LastIndex(t.URL, "/")+1:]
}

// basic is the topic as a backport R4 SubscriptionTopic (Basic).
func (t *topic) basic() map[string]any {
	trigger := []any{
		map[string]any{"url": "description", "valueMarkdown": t.Title},
		map[string]any{"url": "resource", "valueUri": "http://hl7.org/fhir/StructureDefinition/" + t.Resource},
		// Creates and updates notify; deletes do not (no index entries).
		map[string]any{"url": "supportedInteraction", "valueCode": "create"},
		map[string]any{"url": "supportedInteraction", "valueCode": "update"},
	}
	if _, q, ok := strings.Cut(t.Criteria, "?"); ok && q != "" {
		trigger = append(trigger, map[string]any{"url": "queryCriteria", "extension": []any{
			map[string]any{"url": "current", "valueString": q},
			map[string]any{"url": "resultForCreate", "valueCode": "test-passes"},
			map[string]any{"url": "resultForDelete", "valueCode": "test-fails"},
			map[string]any{"url": "requireBoth", "valueBoolean": false},
		}})
	}
	if t.FHIRPath != "" {
		trigger = append(trigger, map[string]any{"url": "fhirPathCriteria", "valueString": "%current.where(" + t.FHIRPath + ").exists()"})
	}
	return map[string]any{
		"resourceType": "Basic",
		"id":           t.basicID(),
		"extension": []any{
			map[string]any{"url": xverR5 + "url", "valueUri": t.URL},
			map[string]any{"url": xverR5 + "title", "valueString": t.Title},
			map[string]any{"url": xverR4B + "resourceTrigger", "extension": trigger},
			map[string]any{"url": xverR4B + "canFilterBy", "extension": []any{
				map[string]any{"url": "description", "valueMarkdown": "Any search parameter of " + t.Resource + " that can be judged on the resource alone (backport-filter-criteria, e.g. " + t.Resource + "?patient=Patient/123)."},
				map[string]any{"url": "resource", "valueUri": t.Resource},
				map[string]any{"url": "filterParameter", "valueString": "patient"},
			}},
		},
		"modifierExtension": []any{
			map[string]any{"url": xverR5 + "status", "valueCode": "active"},
		},
		"code": map[string]any{"coding": []any{map[string]any{"system": fhirTypesSystem, "code": "SubscriptionTopic"}}},
	}
}

// topicByBasicID is the topic whose Basic resource has id.
func (s *Service) topicByBasicID(id string) *topic {
	if !strings.HasPrefix(id, topicBasicPrefix) {
		return nil
	}
	for _, t := range s.topics {
		if t.basicID() == id {
			return t
		}
	}
	return nil
}

// sameContent compares a stored resource with a generated one, meta
// aside (JSON encoding sorts keys, so equal content encodes equally).
func sameContent(stored []byte, want map[string]any) bool {
	res, err := decode(stored)
	if err != nil {
		return false
	}
	delete(res, "meta")
	a, err1 := json.Marshal(res)
	b, err2 := json.Marshal(want)
	return err1 == nil && err2 == nil && string(a) == string(b)
}

// checkTopicWrite refuses a client's change or delete of a topic's Basic.
func (s *Service) checkTopicWrite(ctx context.Context, w storage.Write) error {
	if w.Type != "Basic" || ownedWrite(ctx) {
		return nil
	}
	t := s.topicByBasicID(w.ID)
	if t == nil || (!w.Deleted && sameContent(w.JSON, t.basic())) {
		return nil
	}
	return invalid(http.StatusUnprocessableEntity, "business-rule", "Basic", "Basic/%s is the server's SubscriptionTopic %s (from its topic definitions); it cannot be changed or deleted", w.ID, t.URL)
}

// publishTopics writes each topic's Basic that is missing or differs.
func (s *Service) publishTopics(ctx context.Context) error {
	srv, err := s.server()
	if err != nil {
		return err
	}
	urls := make([]string, 0, len(s.topics))
	for u := range s.topics {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	octx := context.WithValue(ctx, ownedKey{}, true)
	for _, u := range urls {
		t := s.topics[u]
		for attempt := 0; ; attempt++ {
			want := t.basic()
			var expect int64
			rec, err := s.cfg.Backend.Read(ctx, "Basic", want["id"].(string))
			switch {
			case errors.Is(err, storage.ErrNotFound):
			case err != nil:
				return fmt.Errorf("reading the Basic of topic %s: %w", u, err)
			case !rec.Deleted && sameContent(rec.JSON, want):
				expect = -1 // up to date
			default:
				expect = rec.VersionID
			}
			if expect < 0 {
				break
			}
			_, err = srv.PutOwned(octx, want, expect)
			if err == nil {
				break
			}
			if !errors.Is(err, storage.ErrVersionConflict) || attempt == 3 {
				return fmt.Errorf("writing the Basic of topic %s: %w", u, err)
			}
		}
	}
	return nil
}
