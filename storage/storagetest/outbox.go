package storagetest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/anodyne-fhir/anodyne/storage"
)

// outboxCases check storage.Outbox: events are stored by the Commit of
// their write, atomically with it, in commit order per stream, byte-exact,
// and survive a reopen. Each case skips on a backend without an outbox.
var outboxCases = []testCase{
	{"AppendedWithWrite", outboxAppended},
	{"RefusedWriteLeavesNone", outboxRefused},
	{"DeleteAndPurge", outboxDelete},
	{"StreamsPaging", outboxStreams},
	{"InvalidEvents", outboxInvalid},
	{"SurvivesReopen", outboxReopen},
}

func (e *env) outbox(t *testing.T) storage.Outbox {
	t.Helper()
	ob, ok := e.b.(storage.Outbox)
	if !ok {
		t.Skipf("backend %T does not implement storage.Outbox", e.b)
	}
	return ob
}

func ev(stream, id string) storage.Event {
	// Bytes that a text-normalising store would damage.
	return storage.Event{Stream: stream, ID: id, Data: []byte("\x00{\"id\":\"" + id + "\"}\xff\n")}
}

func withEvents(w storage.Write, evs ...storage.Event) storage.Write {
	w.Events = evs
	return w
}

func (e *env) read(ob storage.Outbox, stream string, n int) []storage.Event {
	e.t.Helper()
	evs, err := ob.OutboxRead(e.ctx, stream, n)
	if err != nil {
		e.t.Fatalf("OutboxRead(%q): %v", stream, err)
	}
	return evs
}

func eventIDs(evs []storage.Event) []string {
	out := make([]string, len(evs))
	for i, v := range evs {
		out[i] = v.ID
	}
	return out
}

func outboxAppended(t *testing.T, e *env) {
	ob := e.outbox(t)
	r1 := e.commit(withEvents(e.write("Observation", "o1", 0), ev("s1", "a"), ev("s1", "b")))
	r2 := e.commit(withEvents(e.write("Observation", "o1", 1), ev("s2", "c"), ev("s1", "d")))
	r3 := e.commit(withEvents(e.deletion("Observation", "o1", 2), ev("s1", "e")))
	if e.atomic() {
		r4 := e.commit(withEvents(e.write("Flag", "f1", 0), ev("s1", "f")), withEvents(e.write("Flag", "f2", 0), ev("s1", "g")))
		r3 = append(r3, r4...)
	}
	got := e.read(ob, "s1", 100)
	want := []string{"a", "b", "d", "e"}
	seqs := []int64{r1[0].Seq, r1[0].Seq, r2[0].Seq, r3[0].Seq}
	if e.atomic() {
		want = append(want, "f", "g")
		seqs = append(seqs, r3[1].Seq, r3[2].Seq)
	}
	wantList(t, eventIDs(got), want, "events of s1")
	for i, v := range got {
		if i < len(seqs) && v.Seq != seqs[i] {
			t.Errorf("event %s: Seq %d, want the Seq of its write %d", v.ID, v.Seq, seqs[i])
		}
		if v.Stream != "s1" || !bytes.Equal(v.Data, ev("s1", v.ID).Data) {
			t.Errorf("event %s: stream %q data %q, want s1 %q", v.ID, v.Stream, v.Data, ev("s1", v.ID).Data)
		}
	}
	wantList(t, eventIDs(e.read(ob, "s1", 2)), []string{"a", "b"}, "first two events of s1")
	wantList(t, eventIDs(e.read(ob, "s2", 100)), []string{"c"}, "events of s2")
	wantList(t, eventIDs(e.read(ob, "none", 100)), []string{}, "events of an unknown stream")
}

func outboxRefused(t *testing.T, e *env) {
	ob := e.outbox(t)
	e.put("Observation", "o1")
	_, err := e.b.Commit(e.ctx, withEvents(e.write("Observation", "o1", 0), ev("s1", "lost")))
	wantErr(t, err, storage.ErrVersionConflict, "create of an existing resource")
	if e.atomic() {
		_, err = e.b.Commit(e.ctx,
			withEvents(e.write("Observation", "o2", 0), ev("s1", "lost2")),
			withEvents(e.write("Observation", "o1", 7), ev("s1", "lost3")))
		wantErr(t, err, storage.ErrVersionConflict, "second write conflicting")
	}
	wantList(t, eventIDs(e.read(ob, "s1", 100)), []string{}, "events of refused commits")
	streams, err := ob.OutboxStreams(e.ctx, "", 100)
	if err != nil {
		t.Fatalf("OutboxStreams: %v", err)
	}
	wantList(t, streams, []string{}, "streams after refused commits")
}

func outboxDelete(t *testing.T, e *env) {
	ob := e.outbox(t)
	e.commit(withEvents(e.write("Observation", "o1", 0), ev("s1", "a"), ev("s1", "b"), ev("s1", "c"), ev("s2", "x"), ev("s2", "y")))
	if err := ob.OutboxDelete(e.ctx, "s1", "b", "absent"); err != nil {
		t.Fatalf("OutboxDelete: %v", err)
	}
	// An id of another stream is not removed through this one.
	if err := ob.OutboxDelete(e.ctx, "s1", "x"); err != nil {
		t.Fatalf("OutboxDelete: %v", err)
	}
	wantList(t, eventIDs(e.read(ob, "s1", 100)), []string{"a", "c"}, "s1 after delete")
	wantList(t, eventIDs(e.read(ob, "s2", 100)), []string{"x", "y"}, "s2 after delete through s1")
	if err := ob.OutboxPurge(e.ctx, "s2"); err != nil {
		t.Fatalf("OutboxPurge: %v", err)
	}
	wantList(t, eventIDs(e.read(ob, "s2", 100)), []string{}, "s2 after purge")
	wantList(t, eventIDs(e.read(ob, "s1", 100)), []string{"a", "c"}, "s1 after purge of s2")
	streams, err := ob.OutboxStreams(e.ctx, "", 100)
	if err != nil {
		t.Fatalf("OutboxStreams: %v", err)
	}
	wantList(t, streams, []string{"s1"}, "streams after purge")
}

func outboxStreams(t *testing.T, e *env) {
	ob := e.outbox(t)
	var evs []storage.Event
	for _, s := range []string{"s3", "s1", "s2", "s1", "s4"} {
		evs = append(evs, ev(s, fmt.Sprintf("%s-%d", s, len(evs))))
	}
	e.commit(withEvents(e.write("Observation", "o1", 0), evs...))
	var got []string
	after := ""
	for range 10 {
		page, err := ob.OutboxStreams(e.ctx, after, 2)
		if err != nil {
			t.Fatalf("OutboxStreams(%q): %v", after, err)
		}
		if len(page) > 2 {
			t.Fatalf("OutboxStreams(%q, 2) returned %d streams", after, len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1]
	}
	wantList(t, got, []string{"s1", "s2", "s3", "s4"}, "streams paged by 2")
}

func outboxInvalid(t *testing.T, e *env) {
	ob := e.outbox(t)
	for _, c := range []struct {
		name string
		evs  []storage.Event
	}{
		{"empty stream", []storage.Event{{ID: "a"}}},
		{"empty id", []storage.Event{{Stream: "s1"}}},
		{"long stream", []storage.Event{{Stream: strings.Repeat("s", storage.MaxEventStream+1), ID: "a"}}},
		{"long id", []storage.Event{{Stream: "s1", ID: strings.Repeat("i", storage.MaxEventID+1)}}},
		{"duplicate id", []storage.Event{ev("s1", "a"), ev("s1", "a")}},
	} {
		if _, err := e.b.Commit(e.ctx, withEvents(e.write("Observation", "bad", 0), c.evs...)); err == nil {
			t.Errorf("%s: Commit accepted it", c.name)
		}
	}
	e.commit(withEvents(e.write("Observation", "o1", 0), ev("s1", "a")))
	if _, err := e.b.Commit(e.ctx, withEvents(e.write("Observation", "o2", 0), ev("s1", "a"))); err == nil {
		t.Errorf("an event id already in the outbox was accepted")
	}
	if _, err := e.b.Read(e.ctx, "Observation", "o2"); err == nil {
		t.Errorf("the write of a refused event id was stored")
	}
	if _, err := e.b.Read(e.ctx, "Observation", "bad"); err == nil {
		t.Errorf("a write with invalid events was stored")
	}
	wantList(t, eventIDs(e.read(ob, "s1", 100)), []string{"a"}, "events after invalid commits")
}

func outboxReopen(t *testing.T, e *env) {
	if e.h.Reopen == nil {
		t.Skip("no Reopen in the harness")
	}
	e.outbox(t)
	e.commit(withEvents(e.write("Observation", "o1", 0), ev("s1", "a"), ev("s1", "b")))
	e.reopen()
	ob := e.outbox(t)
	got := e.read(ob, "s1", 100)
	wantList(t, eventIDs(got), []string{"a", "b"}, "events after reopen")
	for _, v := range got {
		if !bytes.Equal(v.Data, ev("s1", v.ID).Data) {
			t.Errorf("event %s after reopen: data %q", v.ID, v.Data)
		}
	}
}
