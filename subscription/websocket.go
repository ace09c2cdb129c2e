package subscription

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// The websocket channel of the R5 Subscriptions Backport for R4: a client
// asks Subscription/{id}/$get-ws-binding-token (authorized like a read of
// the Subscription, for its owner only) for a short-lived token, opens
// the websocket URL the answer (and the CapabilityStatement) names, and
// sends "bind-with-token <token>". The server answers with a handshake
// notification Bundle, then sends each notification Bundle as a text
// message, and a heartbeat Bundle after heartbeatPeriod without one.
//
// Events wait in the durable outbox until a client is bound: the process
// holding a bound socket claims the stream (by the same lease as
// rest-hook) and acknowledges an event once a socket took it.
const (
	channelRestHook  = "rest-hook"
	channelWebsocket = "websocket"

	// WebsocketPath is where the websocket endpoint is mounted (under the
	// server root, next to the FHIR base).
	WebsocketPath = "/fhir/ws"

	wsTokenPrefix = "subscription/ws-token/" // + hex SHA-256 of the token
	wsTokenTTL    = 5 * time.Minute
	wsReadLimit   = 4096
	wsWriteWait   = 10 * time.Second
)

// errNoSocket: no client of the Subscription is bound in this process.
var errNoSocket = errors.New("no websocket bound to the Subscription in this process")

// sockets are the websocket connections this process holds, by the
// Subscriptions bound on them.
type sockets struct {
	mu    sync.Mutex
	bound map[string]map[*wsConn]bool
}

type wsConn struct {
	c    *websocket.Conn
	mu   sync.Mutex
	last map[string]time.Time // Subscription id -> last message sent for it
}

func newSockets() *sockets { return &sockets{bound: map[string]map[*wsConn]bool{}} }

func (h *sockets) has(subID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.bound[subID]) > 0
}

func (h *sockets) bind(subID string, c *wsConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bound[subID] == nil {
		h.bound[subID] = map[*wsConn]bool{}
	}
	h.bound[subID][c] = true
}

func (h *sockets) drop(c *wsConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, set := range h.bound {
		delete(set, c)
		if len(set) == 0 {
			delete(h.bound, id)
		}
	}
}

// send writes a notification to every socket bound to subID in this
// process; it succeeds when at least one took it.
func (h *sockets) send(ctx context.Context, subID string, body []byte) error {
	h.mu.Lock()
	var conns []*wsConn
	for c := range h.bound[subID] {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	if len(conns) == 0 {
		return errNoSocket
	}
	var errs []error
	for _, c := range conns {
		if err := c.write(ctx, subID, body); err != nil {
			errs = append(errs, err)
			h.drop(c)
			_ = c.c.CloseNow()
		}
	}
	if len(errs) == len(conns) {
		return fmt.Errorf("websocket delivery: %w", errors.Join(errs...))
	}
	return nil
}

func (c *wsConn) write(ctx context.Context, subID string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, wsWriteWait)
	defer cancel()
	if err := c.c.Write(ctx, websocket.MessageText, body); err != nil {
		return err
	}
	c.mu.Lock()
	c.last[subID] = time.Now()
	c.mu.Unlock()
	return nil
}

func hashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// wsBinding is what a binding token stands for (stored by its hash).
type wsBinding struct {
	Subscription string `json:"subscription"`
}

// bindingToken is Subscription/{id}/$get-ws-binding-token.
func (s *Service) bindingToken(ctx context.Context, rec storage.Record, _ url.Values) (map[string]any, error) {
	sb, err := s.parseRecord(rec)
	if err != nil {
		return nil, err
	}
	if sb.Channel != channelWebsocket {
		return nil, invalid(http.StatusBadRequest, "invalid", "Subscription.channel.type", "Subscription/%s has channel %s, not websocket", sb.ID, sb.Channel)
	}
	if err := s.ownerOnly(ctx, sb); err != nil {
		return nil, err
	}
	srv, err := s.server()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	token := base64.RawURLEncoding.EncodeToString(b)
	v, _ := json.Marshal(wsBinding{Subscription: sb.ID})
	if err := s.cfg.Backend.KV().Put(ctx, wsTokenPrefix+hashToken(token), v, wsTokenTTL); err != nil {
		return nil, fmt.Errorf("storing a websocket binding token: %w", err)
	}
	return map[string]any{
		"resourceType": "Parameters",
		"parameter": []any{
			map[string]any{"name": "token", "valueString": token},
			map[string]any{"name": "expiration", "valueDateTime": time.Now().Add(wsTokenTTL).UTC().Format(time.RFC3339)},
			map[string]any{"name": "subscription", "valueString": sb.ID},
			map[string]any{"name": "websocket-url", "valueUrl": wsURL(srv.Base())},
		},
	}, nil
}

// wsURL is the websocket endpoint for a FHIR base.
func wsURL(base string) string {
	root := strings.TrimSuffix(base, "/fhir")
	switch {
	case strings.HasPrefix(root, "https://"):
		root = "wss://" + strings.TrimPrefix(root, "https://")
	case strings.HasPrefix(root, "http://"):
		root = "ws://" + strings.TrimPrefix(root, "http://")
	}
	return root + WebsocketPath
}

// ownerOnly refuses a caller that is not the Subscription's owner (with
// authorization on): what the operation hands out acts for the owner.
func (s *Service) ownerOnly(ctx context.Context, sb *sub) error {
	if s.cfg.Authorizer == nil || sb.Owner == nil {
		return nil
	}
	p := auth.FromContext(ctx)
	if p == nil || p.ClientID != sb.Owner.Client {
		return invalid(http.StatusForbidden, "forbidden", "Subscription", "only the client that owns Subscription/%s may use it", sb.ID)
	}
	return nil
}

// ServeWebsocket is the websocket endpoint (mount it at WebsocketPath).
// It needs no bearer token: a binding token, which only the owner of a
// Subscription can obtain with its bearer token, authorizes each bind.
func (s *Service) ServeWebsocket(w http.ResponseWriter, r *http.Request) {
	// A socket outlives the HTTP server's write timeout.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	_ = rc.SetReadDeadline(time.Time{})
	// Any origin: a browser app on another origin binds with a token
	// only its owner's bearer token could obtain (no ambient credentials).
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Info("subscription: websocket upgrade refused", "err", err)
		return
	}
	c.SetReadLimit(wsReadLimit)
	conn := &wsConn{c: c, last: map[string]time.Time{}}
	// The R4 protocol's binds act with the upgrade request's bearer token.
	authCtx, authErr := s.wsAuthenticate(r)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	s.mu.Lock()
	s.conns[conn] = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		s.sockets.drop(conn)
		_ = c.CloseNow()
	}()
	go s.wsHeartbeats(ctx, conn)
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			_ = c.Close(websocket.StatusUnsupportedData, "text messages only")
			return
		}
		cmd, arg, _ := strings.Cut(strings.TrimSpace(string(msg)), " ")
		switch cmd {
		case "bind":
			id := strings.TrimSpace(arg)
			if err := s.wsBindLegacy(ctx, authCtx, authErr, conn, id); err != nil {
				s.log.Info("subscription: websocket bind refused", "subscription", id, "err", err)
				_ = c.Close(websocket.StatusPolicyViolation, closeReason("bind refused: "+err.Error()))
				return
			}
		case "bind-with-token":
			if err := s.wsBind(ctx, conn, strings.TrimSpace(arg)); err != nil {
				s.log.Info("subscription: websocket bind refused", "err", err)
				_ = c.Close(websocket.StatusPolicyViolation, closeReason("bind refused: "+err.Error()))
				return
			}
		default:
			_ = c.Close(websocket.StatusPolicyViolation, "unknown message (send: bind-with-token TOKEN, or bind ID)")
			return
		}
	}
}

var errBadToken = errors.New("unknown or expired binding token")

// closeReason fits a close frame's reason (at most 123 bytes, RFC 6455
// 5.5): a longer one makes the close fail and the client sees only EOF.
func closeReason(s string) string {
	const max = 123
	if len(s) <= max {
		return s
	}
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// wsAuthenticate verifies the upgrade request's bearer token, if any.
func (s *Service) wsAuthenticate(r *http.Request) (context.Context, error) {
	raw, ok := auth.BearerToken(r)
	switch {
	case !ok:
		return nil, errors.New("the websocket was opened without a bearer token (Authorization header)")
	case s.cfg.Authenticate == nil:
		return nil, errors.New("bearer tokens are not checked on this websocket")
	}
	ctx, err := s.cfg.Authenticate(context.Background(), raw)
	if err != nil {
		return nil, fmt.Errorf("the bearer token is invalid, expired or revoked: %w", err)
	}
	return ctx, nil
}

// wsBindLegacy binds the socket to an R4 criteria Subscription ("bind ID",
// answered "bound ID"), for its owner as the upgrade's token says.
func (s *Service) wsBindLegacy(ctx, authCtx context.Context, authErr error, conn *wsConn, id string) error {
	if id == "" {
		return errors.New("bind needs a Subscription id")
	}
	sb, err := s.lookup(ctx, id)
	if err != nil {
		return err
	}
	if sb == nil || sb.Channel != channelWebsocket || sb.Topic != "" || sb.Status == statusOff || sb.ended(time.Now()) {
		return fmt.Errorf("Subscription/%s is not an active R4 websocket Subscription", id)
	}
	if s.cfg.Authenticate != nil {
		if authCtx == nil {
			return authErr
		}
		if err := s.ownerOnly(authCtx, sb); err != nil {
			return errors.New("only the client that owns the Subscription may bind it")
		}
	}
	if err := conn.write(ctx, sb.ID, []byte("bound "+sb.ID)); err != nil {
		return err
	}
	s.sockets.bind(sb.ID, conn)
	s.poke()
	return nil
}

// wsBind binds the socket to the token's Subscription and sends the
// handshake.
func (s *Service) wsBind(ctx context.Context, conn *wsConn, token string) error {
	if token == "" {
		return errBadToken
	}
	v, err := s.cfg.Backend.KV().Get(ctx, wsTokenPrefix+hashToken(token))
	if errors.Is(err, storage.ErrNotFound) {
		return errBadToken
	}
	if err != nil {
		return fmt.Errorf("reading the binding token: %w", err)
	}
	var b wsBinding
	if err := json.Unmarshal(v, &b); err != nil || b.Subscription == "" {
		return errBadToken
	}
	sb, err := s.lookup(ctx, b.Subscription)
	if err != nil {
		return err
	}
	if sb == nil || sb.Channel != channelWebsocket || sb.Status == statusOff || sb.ended(time.Now()) {
		return fmt.Errorf("Subscription/%s is not an active websocket Subscription", b.Subscription)
	}
	srv, err := s.server()
	if err != nil {
		return err
	}
	n, err := s.eventCount(ctx, sb.ID)
	if err != nil {
		return err
	}
	hs, err := json.Marshal(notificationBundle(srv.Base(), sb, notice{kind: noticeHandshake, status: sb.Status, since: n}, sb.Content))
	if err != nil {
		return err
	}
	if err := conn.write(ctx, sb.ID, hs); err != nil {
		return err
	}
	s.sockets.bind(sb.ID, conn)
	s.poke() // claim the stream: events may be waiting
	return nil
}

// wsHeartbeats sends a heartbeat Bundle for each bound Subscription with
// a heartbeatPeriod that had no message for that long.
func (s *Service) wsHeartbeats(ctx context.Context, conn *wsConn) {
	t := time.NewTicker(s.cfg.Check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		conn.mu.Lock()
		due := map[string]time.Time{}
		for id, at := range conn.last {
			due[id] = at
		}
		conn.mu.Unlock()
		for id, at := range due {
			a := s.reg.get(id)
			if a == nil || a.sub.Heartbeat <= 0 || time.Since(at) < a.sub.Heartbeat {
				continue
			}
			body, err := s.heartbeat(ctx, a.sub)
			if err == nil {
				err = conn.write(ctx, id, body)
			}
			if err != nil {
				s.log.Info("subscription: websocket heartbeat", "subscription", id, "err", err)
				_ = conn.c.CloseNow()
				return
			}
		}
	}
}

// closeSockets ends every websocket (the Service is stopping).
func (s *Service) closeSockets() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, cancel := range s.conns {
		_ = c.c.Close(websocket.StatusGoingAway, "server stopping")
		cancel()
	}
}
