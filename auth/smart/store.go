package smart

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/auth"
	"github.com/anodyne-fhir/anodyne/storage"
)

// KV key prefixes. Secrets (codes, tokens, launch values) appear only as
// SHA-256 hashes, so a leaked store does not leak usable credentials.
const (
	pfxClient    = "auth/client/"
	pfxAccount   = "auth/account/"
	pfxFederated = "auth/federated/"
	pfxLaunch    = "auth/launch/"
	pfxRequest   = "auth/request/"
	pfxCode      = "auth/code/"
	pfxRefresh   = "auth/refresh/"
	pfxAccess    = "auth/access/"
	pfxRevoked   = "auth/revoked-grant/"
	pfxJTI       = "auth/jti/"
	pfxUpstream  = "auth/upstream/"
	pfxKey       = "auth/key/"
	keyActive    = "auth/key-active"
)

// ClientType is the SMART client profile.
type ClientType string

// Client profiles (SMART App Launch: client-public, client-confidential-*).
const (
	ClientPublic     ClientType = "public"
	ClientSymmetric  ClientType = "confidential-symmetric"
	ClientAsymmetric ClientType = "confidential-asymmetric"
)

// Client is a registered application.
type Client struct {
	ID           string     `json:"client_id"`
	Name         string     `json:"name,omitempty"`
	Type         ClientType `json:"type"`
	SecretHash   string     `json:"secret_hash,omitempty"` // argon2id, symmetric clients only
	RedirectURIs []string   `json:"redirect_uris,omitempty"`
	// Scopes are the scopes the client may be granted (space-separated);
	// for backend services, its pre-authorisation.
	Scopes  string          `json:"scope"`
	JWKS    json.RawMessage `json:"jwks,omitempty"`
	JWKSURL string          `json:"jwks_uri,omitempty"`
	// Origins are the browser origins allowed by CORS on the token endpoint and the FHIR API.
	Origins []string `json:"origins,omitempty"`
	// LaunchEHR lets the client (an EHR) create launch contexts.
	LaunchEHR bool `json:"launch_ehr,omitempty"`
	// ResourceServer lets a confidential client introspect tokens of any
	// client (RFC 7662); other callers see only their own tokens.
	ResourceServer bool `json:"resource_server,omitempty"`
	// ResearchProject makes the client a research client of that project
	// (its tokens carry research_project); ResearchAccess is "rows"
	// (default) or "aggregates".
	ResearchProject string `json:"research_project,omitempty"`
	ResearchAccess  string `json:"research_access,omitempty"`
}

// Validate checks that a client registration is coherent.
func (c *Client) Validate() error {
	if c.ID == "" || strings.ContainsAny(c.ID, " /\t\n") {
		return fmt.Errorf("client id %q is empty or has spaces or slashes", c.ID)
	}
	switch c.ResearchAccess {
	case "", "rows", "aggregates":
	default:
		return fmt.Errorf("client %s: research access must be rows or aggregates, not %q", c.ID, c.ResearchAccess)
	}
	if c.ResearchAccess != "" && c.ResearchProject == "" {
		return fmt.Errorf("client %s: research access needs a research project", c.ID)
	}
	if c.ResearchProject != "" {
		if err := validResearchClient(c); err != nil {
			return fmt.Errorf("client %s: %w", c.ID, err)
		}
	}
	switch c.Type {
	case ClientPublic:
	case ClientSymmetric:
		if c.SecretHash == "" {
			return fmt.Errorf("client %s: a confidential-symmetric client needs a secret", c.ID)
		}
	case ClientAsymmetric:
		if len(c.JWKS) == 0 && c.JWKSURL == "" {
			return fmt.Errorf("client %s: a confidential-asymmetric client needs a JWKS or a JWKS URL", c.ID)
		}
		if len(c.JWKS) > 0 {
			if _, err := parseJWKS(c.JWKS); err != nil {
				return fmt.Errorf("client %s: %w", c.ID, err)
			}
		}
	default:
		return fmt.Errorf("client %s: unknown type %q", c.ID, c.Type)
	}
	for _, u := range append(append([]string{}, c.RedirectURIs...), c.Origins...) {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme == "" || pu.Host == "" {
			return fmt.Errorf("client %s: %q is not an absolute URL", c.ID, u)
		}
	}
	if c.JWKSURL != "" {
		if pu, err := url.Parse(c.JWKSURL); err != nil || pu.Scheme == "" || pu.Host == "" {
			return fmt.Errorf("client %s: jwks_uri %q is not an absolute URL", c.ID, c.JWKSURL)
		}
	}
	if sc := auth.ParseScopes(c.Scopes); len(sc.Malformed) > 0 {
		return fmt.Errorf("client %s: malformed scopes %v", c.ID, sc.Malformed)
	}
	return nil
}

// Account is a local user (or the mapping of a federated one).
type Account struct {
	Username     string `json:"username"`
	PasswordHash string `json:"password_hash,omitempty"`
	// FHIRUser is the Practitioner, Patient, PractitionerRole, RelatedPerson
	// or Person the user is ("Practitioner/123").
	FHIRUser string `json:"fhirUser"`
	// Patients are the ids the user may pick in a standalone launch; a
	// Patient user needs none (they get themselves).
	Patients []string `json:"patients,omitempty"`
	// Name is the display name released as the OpenID "name" claim to
	// apps granted the profile scope.
	Name string `json:"name,omitempty"`
}

// patientChoices is the list the patient picker offers.
func (a *Account) patientChoices() []string {
	if typ, id, ok := strings.Cut(a.FHIRUser, "/"); ok && typ == "Patient" {
		return []string{id}
	}
	return a.Patients
}

// LaunchContext is what an EHR establishes before launching an app.
type LaunchContext struct {
	Patient     string              `json:"patient,omitempty"`
	Encounter   string              `json:"encounter,omitempty"`
	FHIRContext []map[string]string `json:"fhirContext,omitempty"`
	NeedBanner  *bool               `json:"need_patient_banner,omitempty"`
	StyleURL    string              `json:"smart_style_url,omitempty"`
	Intent      string              `json:"intent,omitempty"`
	Tenant      string              `json:"tenant,omitempty"`
}

// profileClaims are the OpenID Connect standard claims (Core 5.1) of the
// profile scope that Anodyne knows about a user.
type profileClaims struct {
	Name              string `json:"name,omitempty"`
	PreferredUsername string `json:"preferred_username,omitempty"`
}

// grant is what a code, a refresh token and an access token stand for.
type grant struct {
	ClientID string        `json:"client_id"`
	Subject  string        `json:"sub,omitempty"`
	FHIRUser string        `json:"fhirUser,omitempty"`
	Scope    string        `json:"scope"`
	Context  LaunchContext `json:"context"`
	EHR      bool          `json:"ehr,omitempty"`
	Nonce    string        `json:"nonce,omitempty"`
	IDToken  bool          `json:"id_token,omitempty"`
	// Profile holds the OpenID profile claims captured at sign-in; they
	// are released only when the profile scope was granted.
	Profile *profileClaims `json:"profile,omitempty"`
	// Code only.
	RedirectURI string `json:"redirect_uri,omitempty"`
	Challenge   string `json:"code_challenge,omitempty"`
	// Access and refresh tokens.
	Expires int64 `json:"exp,omitempty"`
	Issued  int64 `json:"iat,omitempty"`
	// GrantID is shared by every access and refresh token of one
	// authorization (carried through refreshes), so that revoking a
	// refresh token revokes the access tokens of its grant.
	GrantID string `json:"gid,omitempty"`
	// Granted is the scope approved for the grant while a refresh narrows
	// Scope for one access token; never stored.
	Granted string `json:"-"`
}

// kv wraps storage.KV with JSON and hashing helpers.
type kv struct{ storage.KV }

func hashKey(prefix, secret string) string {
	h := sha256.Sum256([]byte(secret))
	return prefix + hex.EncodeToString(h[:])
}

func (s kv) putJSON(ctx context.Context, key string, v any, ttl time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := s.Put(ctx, key, b, ttl); err != nil {
		return fmt.Errorf("store %s: %w", keyLabel(key), err)
	}
	return nil
}

func (s kv) getJSON(ctx context.Context, key string, v any) error {
	b, err := s.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("load %s: %w", keyLabel(key), err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", keyLabel(key), err)
	}
	return nil
}

func (s kv) takeJSON(ctx context.Context, key string, v any) error {
	b, err := s.Take(ctx, key)
	if err != nil {
		return fmt.Errorf("take %s: %w", keyLabel(key), err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", keyLabel(key), err)
	}
	return nil
}

// keyLabel keeps hashed keys out of logs beyond their prefix.
func keyLabel(k string) string {
	if i := strings.LastIndexByte(k, '/'); i >= 0 && len(k)-i > 40 {
		return k[:i+1] + "…"
	}
	return k
}

func notFound(err error) bool { return errors.Is(err, storage.ErrNotFound) }

// randomToken returns n random bytes, base64url-encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand never fails on supported platforms (Go 1.24+ crashes instead).
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ClientStore is the registry of clients, used by the server, the admin
// API and the CLI.
type ClientStore struct{ kv kv }

// NewClientStore returns the client registry kept in store.
func NewClientStore(store storage.KV) *ClientStore { return &ClientStore{kv: kv{store}} }

// Put registers or replaces a client.
func (cs *ClientStore) Put(ctx context.Context, c *Client) error {
	if err := c.Validate(); err != nil {
		return err
	}
	return cs.kv.putJSON(ctx, pfxClient+c.ID, c, 0)
}

// Get returns a client; the error wraps storage.ErrNotFound for an unknown id.
func (cs *ClientStore) Get(ctx context.Context, id string) (*Client, error) {
	var c Client
	if err := cs.kv.getJSON(ctx, pfxClient+id, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Delete removes a client.
func (cs *ClientStore) Delete(ctx context.Context, id string) error {
	if _, err := cs.Get(ctx, id); err != nil {
		return err
	}
	if err := cs.kv.Delete(ctx, pfxClient+id); err != nil {
		return fmt.Errorf("delete client %s: %w", id, err)
	}
	return nil
}

// List returns every client, in id order.
func (cs *ClientStore) List(ctx context.Context) ([]*Client, error) {
	keys, err := cs.kv.List(ctx, pfxClient)
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	out := make([]*Client, 0, len(keys))
	for _, k := range keys {
		c, err := cs.Get(ctx, strings.TrimPrefix(k, pfxClient))
		if notFound(err) {
			continue // deleted between List and Get
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// NewSecret generates a client secret and its hash for a symmetric client.
func NewSecret() (secret, hash string, err error) {
	secret = randomToken(32)
	hash, err = HashPassword(secret)
	return secret, hash, err
}

// RegisterClient stores c; for a symmetric client it hashes secret, or
// generates one when secret is empty, and returns the clear secret.
func RegisterClient(ctx context.Context, cs *ClientStore, c *Client, secret string) (string, error) {
	c.SecretHash = ""
	if c.Type == ClientSymmetric {
		if secret == "" {
			var err error
			if secret, c.SecretHash, err = NewSecret(); err != nil {
				return "", err
			}
		} else {
			if len(secret) < 16 {
				return "", fmt.Errorf("client %s: the secret must have at least 16 characters", c.ID)
			}
			h, err := HashPassword(secret)
			if err != nil {
				return "", err
			}
			c.SecretHash = h
		}
	} else {
		secret = ""
	}
	if err := cs.Put(ctx, c); err != nil {
		return "", err
	}
	return secret, nil
}

// validResearchClient checks what only a research client must satisfy.
// The project name keys the project's pseudonym key and records in the
// store, so it is a plain name; a research client reads and never writes,
// so it may not hold a write scope, launch EHR contexts or introspect
// other clients' tokens.
func validResearchClient(c *Client) error {
	if err := auth.ValidResearchProject(c.ResearchProject); err != nil {
		return err
	}
	if c.LaunchEHR || c.ResourceServer {
		return errors.New("a research client cannot launch EHR contexts or introspect other tokens")
	}
	for _, sc := range auth.ParseScopes(c.Scopes).Resource {
		if strings.ContainsAny(sc.Letters, "cud") {
			return fmt.Errorf("research clients never write: scope %s grants %s", sc.Raw, sc.Letters)
		}
	}
	return nil
}
