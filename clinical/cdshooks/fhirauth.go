package cdshooks

import (
	"context"
	"fmt"
	"net/http"

	"github.com/anodyne-fhir/anodyne/auth"
)

// checkSelfAuthorization verifies the hook's fhirAuthorization when
// fhirServer is this server, as the FHIR API would verify the token, and
// returns a context carrying the caller it names (nil when there is no
// such token to check). The request is refused (403) when the token is
// not valid here, when it is bound to another patient than
// context.patientId (its SMART launch patient), or when it was issued to
// another client than fhirAuthorization.subject (CDS Hooks 2.0: the CDS
// service's client id at the authorization server): a token handed over
// for one purpose is not used for another. A remote server's token is
// checked by that server when the service fetches with it.
func (s *Service) checkSelfAuthorization(ctx context.Context, req *Request, patient string) (context.Context, error) {
	a := req.FHIRAuthorization
	if a == nil || !s.isSelf(req.FHIRServer) || s.cfg.SelfAuth == nil {
		return nil, nil
	}
	actx, err := s.cfg.SelfAuth(ctx, a.AccessToken)
	if err != nil {
		return nil, forbidden("fhirAuthorization.access_token is not valid at %s: %v", req.FHIRServer, err)
	}
	p := auth.FromContext(actx)
	if p == nil {
		return actx, nil
	}
	if p.Patient != "" && p.Patient != patient {
		return nil, forbidden("the fhirAuthorization token is bound to another patient than context.patientId %q", patient)
	}
	if a.Subject != "" && p.ClientID != "" && a.Subject != p.ClientID {
		return nil, forbidden("fhirAuthorization.subject %q is not the client the access token was issued to", a.Subject)
	}
	return actx, nil
}

func forbidden(format string, args ...any) error {
	return &callError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf(format, args...)}
}
