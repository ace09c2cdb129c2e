package auth

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
)

// maxHeld is how much of a response holdWriter keeps back while its audit
// record is not yet durable. A larger answer (a bulk file, a big page) has
// its record stored when it reaches this size, before its first byte goes
// out, and then streams.
const maxHeld = 4 << 20

// holdWriter keeps a response (status, headers, body) from the client
// until release has stored the request's audit record, so that no data
// leaves before the record of its disclosure is durable: net/http would
// otherwise send any answer larger than its buffer while the handler is
// still writing, before the middleware records it. A record that cannot
// be stored is then answered with 503 instead of the data.
type holdWriter struct {
	http.ResponseWriter
	record   func(status int) error // stores the audit record
	status   int
	buf      bytes.Buffer
	released bool
	err      error // the record's failure, once released
	refused  bool  // the record failed: a 503 went out instead
}

func (h *holdWriter) WriteHeader(status int) {
	if h.released {
		h.ResponseWriter.WriteHeader(status)
		return
	}
	if h.status == 0 {
		h.status = status
	}
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if h.released {
		if h.err != nil {
			return 0, h.err
		}
		return h.ResponseWriter.Write(p)
	}
	if h.status == 0 {
		h.status = http.StatusOK
	}
	h.buf.Write(p)
	if h.buf.Len() > maxHeld {
		if err := h.release(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush is a request to send now: the record is stored first.
func (h *holdWriter) Flush() {
	if !h.released && h.release() != nil {
		return
	}
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over (the websocket channel): from then on
// the handler owns it and records what it sends itself.
func (h *holdWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("auth: the response writer cannot be hijacked")
	}
	h.released = true
	return hj.Hijack()
}

func (h *holdWriter) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// release stores the record, then sends what was held; when the record
// fails, it sends a 503 OperationOutcome instead and returns the error.
func (h *holdWriter) release() error {
	if h.released {
		return h.err
	}
	h.released = true
	status := h.status
	if status == 0 {
		status = http.StatusOK
	}
	if err := h.record(status); err != nil {
		h.err, h.refused = err, true
		hd := h.ResponseWriter.Header()
		for k := range hd {
			delete(hd, k)
		}
		hd.Set("Content-Type", "application/fhir+json")
		hd.Set("Retry-After", "5")
		h.ResponseWriter.WriteHeader(http.StatusServiceUnavailable)
		_, _ = h.ResponseWriter.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"the audit trail cannot record this request now; nothing was disclosed, retry later"}]}`))
		return err
	}
	if h.status != 0 {
		h.ResponseWriter.WriteHeader(h.status)
	}
	if h.buf.Len() > 0 {
		if _, err := h.ResponseWriter.Write(h.buf.Bytes()); err != nil {
			h.err = err
			return err
		}
	}
	h.buf = bytes.Buffer{}
	return nil
}
