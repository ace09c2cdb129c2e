package subscription

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/storage"
)

// Run loads the Subscriptions and delivers events until ctx ends. Call it
// once per process, after Attach; every process on a database may run it
// (leases keep one deliverer per Subscription).
func (s *Service) Run(ctx context.Context) error {
	if _, err := s.server(); err != nil {
		return err
	}
	if err := s.reg.load(ctx); err != nil {
		s.log.Error("subscription: loading Subscriptions (retrying)", "err", err)
	}
	published := s.publish(ctx)
	if s.cfg.Exclusive {
		if err := clearLeases(ctx, s.cfg.Backend.KV()); err != nil {
			s.log.Error("subscription: clearing leases of a previous run", "err", err)
		}
	}
	client := s.policy.client(s.cfg.Timeout)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer s.closeSockets()
	busy := map[string]bool{}
	var busyMu sync.Mutex
	// claim takes a stream's lease for work in this process; done gives
	// it back.
	claim := func(st string) (*lease, bool) {
		busyMu.Lock()
		defer busyMu.Unlock()
		if busy[st] {
			return nil, false
		}
		l, ok, err := acquire(ctx, s.cfg.Backend.KV(), st, s.holder, s.cfg.LeaseTTL, s.cfg.Timeout+2*time.Second)
		if err != nil || !ok {
			if err != nil && ctx.Err() == nil {
				s.log.Error("subscription: lease", "stream", st, "err", err)
			}
			return nil, false
		}
		busy[st] = true
		return l, true
	}
	done := func(st string, l *lease) {
		if err := l.release(context.WithoutCancel(ctx)); err != nil {
			s.log.Warn("subscription: releasing lease", "stream", st, "err", err)
		}
		busyMu.Lock()
		delete(busy, st)
		busyMu.Unlock()
	}
	reload := time.NewTicker(s.cfg.Reload)
	defer reload.Stop()
	check := time.NewTicker(s.cfg.Check)
	defer check.Stop()
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload.C:
			if err := s.reg.load(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("subscription: reloading Subscriptions", "err", err)
			}
			if !published {
				published = s.publish(ctx)
			}
			s.expire(ctx)
			continue
		case <-check.C:
			if err := s.reg.changed(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("subscription: checking for changed Subscriptions", "err", err)
			}
			s.heartbeats(ctx, client, &wg, claim, done)
			continue
		case <-s.wake:
			// The event is readable once its Commit returns, a moment after
			// the observer ran.
			poll.Reset(20 * time.Millisecond)
			continue
		case <-poll.C:
		}
		streams, err := s.streams(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("subscription: listing the outbox", "err", err)
		}
		for _, st := range streams {
			if id, ok := subIDOf(st); ok && !s.sockets.has(id) {
				if a := s.reg.get(id); a != nil && a.sub.Channel == channelWebsocket {
					continue // its events wait for a process with a bound socket
				}
			}
			l, ok := claim(st)
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.deliverStream(ctx, client, st, l)
				done(st, l)
				s.poke() // look again: events may have arrived meanwhile
			}()
		}
		poll.Reset(s.cfg.Poll)
	}
}

// publish writes the topics' Basic resources (topicbasic.go); false when
// that failed and is to be tried again at the next reload.
func (s *Service) publish(ctx context.Context) bool {
	if err := s.publishTopics(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Error("subscription: publishing the topics as Basic resources (retrying)", "err", err)
		}
		return false
	}
	return true
}

// heartbeats sends a heartbeat notification to each active topic-based
// rest-hook Subscription whose heartbeat period passed without one,
// under the stream's lease (so one process sends it, never during a
// delivery of the stream).
func (s *Service) heartbeats(ctx context.Context, client *http.Client, wg *sync.WaitGroup, claim func(string) (*lease, bool), done func(string, *lease)) {
	for _, list := range s.reg.snapshot() {
		for _, a := range list {
			sb := a.sub
			if sb.Heartbeat <= 0 || sb.Topic == "" || sb.Status != statusActive || sb.Channel != channelRestHook {
				continue
			}
			due, err := s.heartbeatDue(ctx, sb)
			if err != nil || !due {
				continue
			}
			st := streamOf(sb.ID)
			l, ok := claim(st)
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer done(st, l)
				body, err := s.heartbeat(ctx, sb)
				if err == nil {
					err = s.send(ctx, client, sb, http.MethodPost, sb.Endpoint, newEventID(), body)
				}
				if err != nil {
					s.log.Info("subscription: heartbeat failed", "subscription", sb.ID, "err", err)
					return
				}
				s.sent(ctx, sb)
			}()
		}
	}
}

func (s *Service) streams(ctx context.Context) ([]string, error) {
	var all []string
	after := ""
	for {
		page, err := s.outbox.OutboxStreams(ctx, after, 500)
		if err != nil {
			return all, fmt.Errorf("listing outbox streams: %w", err)
		}
		all = append(all, page...)
		if len(page) < 500 {
			return all, nil
		}
		after = page[len(page)-1]
	}
}

// expire turns off the Subscriptions whose end has passed.
func (s *Service) expire(ctx context.Context) {
	now := time.Now()
	for _, list := range s.reg.snapshot() {
		for _, a := range list {
			if a.sub.ended(now) {
				if err := s.setStatus(ctx, a.sub.ID, statusOff, ""); err != nil {
					s.log.Warn("subscription: turning off at end", "subscription", a.sub.ID, "err", err)
				}
			}
		}
	}
}

// deliverStream delivers a stream's events in order while the lease lasts.
func (s *Service) deliverStream(ctx context.Context, client *http.Client, stream string, l *lease) {
	id, ok := subIDOf(stream)
	if !ok {
		s.log.Error("subscription: unknown outbox stream; leaving it", "stream", stream)
		return
	}
	// Acknowledged events are removed from the outbox a batch at a time
	// (one storage write per batch, not per event); a crash before the
	// removal sends them again under the same ids.
	var acked, numbered []string
	flush := func() bool {
		if len(acked) == 0 {
			return true
		}
		dctx := context.WithoutCancel(ctx)
		if err := s.outbox.OutboxDelete(dctx, stream, acked...); err != nil {
			s.log.Error("subscription: acknowledging events (they will be sent again)", "stream", stream, "events", len(acked), "err", err)
			return false
		}
		for _, evID := range numbered {
			if err := s.cfg.Backend.KV().Delete(dctx, eventNumberPrefix+evID); err != nil {
				s.log.Warn("subscription: forgetting an event number", "event", evID, "err", err)
			}
		}
		acked, numbered = acked[:0], numbered[:0]
		return true
	}
	defer flush()
	readN := minRead // grows to the Subscription's batch limit once read
	for ctx.Err() == nil {
		if !flush() {
			return
		}
		if !l.live() {
			if ok, err := l.renew(ctx, s.cfg.LeaseTTL); err != nil || !ok {
				return
			}
		}
		evs, err := s.outbox.OutboxRead(ctx, stream, readN)
		if err != nil {
			s.log.Error("subscription: reading the outbox", "stream", stream, "err", err)
			return
		}
		if len(evs) == 0 {
			if !s.linger(ctx, stream) {
				return
			}
			continue
		}
		for len(evs) > 0 {
			sb, err := s.lookup(ctx, id)
			if err != nil {
				s.log.Error("subscription: reading", "subscription", id, "err", err)
				return
			}
			if sb == nil || sb.Status == statusOff || sb.ended(time.Now()) {
				acked = acked[:0] // purged with the rest
				s.retire(ctx, id, stream, sb)
				return
			}
			readN = max(minRead, sb.batchLimit())
			if !l.live() {
				if !flush() {
					return
				}
				if ok, err := l.renew(ctx, s.cfg.LeaseTTL); err != nil || !ok {
					return
				}
			}
			batch := batchOf(sb, evs)
			evs = evs[len(batch):]
			derr := s.deliver(ctx, client, sb, batch)
			if derr == nil {
				for _, ev := range batch {
					acked = append(acked, ev.ID)
					if sb.Topic != "" {
						numbered = append(numbered, ev.ID)
					}
				}
				s.succeeded(stream)
				if sb.Status == statusError || sb.Status == statusRequested {
					if err := s.setStatus(ctx, id, statusActive, ""); err != nil {
						s.log.Warn("subscription: back to active", "subscription", id, "err", err)
					}
				}
				continue
			}
			if errors.Is(derr, errNoSocket) {
				return // the client went away; its events wait for the next bind
			}
			if ctx.Err() != nil || !flush() || !s.failure(ctx, l, stream, sb, batch[0], derr) {
				return
			}
			break // read the stream again from its head
		}
	}
}

// retire drops the stream of a Subscription that is deleted, off or
// over: nothing of it is delivered any more.
func (s *Service) retire(ctx context.Context, id, stream string, sb *sub) {
	if sb != nil && sb.Status != statusOff {
		if err := s.setStatus(ctx, id, statusOff, ""); err != nil {
			s.log.Warn("subscription: turning off at end", "subscription", id, "err", err)
		}
	}
	if err := s.outbox.OutboxPurge(ctx, stream); err != nil {
		s.log.Error("subscription: dropping events", "stream", stream, "err", err)
	}
	if sb == nil {
		_ = s.cfg.Backend.KV().Delete(ctx, eventCounterPrefix+id) // its numbering ends with it
	}
}

// failure records a failed delivery, marks the Subscription error after
// the configured run, and backs off; false when the lease was lost or
// ctx ended meanwhile.
func (s *Service) failure(ctx context.Context, l *lease, stream string, sb *sub, ev storage.Event, derr error) bool {
	n := s.failed(stream)
	s.log.Warn("subscription: delivery failed", "subscription", sb.ID, "event", ev.ID, "failures", n, "err", derr)
	if n == s.cfg.FailuresBeforeError && sb.Status != statusError {
		if err := s.setStatus(ctx, sb.ID, statusError, derr.Error()); err != nil {
			s.log.Warn("subscription: marking error", "subscription", sb.ID, "err", err)
		}
	}
	return s.wait(ctx, l, s.backoff(n))
}

// lingerFor is how long a drained stream keeps its lease and deliverer
// waiting for the next event, which then goes out without a new lease.
const lingerFor = time.Second

// linger waits for this process to enqueue on stream; false after
// lingerFor without one.
func (s *Service) linger(ctx context.Context, stream string) bool {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[stream] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.waiters[stream] == ch {
			delete(s.waiters, stream)
		}
		s.mu.Unlock()
	}()
	t := time.NewTimer(lingerFor)
	defer t.Stop()
	select {
	case <-ch:
		// The observer signals before its Commit returns; give it a moment.
		time.Sleep(2 * time.Millisecond)
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// signal tells a lingering deliverer of stream that an event is coming.
func (s *Service) signal(stream string) {
	s.mu.Lock()
	ch := s.waiters[stream]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// wait sleeps d, renewing the lease across terms; false when the lease
// was lost or ctx ended.
func (s *Service) wait(ctx context.Context, l *lease, d time.Duration) bool {
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			return true
		}
		if room := time.Until(l.until) - l.margin; room < left {
			left = max(room, 0)
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		if !l.live() {
			if ok, err := l.renew(ctx, s.cfg.LeaseTTL); err != nil || !ok {
				return false
			}
		}
	}
}

// backoff is the wait after the n-th consecutive failure: BackoffMin
// doubled n-1 times, capped at BackoffMax, with full jitter over its
// upper half (so that retries of many Subscriptions do not align).
func (s *Service) backoff(n int) time.Duration {
	d := s.cfg.BackoffMin
	for i := 1; i < n && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

func (s *Service) failed(stream string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[stream]++
	return s.failures[stream]
}

// succeeded ends the failure run.
func (s *Service) succeeded(stream string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failures, stream)
}

// deliver sends one notification: of one event, or, for a topic-based
// Subscription with backport-max-count, of the events of batch (batchOf).
// An R4 Subscription's event is a POST with no body for an empty payload,
// or, with payload application/fhir+json, a PUT of the version (as the
// owner may receive it, through the output filter) to endpoint/Type/id,
// as R4 rest-hook describes; a topic-based Subscription's notification
// Bundle is POSTed to the endpoint.
func (s *Service) deliver(ctx context.Context, client *http.Client, sb *sub, batch []storage.Event) error {
	ev := batch[0]
	e, err := decodeEvent(ev.Data)
	if err != nil {
		return err
	}
	method, url := http.MethodPost, sb.Endpoint
	var body []byte
	switch {
	case sb.Topic != "":
		if body, err = s.notification(ctx, sb, batch, e); err != nil {
			return err
		}
	case e.Kind != "":
		return nil // a handshake of a Subscription that is no longer topic-based
	case sb.Payload == payloadFHIRJSON:
		f, err := s.focusOf(ctx, sb, e.Type, e.ID, e.Version, contentFull)
		if err != nil {
			return err
		}
		method, url, body = http.MethodPut, strings.TrimRight(sb.Endpoint, "/")+"/"+e.Type+"/"+f.id, f.json
	}
	if sb.Channel == channelWebsocket {
		if sb.Topic == "" {
			// R4 websocket: a ping; the client then searches or reads.
			body = []byte("ping " + sb.ID)
		}
		return s.sockets.send(ctx, sb.ID, body)
	}
	if err := s.send(ctx, client, sb, method, url, batchID(batch), body); err != nil {
		return err
	}
	s.sent(ctx, sb)
	return nil
}

// send makes one signed request to the Subscription's endpoint.
func (s *Service) send(ctx context.Context, client *http.Client, sb *sub, method, url, eventID string, body []byte) error {
	timeout := s.cfg.Timeout
	if sb.Timeout > 0 {
		timeout = min(timeout, sb.Timeout) // backport-timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building the request to %s: %w", sb.Endpoint, err)
	}
	for _, h := range sb.Headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if body != nil {
		req.Header.Set("Content-Type", payloadFHIRJSON)
	}
	req.Header.Set("User-Agent", "Anodyne-Subscriptions")
	req.Header.Set(HeaderEventID, eventID)
	req.Header.Set(HeaderSubscription, "Subscription/"+sb.ID)
	req.Header.Set(HeaderSignature, Sign(sb.Secret, eventID, body))
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, sb.Endpoint, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, s.cfg.MaxResponse))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s answered %s", method, sb.Endpoint, resp.Status)
	}
	return nil
}

// notification builds a backport notification Bundle for the events of
// batch (or the handshake, which is alone in its batch).
func (s *Service) notification(ctx context.Context, sb *sub, batch []storage.Event, first eventV1) ([]byte, error) {
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	if first.Kind == kindHandshake {
		n, err := s.eventCount(ctx, sb.ID)
		if err != nil {
			return nil, err
		}
		return json.Marshal(notificationBundle(srv.Base(), sb, notice{kind: noticeHandshake, status: sb.Status, since: n}, sb.Content))
	}
	nt := notice{kind: noticeEvent, status: sb.Status}
	if nt.status == statusRequested {
		nt.status = statusActive
	}
	for i, ev := range batch {
		e := first
		if i > 0 {
			if e, err = decodeEvent(ev.Data); err != nil {
				return nil, err
			}
		}
		f, err := s.focusOf(ctx, sb, e.Type, e.ID, e.Version, sb.Content)
		if err != nil {
			return nil, err
		}
		// Numbered in stream order, so the numbers of a batch ascend and
		// a retry (of a batch cut differently) reuses them.
		if f.n, err = s.eventNumber(ctx, sb.ID, ev.ID, logEntry{Type: e.Type, ID: e.ID, Version: e.Version, At: f.at}); err != nil {
			return nil, err
		}
		nt.events = append(nt.events, f)
		nt.since = f.n
	}
	return json.Marshal(notificationBundle(srv.Base(), sb, nt, sb.Content))
}

// setStatus writes the Subscription's status (and error text) through
// the server's commit path, as the server's own change.
func (s *Service) setStatus(ctx context.Context, id, status, why string) error {
	srv, err := s.server()
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 3; attempt++ {
		rec, err := s.cfg.Backend.Read(ctx, "Subscription", id)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && rec.Deleted) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading Subscription/%s: %w", id, err)
		}
		res, err := decode(rec.JSON)
		if err != nil {
			return err
		}
		if stringAt(res, "status") == status && stringAt(res, "error") == why {
			return nil
		}
		res["status"] = status
		if why != "" {
			res["error"] = why
		} else {
			delete(res, "error")
		}
		_, err = srv.PutOwned(context.WithValue(ctx, ownedKey{}, true), res, rec.VersionID)
		if errors.Is(err, storage.ErrVersionConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("setting Subscription/%s %s: %w", id, status, err)
		}
		return nil
	}
	return fmt.Errorf("setting Subscription/%s %s: it kept changing", id, status)
}
