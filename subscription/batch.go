package subscription

import "github.com/anodyne-fhir/anodyne/storage"

// Batching (backport-max-count): a topic-based Subscription whose channel
// carries the extension gets the events waiting in its stream (a receiver
// that was down, a burst of writes) in notifications of up to that many
// events each, in stream (commit) order. A batch is cut anew at each
// attempt from the head of the stream, so a retry after a failure may
// carry more events than the failed attempt; the event numbers stay (each
// event is numbered once, in order). Without the extension each
// notification carries one event.
const (
	maxCountURL = backportBase + "backport-max-count"
	// maxBatch caps the events of one notification whatever max-count
	// asks (fewer is still "at most max-count").
	maxBatch = 100
	// minRead is how many events a deliverer reads from the outbox at once.
	minRead = 16
)

// batchLimit is the most events one notification of sb may carry.
func (sb *sub) batchLimit() int {
	if sb.Topic == "" || sb.MaxCount <= 1 {
		return 1
	}
	return int(min(sb.MaxCount, maxBatch))
}

// batchOf is the head of evs that goes in one notification: the first
// event alone (a handshake, an R4 Subscription's event, or no max-count),
// or the resource events that follow it up to sb's limit, stopping before
// a handshake or an event that does not decode (which then fails alone).
func batchOf(sb *sub, evs []storage.Event) []storage.Event {
	limit := sb.batchLimit()
	if limit == 1 || len(evs) == 1 {
		return evs[:1]
	}
	if e, err := decodeEvent(evs[0].Data); err != nil || e.Kind != "" {
		return evs[:1]
	}
	n := 1
	for n < len(evs) && n < limit {
		if e, err := decodeEvent(evs[n].Data); err != nil || e.Kind != "" {
			break
		}
		n++
	}
	return evs[:n]
}

// batchID is the X-Anodyne-Event-Id of a notification: the event's id,
// or for several events "<first id>-<last id>", the same on a retry of
// the same batch and different for a batch cut differently (whose events
// a receiver de-duplicates by their event-number).
func batchID(batch []storage.Event) string {
	if len(batch) == 1 {
		return batch[0].ID
	}
	return batch[0].ID + "-" + batch[len(batch)-1].ID
}
