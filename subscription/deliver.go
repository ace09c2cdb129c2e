package subscription

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
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
	if s.cfg.Exclusive {
		if err := clearLeases(ctx, s.cfg.Backend.KV()); err != nil {
			s.log.Error("subscription: clearing leases of a previous run", "err", err)
		}
	}
	client := s.policy.client(s.cfg.Timeout)
	var wg sync.WaitGroup
	defer wg.Wait()
	busy := map[string]bool{}
	var busyMu sync.Mutex
	reload := time.NewTicker(s.cfg.Reload)
	defer reload.Stop()
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
			s.expire(ctx)
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
			busyMu.Lock()
			if busy[st] {
				busyMu.Unlock()
				continue
			}
			l, ok, err := acquire(ctx, s.cfg.Backend.KV(), st, s.holder, s.cfg.LeaseTTL, s.cfg.Timeout+2*time.Second)
			if err != nil || !ok {
				busyMu.Unlock()
				if err != nil && ctx.Err() == nil {
					s.log.Error("subscription: lease", "stream", st, "err", err)
				}
				continue
			}
			busy[st] = true
			busyMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.deliverStream(ctx, client, st, l)
				if err := l.release(context.WithoutCancel(ctx)); err != nil {
					s.log.Warn("subscription: releasing lease", "stream", st, "err", err)
				}
				busyMu.Lock()
				delete(busy, st)
				busyMu.Unlock()
				s.poke() // look again: events may have arrived meanwhile
			}()
		}
		poll.Reset(s.cfg.Poll)
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
	for ctx.Err() == nil {
		if !l.live() {
			if ok, err := l.renew(ctx, s.cfg.LeaseTTL); err != nil || !ok {
				return
			}
		}
		evs, err := s.outbox.OutboxRead(ctx, stream, 16)
		if err != nil {
			s.log.Error("subscription: reading the outbox", "stream", stream, "err", err)
			return
		}
		if len(evs) == 0 {
			return
		}
		for _, ev := range evs {
			sb, err := s.lookup(ctx, id)
			if err != nil {
				s.log.Error("subscription: reading", "subscription", id, "err", err)
				return
			}
			if sb == nil || sb.Status == statusOff || sb.ended(time.Now()) {
				// Deleted, off or over: nothing of it is delivered any more.
				if sb != nil && sb.Status != statusOff {
					if err := s.setStatus(ctx, id, statusOff, ""); err != nil {
						s.log.Warn("subscription: turning off at end", "subscription", id, "err", err)
					}
				}
				if err := s.outbox.OutboxPurge(ctx, stream); err != nil {
					s.log.Error("subscription: dropping events", "stream", stream, "err", err)
				}
				return
			}
			if !l.live() {
				if ok, err := l.renew(ctx, s.cfg.LeaseTTL); err != nil || !ok {
					return
				}
			}
			derr := s.deliver(ctx, client, sb, ev)
			if derr == nil {
				if err := s.outbox.OutboxDelete(context.WithoutCancel(ctx), stream, ev.ID); err != nil {
					s.log.Error("subscription: acknowledging event (it will be sent again)", "stream", stream, "event", ev.ID, "err", err)
					return
				}
				s.succeeded(stream)
				if sb.Status == statusError {
					if err := s.setStatus(ctx, id, statusActive, ""); err != nil {
						s.log.Warn("subscription: back to active", "subscription", id, "err", err)
					}
				}
				continue
			}
			if ctx.Err() != nil {
				return
			}
			n := s.failed(stream)
			s.log.Warn("subscription: delivery failed", "subscription", id, "event", ev.ID, "failures", n, "err", derr)
			if n == s.cfg.FailuresBeforeError && sb.Status != statusError {
				if err := s.setStatus(ctx, id, statusError, derr.Error()); err != nil {
					s.log.Warn("subscription: marking error", "subscription", id, "err", err)
				}
			}
			if !s.wait(ctx, l, s.backoff(n)) {
				return
			}
			break // read the stream again from its head
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

// deliver sends one event: POST with no body for an empty payload, or,
// with payload application/fhir+json, PUT of the version (as the owner
// may receive it, through the output filter) to endpoint/Type/id, as R4
// rest-hook describes.
func (s *Service) deliver(ctx context.Context, client *http.Client, sb *sub, ev storage.Event) error {
	e, err := decodeEvent(ev.Data)
	if err != nil {
		return err
	}
	method, url := http.MethodPost, sb.Endpoint
	var body []byte
	if sb.Payload == payloadFHIRJSON {
		srv, err := s.server()
		if err != nil {
			return err
		}
		rec, err := s.cfg.Backend.ReadVersion(ctx, e.Type, e.ID, e.Version)
		if err != nil {
			return fmt.Errorf("reading %s/%s version %d: %w", e.Type, e.ID, e.Version, err)
		}
		octx := ctx
		if sb.Owner != nil {
			octx = auth.WithPrincipal(ctx, sb.Owner.principal())
		}
		raw, vid, err := srv.Emit(octx, rec)
		if err != nil {
			return fmt.Errorf("filtering %s/%s for the subscriber: %w", e.Type, e.ID, err)
		}
		method, url, body = http.MethodPut, strings.TrimRight(sb.Endpoint, "/")+"/"+e.Type+"/"+vid, raw
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
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
	req.Header.Set(HeaderEventID, ev.ID)
	req.Header.Set(HeaderSubscription, "Subscription/"+sb.ID)
	req.Header.Set(HeaderSignature, Sign(sb.Secret, ev.ID, body))
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
