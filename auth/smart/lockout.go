package smart

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
)

// pfxLockout keys the failed-sign-in record of a user name. It lives in
// the store like the rest of the auth state, so every process behind one
// database sees the same lock, and it survives restarts.
const pfxLockout = "auth/lockout/"

// Lockout is the account lock-out policy of password sign-in: after
// Threshold consecutive failures the user name is locked for Base, then
// for twice as long at each further run of failures, up to Max. A
// successful sign-in clears the record; a record with no failure for a day
// lapses. Unknown user names are counted and locked exactly like real
// ones, so the lock reveals nothing about which accounts exist.
type Lockout struct {
	Threshold int
	Base, Max time.Duration
}

// withDefaults fills unset fields: 5 failures lock for 1 minute, then 2,
// 4, … up to 1 hour.
func (l Lockout) withDefaults() Lockout {
	d := Lockout{Threshold: 5, Base: time.Minute, Max: time.Hour}
	if l.Threshold > 0 {
		d.Threshold = l.Threshold
	}
	if l.Base > 0 {
		d.Base = l.Base
	}
	if l.Max > 0 {
		d.Max = l.Max
	}
	if d.Max < d.Base {
		d.Max = d.Base
	}
	return d
}

// lockRecord is the stored state of one user name.
type lockRecord struct {
	Failures    int       `json:"failures"`
	Level       int       `json:"level"` // how many locks so far: the next lasts Base<<Level
	LockedUntil time.Time `json:"locked_until,omitzero"`
}

// lockedUntil reports when the user name's lock ends, or the zero time.
func (s *Server) lockedUntil(ctx context.Context, username string) (time.Time, error) {
	var r lockRecord
	err := s.kv.getJSON(ctx, pfxLockout+strings.ToLower(username), &r)
	if notFound(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	if s.now().Before(r.LockedUntil) {
		return r.LockedUntil, nil
	}
	return time.Time{}, nil
}

// signInFailed counts a failure and locks the user name when the run
// reaches the threshold. The count is a compare-and-swap of the user
// name's record, so concurrent failures, in this process or any other on
// the same store, each count once.
func (s *Server) signInFailed(ctx context.Context, username, source, clientID string) error {
	key := pfxLockout + strings.ToLower(username)
	pol := s.cfg.Lockout.withDefaults()
	for {
		old, err := s.kv.Get(ctx, key)
		if err != nil && !notFound(err) {
			return fmt.Errorf("read failed sign-ins: %w", err)
		}
		var r lockRecord
		if old != nil {
			if err := json.Unmarshal(old, &r); err != nil {
				return fmt.Errorf("decode failed sign-ins: %w", err)
			}
		}
		r.Failures++
		locked := r.Failures >= pol.Threshold
		if locked {
			d := pol.Base << min(r.Level, 30)
			if d <= 0 || d > pol.Max {
				d = pol.Max
			}
			r.LockedUntil = s.now().Add(d)
			r.Level++
			r.Failures = 0
		}
		raw, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode failed sign-ins: %w", err)
		}
		ttl := 24*time.Hour + time.Until(r.LockedUntil).Abs()
		var stored bool
		if old == nil {
			stored, err = s.kv.PutIfAbsent(ctx, key, raw, ttl)
		} else {
			stored, err = s.kv.CompareAndSwap(ctx, key, old, raw, ttl)
		}
		if err != nil {
			return fmt.Errorf("record failed sign-in: %w", err)
		}
		if !stored {
			continue // another failure counted first: count on top of it
		}
		if !locked {
			return nil
		}
		// A security event for the operator: who, from where, until when.
		s.log.LogAttrs(ctx, slog.LevelWarn, "account locked after repeated failed sign-ins",
			slog.String("event", "account-lockout"), slog.String("username", username),
			slog.String("source", source), slog.Time("until", r.LockedUntil), slog.Int("lock", r.Level))
		// The lock is in force whatever happens here; a lost audit
		// record fails the request so that it cannot go unnoticed.
		return s.auditLockout(ctx, username, source, clientID, r, pol.Threshold)
	}
}

// Codes of the lock-out AuditEvent: DICOM "User Authentication" / "Login"
// (what failed), and Anodyne's own subtype saying that it was a lock-out,
// so that an administrator finds them with
// AuditEvent?subtype=<lockoutSystem>|account-lockout.
const (
	dicomSystem   = "http://dicom.nema.org/resources/ontology/DCM"
	lockoutSystem = "https://github.com/anodyne-fhir/anodyne/CodeSystem/audit-event-subtype"
	// maxAuditName bounds the user name as typed in the record.
	maxAuditName = 256
)

// auditLockout records the lock-out r of username as an AuditEvent.
func (s *Server) auditLockout(ctx context.Context, username, source, clientID string, r lockRecord, failures int) error {
	if s.cfg.Audit == nil {
		return nil
	}
	name := username
	if len(name) > maxAuditName {
		name = strings.ToValidUTF8(name[:maxAuditName], "") + "…"
	}
	ev := auth.AuditEvent{
		Time: s.now().UTC(), Action: "E", Outcome: http.StatusUnauthorized,
		ClientID: clientID, User: name, Source: s.cfg.BaseURL, RemoteAddr: source,
		Category: auth.AuditCategory{
			Type: auth.AuditCoding{System: dicomSystem, Code: "110114", Display: "User Authentication"},
			Subtypes: []auth.AuditCoding{
				{System: dicomSystem, Code: "110122", Display: "Login"},
				{System: lockoutSystem, Code: "account-lockout", Display: "Account locked after repeated failed sign-ins"},
			},
		},
		Description: fmt.Sprintf("user name locked until %s after %d consecutive failed sign-ins (lock %d)",
			r.LockedUntil.UTC().Format(time.RFC3339), failures, r.Level),
	}
	if err := s.cfg.Audit.RecordAudit(ctx, ev); err != nil {
		return fmt.Errorf("audit account lock-out: %w", err)
	}
	return nil
}

// signInSucceeded clears the user name's failures.
func (s *Server) signInSucceeded(ctx context.Context, username string) error {
	err := s.kv.Delete(ctx, pfxLockout+strings.ToLower(username))
	if err != nil && !notFound(err) {
		return fmt.Errorf("clear failed sign-ins: %w", err)
	}
	return nil
}
