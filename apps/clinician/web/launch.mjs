// SMART launch: EHR launch (the EHR opens this page with iss and launch)
// or standalone launch (iss defaults to this server's FHIR base; mode=
// worklist asks for user-level access, mode=patient for the patient
// picker). fhirclient discovers the endpoints, does PKCE and the redirect.
const CLIENT_ID = "anodyne-clinician";
const params = new URLSearchParams(location.search);
const status = document.getElementById("status");
const iss = params.get("iss") || new URL("/fhir", location.origin).href;
const launch = params.get("launch");
const mode = params.get("mode") || (launch ? "ehr" : "worklist");

const scopes = {
  ehr: "launch openid fhirUser profile user/*.rs patient/*.rs",
  worklist: "openid fhirUser profile user/*.rs",
  patient: "launch/patient openid fhirUser profile patient/*.rs",
};

if (!scopes[mode]) {
  status.textContent = `Unknown launch mode "${mode}".`;
  document.getElementById("choices").hidden = false;
} else {
  status.textContent = launch ? "Launched from the EHR: signing in…" : "Redirecting to sign-in…";
  FHIR.oauth2.authorize({
    clientId: CLIENT_ID,
    iss,
    launch: launch || undefined,
    scope: scopes[mode],
    redirectUri: new URL("./", location.href).href,
    pkceMode: "required",
  }).catch((err) => {
    status.textContent = "Sign-in could not start: " + (err && err.message ? err.message : err);
    document.getElementById("choices").hidden = false;
  });
}
