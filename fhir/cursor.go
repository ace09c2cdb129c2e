package fhir

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Paging links carry the backend's cursor inside a token signed with the
// server's key and bound to the query that produced it, so that a client
// can neither forge a cursor nor graft one onto a different query (for
// example one outside its authorization filter).

const cursorParam = "_cursor"

// canonicalQuery is the query as it is bound into cursors and written in
// links: parameters sorted, the cursor and formatting parameters left out
// (they do not change the result set).
func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		switch k {
		case cursorParam, "_format", "_pretty":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		vs := slices.Clone(q[k])
		for _, v := range vs {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(k))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	return b.String()
}

func (s *Server) cursorMAC(binding, backendCursor string) []byte {
	m := hmac.New(sha256.New, s.cursorKey)
	m.Write([]byte(binding))
	m.Write([]byte{0})
	m.Write([]byte(backendCursor))
	return m.Sum(nil)
}

// sealCursor wraps a backend cursor for the query identified by binding.
// The backend cursor is encrypted (AES-GCM, the binding as additional
// data), not only signed: it holds the sort values and the stored id of
// the last row, which a caller behind an output view (research
// pseudonyms, shifted dates) must not read from its paging links.
func (s *Server) sealCursor(binding, backendCursor string) string {
	enc := base64.RawURLEncoding
	aead := s.cursorAEAD()
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // does not fail on supported platforms
	}
	sealed := aead.Seal(nonce, nonce, []byte(backendCursor), []byte(binding))
	return enc.EncodeToString(sealed) + "." + enc.EncodeToString(s.cursorMAC(binding, backendCursor))
}

// cursorAEAD derives the cursor encryption key from the cursor key.
func (s *Server) cursorAEAD() cipher.AEAD {
	k := sha256.Sum256(append([]byte("anodyne cursor encryption\x00"), s.cursorKey...))
	block, _ := aes.NewCipher(k[:]) // a 32-byte key cannot be refused
	aead, _ := cipher.NewGCM(block)
	return aead
}

// openCursor returns the backend cursor inside token, or an error when the
// token was not sealed by this server for this query.
func (s *Server) openCursor(binding, token string) (string, error) {
	enc := base64.RawURLEncoding
	payload, sig, ok := strings.Cut(token, ".")
	if !ok {
		return "", errBadRequest("invalid paging cursor")
	}
	sealed, err1 := enc.DecodeString(payload)
	mac, err2 := enc.DecodeString(sig)
	aead := s.cursorAEAD()
	if err1 != nil || err2 != nil || len(sealed) < aead.NonceSize() {
		return "", errBadRequest("invalid paging cursor")
	}
	raw, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], []byte(binding))
	if err != nil || !hmac.Equal(mac, s.cursorMAC(binding, string(raw))) {
		return "", errBadRequest("invalid paging cursor: it does not belong to this query")
	}
	return string(raw), nil
}

// pageLinks builds Bundle.link self and next for a page at path (relative
// to the FHIR base) with the canonical query q.
func (s *Server) pageLinks(path, binding, query, next string) []any {
	self := s.base + path
	if query != "" {
		self += "?" + query
	}
	links := []any{map[string]any{"relation": "self", "url": self}}
	if next != "" {
		sep := "?"
		if query != "" {
			sep = "&"
		}
		links = append(links, map[string]any{
			"relation": "next",
			"url":      self + sep + cursorParam + "=" + url.QueryEscape(s.sealCursor(binding, next)),
		})
	}
	return links
}
