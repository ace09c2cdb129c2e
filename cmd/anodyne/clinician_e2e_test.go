package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/anodyne-fhir/anodyne/clinical/rpm"
	"github.com/anodyne-fhir/anodyne/demo"
)

// headlessChromium starts headless Chromium. Without one the test is skipped,
// except in CI (CI=true), where it fails: a browser test that silently
// stops running is no test.
func headlessChromium(t *testing.T) (context.Context, *consoleLog) {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	unavailable := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser test cannot run in CI: %s (install Debian's chromium)", why)
		}
		t.Skipf("no browser: %s", why)
	}
	if path == "" {
		unavailable("chromium not found on PATH")
	}
	// A start that fails on a loaded machine is tried once more.
	ctx, cl, err := startChromium(t, path)
	if err != nil {
		t.Logf("chromium did not start (%v); trying again", err)
		ctx, cl, err = startChromium(t, path)
	}
	if err != nil {
		unavailable("chromium did not start: " + err.Error())
	}
	return ctx, cl
}

// startChromium starts one headless Chromium with its own profile, stopped
// at the test's cleanup.
func startChromium(t *testing.T, path string) (context.Context, *consoleLog, error) {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900),
	}
	// Not t.TempDir: Chromium's helpers may still write there for a
	// moment after the browser is gone, which fails that cleanup.
	profile, err := os.MkdirTemp("", "anodyne-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, chromedp.UserDataDir(profile))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelC()
		cancelA()
		for i := 0; i < 20 && os.RemoveAll(profile) != nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
	})
	cl := &consoleLog{}
	chromedp.ListenTarget(ctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.APITypeError || e.Type == runtime.APITypeAssert {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				cl.add("console." + string(e.Type) + ": " + strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			cl.add("exception: " + e.ExceptionDetails.Text + " " + exceptionText(e.ExceptionDetails))
		case *network.EventRequestWillBeSent:
			// Every request the page makes to the FHIR API, counted by the
			// browser rather than by the app.
			if strings.Contains(e.Request.URL, "/fhir/") || strings.HasSuffix(e.Request.URL, "/fhir") {
				cl.fhirRequests.Add(1)
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.LevelError {
				cl.add("log: " + e.Entry.Text + " " + e.Entry.URL)
			}
		}
	})
	if err := chromedp.Run(ctx, log.Enable(), runtime.Enable(), network.Enable()); err != nil {
		return nil, nil, err
	}
	return ctx, cl, nil
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d.Exception != nil {
		return d.Exception.Description
	}
	return ""
}

// consoleLog collects the browser's console errors and counts the
// page's requests to the FHIR API.
type consoleLog struct {
	buf          syncBuffer
	fhirRequests atomic.Int64
}

func (c *consoleLog) add(s string) { c.buf.Write([]byte(s + "\n")) }

// drop forgets the errors that mention s (an expected failure).
func (c *consoleLog) drop(s string) {
	c.buf.mu.Lock()
	defer c.buf.mu.Unlock()
	var keep []string
	for _, l := range strings.Split(c.buf.b.String(), "\n") {
		if l != "" && !strings.Contains(l, s) {
			keep = append(keep, l+"\n")
		}
	}
	c.buf.b.Reset()
	c.buf.b.WriteString(strings.Join(keep, ""))
}

func (c *consoleLog) String() string {
	return c.buf.String()
}

func run1(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Run(tctx, actions...); err != nil {
		var html string
		_ = chromedp.Run(ctx, chromedp.OuterHTML("body", &html, chromedp.ByQuery))
		if len(html) > 3000 {
			html = html[:3000]
		}
		t.Fatalf("%s: %v\npage: %s", what, err, html)
	}
}

// signIn completes the authorization server's pages: sign-in, then
// consent (and the patient picker when it is shown).
func signIn(t *testing.T, ctx context.Context, user, password string, pick string) {
	t.Helper()
	run1(t, ctx, "sign in",
		chromedp.WaitVisible(`input[name=username]`, chromedp.ByQuery),
		chromedp.SendKeys(`input[name=username]`, user, chromedp.ByQuery),
		chromedp.SendKeys(`input[name=password]`, password, chromedp.ByQuery),
		chromedp.Click(`button[type=submit]`, chromedp.ByQuery),
	)
	if pick != "" {
		run1(t, ctx, "patient picker",
			chromedp.WaitVisible(`input[name=patient]`, chromedp.ByQuery),
			chromedp.Click(`input[name=patient][value="`+pick+`"]`, chromedp.ByQuery),
			chromedp.Click(`button[type=submit]`, chromedp.ByQuery),
		)
	}
	run1(t, ctx, "consent",
		chromedp.WaitVisible(`button[value=allow]`, chromedp.ByQuery),
		chromedp.Click(`button[value=allow]`, chromedp.ByQuery),
	)
}

// waitReady waits for the app to finish the screen of patient (or the
// worklist when patient is empty).
func waitReady(t *testing.T, ctx context.Context, patient string) {
	t.Helper()
	sel := `main#view[data-state=ready]:not([data-patient])`
	if patient != "" {
		sel = `main#view[data-state=ready][data-patient="` + patient + `"]`
	}
	run1(t, ctx, "wait for "+sel, chromedp.WaitVisible(sel, chromedp.ByQuery))
}

// serverCount asks the FHIR server, with the app's own token (read from
// fhirclient's session state), how many resources a search matches.
func serverCount(t *testing.T, ctx context.Context, search string) int {
	t.Helper()
	var total float64
	js := fmt.Sprintf(`(async () => {
		const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
		const st = JSON.parse(sessionStorage.getItem(key));
		const r = await fetch(st.serverUrl + "/" + %q + "&_summary=count",
			{headers: {Authorization: "Bearer " + st.tokenResponse.access_token, Accept: "application/fhir+json"}});
		return (await r.json()).total;
	})()`, search)
	run1(t, ctx, "count "+search, chromedp.Evaluate(js, &total, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
	return int(total)
}

// serverJSON reads a FHIR path with the app's own token (from
// fhirclient's session state), outside the app's code.
func serverJSON(t *testing.T, ctx context.Context, path string) map[string]any {
	t.Helper()
	var raw string
	js := fmt.Sprintf(`(async () => {
		const key = JSON.parse(sessionStorage.getItem("SMART_KEY"));
		const st = JSON.parse(sessionStorage.getItem(key));
		const r = await fetch(st.serverUrl + "/" + %q,
			{headers: {Authorization: "Bearer " + st.tokenResponse.access_token, Accept: "application/fhir+json"}});
		return String(r.status) + " " + await r.text();
	})()`, path)
	run1(t, ctx, "read "+path, chromedp.Evaluate(js, &raw, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	}))
	status, body, _ := strings.Cut(raw, " ")
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil || status != "200" {
		t.Fatalf("GET %s: %s %v: %.300s", path, status, err, body)
	}
	return m
}

// bundleResources lists the resources of a searchset's entries.
func bundleResources(b map[string]any) []map[string]any {
	var out []map[string]any
	list, _ := b["entry"].([]any)
	for _, e := range list {
		if r, ok := e.(map[string]any)["resource"].(map[string]any); ok {
			out = append(out, r)
		}
	}
	return out
}

func str(v any, path ...string) string {
	for _, k := range path {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

// checkAlerts compares the patient view's alerts with the server's active
// Flags and live DetectedIssues of the patient, and each alert's readings
// with the references the server recorded (Flag flag-detail, DetectedIssue
// implicated), each shown with its stored value.
func checkAlerts(t *testing.T, ctx context.Context, patient string) {
	t.Helper()
	want := map[string][]string{} // alert -> Observation references
	for _, r := range bundleResources(serverJSON(t, ctx, "Flag?patient="+patient+"&status=active&_count=200")) {
		var refs []string
		exts, _ := r["extension"].([]any)
		for _, e := range exts {
			if str(e, "url") == rpm.FlagDetailURL {
				refs = append(refs, str(e, "valueReference", "reference"))
			}
		}
		want["Flag/"+str(r, "id")] = refs
	}
	for _, r := range bundleResources(serverJSON(t, ctx, "DetectedIssue?patient="+patient+"&_count=200")) {
		if st := str(r, "status"); st == "cancelled" || st == "entered-in-error" || str(r, "identifiedPeriod", "end") != "" {
			continue
		}
		var refs []string
		imp, _ := r["implicated"].([]any)
		for _, x := range imp {
			if ref := str(x, "reference"); strings.HasPrefix(ref, "Observation/") {
				refs = append(refs, ref)
			}
		}
		want["DetectedIssue/"+str(r, "id")] = refs
	}
	if len(want) == 0 {
		t.Fatalf("the server holds no active alert for %s: nothing to check", patient)
	}
	raw := text(t, ctx, `JSON.stringify(Object.fromEntries([...document.querySelectorAll("#alerts li[data-alert]")].map(li =>
		[li.dataset.alert, [...li.querySelectorAll("[data-ref]")].map(s => [s.dataset.ref, s.textContent])])))`)
	var got map[string][][2]string
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatalf("alerts on the page %q: %v", raw, err)
	}
	if gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)); !slices.Equal(gk, wk) {
		t.Errorf("alerts on the page %v, the server's active ones %v", gk, wk)
	}
	var ids []string
	shown := map[string]string{}
	for alert, refs := range want {
		var gotRefs []string
		for _, r := range got[alert] {
			gotRefs = append(gotRefs, r[0])
			shown[r[0]] = r[1]
		}
		if !slices.Equal(slices.Sorted(slices.Values(gotRefs)), slices.Sorted(slices.Values(refs))) {
			t.Errorf("%s: readings on the page %v, on the server %v", alert, gotRefs, refs)
		}
		for _, r := range refs {
			ids = append(ids, strings.TrimPrefix(r, "Observation/"))
		}
	}
	if len(ids) == 0 {
		t.Fatalf("no alert of %s names a reading", patient)
	}
	for _, o := range bundleResources(serverJSON(t, ctx, "Observation?_id="+strings.Join(ids, ",")+"&_count=200")) {
		v, _ := o["valueQuantity"].(map[string]any)["value"].(float64)
		if s := shown["Observation/"+str(o, "id")]; !strings.HasPrefix(strings.TrimPrefix(s, ", "), strconv.FormatFloat(v, 'f', -1, 64)+" ") {
			t.Errorf("reading Observation/%s shown as %q, stored value %v", str(o, "id"), s, v)
		}
	}
}

func attr(t *testing.T, ctx context.Context, sel, name string) string {
	t.Helper()
	var v string
	var ok bool
	run1(t, ctx, "attribute "+name+" of "+sel, chromedp.AttributeValue(sel, name, &v, &ok, chromedp.ByQuery))
	if !ok {
		t.Fatalf("%s has no %s", sel, name)
	}
	return v
}

func text(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	var s string
	run1(t, ctx, js, chromedp.Evaluate(js, &s))
	return s
}

// TestClinicianApp drives the clinician app in headless Chromium against
// "anodyne demo": standalone sign-in through the real authorization
// pages, the worklist, the worsening patient's pain chart against the
// server's count for each range, the SpO2 band, MME, patient switching,
// EHR launch, a phone-width run, and no console errors throughout.
// ANODYNE_SCREENSHOTS=dir saves the screenshots the README shows.
func TestClinicianApp(t *testing.T) {
	ctx, console := headlessChromium(t)
	patients := 6
	if n, err := strconv.Atoi(os.Getenv("ANODYNE_E2E_PATIENTS")); err == nil && n >= 6 {
		patients = n
	}
	dir := t.TempDir()
	d := startDemo(t, "--data-dir", dir, "--patients", strconv.Itoa(patients))
	pw := passwordLine.FindStringSubmatch(d.out)
	if pw == nil {
		t.Fatalf("no password in:\n%s", d.out)
	}
	// What the server holds, worked out independently of the app: the
	// generator's plan for the same day.
	end, err := time.Parse("2006-01-02", regexp.MustCompile(`ending (\d{4}-\d\d-\d\d)`).FindStringSubmatch(d.out)[1])
	if err != nil {
		t.Fatal(err)
	}
	ds := demo.Generate(demo.Options{Patients: patients, End: end})
	var worse, other demo.PatientPlan
	for _, p := range ds.Patients {
		if p.Course == demo.Worsening && len(p.Breaches) > 0 && p.Breaches[0] == demo.LOINCSpO2 && worse.ID == "" {
			worse = p
		}
		if p.Course == demo.Improving && other.ID == "" {
			other = p
		}
	}
	if worse.ID == "" || other.ID == "" {
		t.Fatal("the demo plan has no worsening patient with an SpO2 breach")
	}
	shots := os.Getenv("ANODYNE_SCREENSHOTS")
	shot := func(name string) {
		if shots == "" {
			return
		}
		var png []byte
		run1(t, ctx, "screenshot", chromedp.Sleep(300*time.Millisecond), chromedp.FullScreenshot(&png, 100))
		if err := os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Standalone launch, user level: the worklist.
	run1(t, ctx, "open launch page", chromedp.Navigate(d.base+"/apps/clinician/launch.html?mode=worklist"))
	signIn(t, ctx, demoUser, pw[1], "")
	waitReady(t, ctx, "")
	rows := text(t, ctx, `JSON.stringify([...document.querySelectorAll("table.worklist tbody tr")].map(r => [r.dataset.patient, r.cells[2].textContent, r.cells[3].textContent, r.cells[1].textContent]))`)
	var got [][4]string
	if err := json.Unmarshal([]byte(rows), &got); err != nil || len(got) != patients {
		t.Fatalf("worklist rows %s (%v), want %d", rows, err, patients)
	}
	// Attention order: high-severity alerts, then alerts, then a worsening trend.
	alertCell := regexp.MustCompile(`^(\d+)(?: \((\d+) high\))?$`)
	rank := func(r [4]string) [3]int {
		m := alertCell.FindStringSubmatch(r[3])
		if m == nil {
			t.Fatalf("alert cell %q", r[3])
		}
		n, _ := strconv.Atoi(m[1])
		high, _ := strconv.Atoi(m[2])
		w := 0
		if strings.Contains(r[2], "worsening") {
			w = 1
		}
		return [3]int{high, n, w}
	}
	for i := 1; i < len(got); i++ {
		a, b := rank(got[i-1]), rank(got[i])
		if slices.Compare(a[:], b[:]) < 0 {
			t.Errorf("worklist row %v (%v) after %v (%v): not in attention order", got[i], b, got[i-1], a)
		}
	}
	latest := map[string]float64{}
	for _, res := range ds.Resources {
		if res["resourceType"] == "Observation" && res["code"].(map[string]any)["coding"].([]any)[0].(map[string]any)["code"] == demo.LOINCPain {
			subj := strings.TrimPrefix(res["subject"].(map[string]any)["reference"].(string), "Patient/")
			latest[subj] = float64(res["valueQuantity"].(map[string]any)["value"].(int)) // generated in day order: the last wins
		}
	}
	for _, r := range got {
		if want := fmt.Sprintf("%g / 10", latest[r[0]]); r[1] != want {
			t.Errorf("%s latest pain %q, want %q", r[0], r[1], want)
		}
	}
	shot("worklist-desktop")

	// The worsening patient, by keyboard: focus the link and press Enter.
	// The browser counts the FHIR requests the view makes.
	console.fhirRequests.Store(0)
	run1(t, ctx, "open the worsening patient",
		chromedp.Focus(`a[href="#patient/`+worse.ID+`"]`, chromedp.ByQuery),
		chromedp.KeyEvent("\r"))
	waitReady(t, ctx, worse.ID)
	sent := console.fhirRequests.Load()
	reqs := attr(t, ctx, "main#view", "data-requests")
	t.Logf("patient view of %s (90 days, first patient of the session): %d FHIR requests seen by the browser, %s counted by the app", worse.ID, sent, reqs)
	if strconv.FormatInt(sent, 10) != reqs {
		t.Errorf("the browser saw %d FHIR requests, the app counted %s", sent, reqs)
	}
	if sent > 9 {
		t.Errorf("the patient view made %d requests: it should read with $lastn, _include and paged searches (8 expected)", sent)
	}
	// The newest reading per code comes from $lastn; the pain row shows the
	// generator's last score.
	if src := attr(t, ctx, "#latest", "data-source"); src != "lastn" {
		t.Errorf("latest readings from %q, want lastn", src)
	}
	painRow := text(t, ctx, `[...document.querySelectorAll("#latest tbody tr")].map(r => r.cells[0].textContent + "=" + r.cells[1].textContent).find(s => /^Pain severity/.test(s)) ?? ""`)
	if want := fmt.Sprintf("=%g", latest[worse.ID]); !strings.HasSuffix(painRow, want) && !strings.Contains(painRow, want+" ") {
		t.Errorf("latest pain row %q, want the value %s", painRow, want)
	}
	checkAlerts(t, ctx, worse.ID)
	for _, days := range []string{"30", "7", "90"} {
		// The click's redraw sets aria-pressed last: wait for it, or the
		// chart may be read before the redraw and the table after it.
		run1(t, ctx, "range "+days, chromedp.Click(`button[data-range="`+days+`"]`, chromedp.ByQuery),
			chromedp.WaitVisible(`button[data-range="`+days+`"][aria-pressed="true"]`, chromedp.ByQuery))
		points, err := strconv.Atoi(attr(t, ctx, "#pain-chart", "data-points"))
		if err != nil {
			t.Fatal(err)
		}
		since := attr(t, ctx, "#pain-chart", "data-since")
		want := serverCount(t, ctx, "Observation?patient="+worse.ID+"&code=http://loinc.org|"+demo.LOINCPain+"&date=ge"+url.QueryEscape(since))
		rowsInTable, _ := strconv.Atoi(text(t, ctx, `String(document.querySelectorAll("#sec-pain-card details tbody tr").length)`))
		if points != want || rowsInTable != want || want == 0 {
			t.Errorf("%s days: chart %d points, table %d rows, server %d", days, points, rowsInTable, want)
		}
		if days == "7" && (want < 4 || want > 8) {
			t.Errorf("7 days hold %d pain scores: the range is not a week", want)
		}
	}
	// The server's RPM observer stamps each reading's referenceRange with
	// the normal range of the thresholds table; the app shades that range.
	th, err := rpm.Defaults()
	if err != nil {
		t.Fatal(err)
	}
	spo2, ok := th.ByCode("59408-5")
	if !ok || spo2.Normal == nil || spo2.Normal.Low == nil {
		t.Fatal("the thresholds table has no SpO2 normal low")
	}
	wantBand := fmt.Sprintf("[[%v,null]]", *spo2.Normal.Low)
	if band := attr(t, ctx, "#vital-spo2", "data-band"); band != wantBand {
		t.Errorf("SpO2 band %s, want %s", band, wantBand)
	}
	if out, _ := strconv.Atoi(attr(t, ctx, "#vital-spo2", "data-out")); out < 5 {
		t.Errorf("SpO2: %d readings marked out of range, want the 5-day breach", out)
	}
	if gaps, _ := strconv.Atoi(attr(t, ctx, "#vital-bp", "data-gaps")); gaps < 1 {
		t.Errorf("blood pressure: %d gaps, want the device gap", gaps)
	}
	canvases := text(t, ctx, `String(document.querySelectorAll("#vital-spo2 canvas, #vital-bp canvas, #pain-chart canvas").length)`)
	if canvases != "3" {
		t.Errorf("%s chart canvases, want 3", canvases)
	}
	// MME: the total shown is the server's Patient/$mme total.
	mmeShown, err := strconv.ParseFloat(attr(t, ctx, "#mme-total", "data-mme"), 64)
	if err != nil {
		t.Fatalf("MME total on the page: %v", err)
	}
	var mmeServer float64 = -1
	params, _ := serverJSON(t, ctx, "Patient/"+worse.ID+"/$mme")["parameter"].([]any)
	for _, p := range params {
		if str(p, "name") == "total" {
			mmeServer, _ = p.(map[string]any)["valueDecimal"].(float64)
		}
	}
	if mmeServer < 0 || mmeShown != mmeServer {
		t.Errorf("MME total shown %v, Patient/$mme total %v", mmeShown, mmeServer)
	}
	if mmeServer < 90 {
		t.Errorf("the worsening demo patient's $mme total is %v: the test expects the high-MME patient", mmeServer)
	}
	// A second patient: the CapabilityStatement is not read again.
	console.fhirRequests.Store(0)
	run1(t, ctx, "open the improving patient", chromedp.Evaluate(`location.hash = "#patient/`+other.ID+`"`, nil))
	waitReady(t, ctx, other.ID)
	t.Logf("patient view of %s (next patient): %d FHIR requests", other.ID, console.fhirRequests.Load())
	run1(t, ctx, "back to the worsening patient", chromedp.Evaluate(`location.hash = "#patient/`+worse.ID+`"`, nil))
	waitReady(t, ctx, worse.ID)
	shot("patient-desktop")

	// Switch patients, twice in a row: only the last one may show, and
	// nothing of the first.
	worseName := text(t, ctx, `document.querySelector("#view h2").textContent`)
	run1(t, ctx, "switch", chromedp.Evaluate(`location.hash = "#patient/`+ds.Patients[1].ID+`"; setTimeout(() => { location.hash = "#patient/`+other.ID+`"; }, 0)`, nil))
	waitReady(t, ctx, other.ID)
	body := text(t, ctx, `document.querySelector("#view").textContent`)
	if strings.Contains(body, worseName) || !strings.Contains(body, other.Name) {
		t.Errorf("after switching to %s the view shows %q", other.Name, body[:min(200, len(body))])
	}
	if strings.Contains(body, ds.Patients[1].Name) {
		t.Errorf("the superseded patient %s is on screen", ds.Patients[1].Name)
	}

	// Phone width: no horizontal scrolling, charts fit.
	run1(t, ctx, "phone", chromedp.EmulateViewport(360, 760, chromedp.EmulateScale(2)), chromedp.Navigate(d.base+"/apps/clinician/#patient/"+worse.ID))
	waitReady(t, ctx, worse.ID)
	if w := text(t, ctx, `String(document.documentElement.scrollWidth)`); w != "360" {
		t.Errorf("patient view at 360 px is %s px wide", w)
	}
	shot("patient-phone")
	run1(t, ctx, "phone worklist", chromedp.Navigate(d.base+"/apps/clinician/#"))
	waitReady(t, ctx, "")
	if w := text(t, ctx, `String(document.documentElement.scrollWidth)`); w != "360" {
		t.Errorf("worklist at 360 px is %s px wide", w)
	}
	shot("worklist-phone")
	run1(t, ctx, "desktop again", chromedp.EmulateViewport(1280, 900))

	// A request that fails is said, with the server's status.
	run1(t, ctx, "missing patient", chromedp.Navigate(d.base+"/apps/clinician/#patient/no-such-patient"),
		chromedp.WaitVisible(`main#view[data-state=error]`, chromedp.ByQuery))
	if msg := text(t, ctx, `document.querySelector("#error").textContent`); !strings.Contains(msg, "404") {
		t.Errorf("error state says %q, want the 404", msg)
	}
	console.drop("/fhir/Patient/no-such-patient") // the browser logs the failed load itself

	// Standalone launch with the server's patient picker: patient-level
	// access, no worklist.
	run1(t, ctx, "patient launch", chromedp.Navigate(d.base+"/apps/clinician/launch.html?mode=patient"))
	signIn(t, ctx, demoUser, pw[1], other.ID)
	waitReady(t, ctx, other.ID)
	if n := text(t, ctx, `String(document.querySelectorAll('#view a[href="#"]').length)`); n != "0" {
		t.Errorf("a patient-level launch offers the worklist (%s links)", n)
	}

	// EHR launch: the demo EHR gets a token (backend services), posts a
	// launch context for the worsening patient, and opens the app with
	// iss and launch; the app opens on that patient.
	launch := ehrLaunch(t, d.base, filepath.Join(dir, demoEHRKey), worse.ID)
	run1(t, ctx, "EHR launch", chromedp.Navigate(d.base+"/apps/clinician/launch.html?iss="+url.QueryEscape(d.base+"/fhir")+"&launch="+url.QueryEscape(launch)))
	signIn(t, ctx, demoUser, pw[1], "")
	waitReady(t, ctx, worse.ID)

	if c := console.String(); c != "" {
		t.Errorf("console errors:\n%s", c)
	}
}

// ehrLaunch signs a client assertion with the demo EHR's key, gets a
// backend-services token, and creates a launch context for patient.
func ehrLaunch(t *testing.T, base, keyFile, patient string) string {
	t.Helper()
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: k}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	tokenURL := base + "/auth/token"
	assertion, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: demoEHRClient, Subject: demoEHRClient, Audience: jwt.Audience{tokenURL},
		Expiry: jwt.NewNumericDate(time.Now().Add(4 * time.Minute)), ID: fmt.Sprint(time.Now().UnixNano()),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.PostForm(tokenURL, url.Values{
		"grant_type": {"client_credentials"}, "scope": {"system/Patient.rs"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion},
	})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("EHR token: %d %v", res.StatusCode, err)
	}
	req, _ := http.NewRequest("POST", base+"/auth/launch", strings.NewReader(`{"patient":"`+patient+`","client_id":"anodyne-clinician","user":"`+demoUser+`"}`))
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var l struct {
		Launch string `json:"launch"`
	}
	if err := json.NewDecoder(res.Body).Decode(&l); err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /auth/launch: %d %v", res.StatusCode, err)
	}
	return l.Launch
}
