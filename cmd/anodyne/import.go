package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// importConfig is the configuration of "anodyne import".
type importConfig struct {
	dataFlags
	batch   int
	restart bool
	report  string
	state   string
}

// importCommand is "anodyne import [flags] PATH...": NDJSON files,
// Bundles or folders of them, loaded directly into the database or sent
// to a running server. It is resumable (run it again after an
// interruption) and reports every resource it could not import.
func importCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg importConfig
	fs := flag.NewFlagSet("anodyne import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.register(fs, dataFlagHelp{
		server:  "FHIR base URL of a running server (e.g. http://127.0.0.1:8080/fhir); without it the database is written directly",
		token:   "bearer access token for --server",
		baseURL: "public URL of the server root that will serve the data (direct mode: absolute references to it are indexed as local)",
		quiet:   "no progress bar",
	})
	fs.IntVar(&cfg.batch, "batch", 0, "resources per database commit (direct mode) or per request (--server); 0 picks a default")
	fs.BoolVar(&cfg.restart, "restart", false, "import files again from the start, ignoring what an earlier run already imported")
	fs.StringVar(&cfg.report, "report", "", "write the full report (JSON, every failure with file, line or entry, and reason) to this file")
	fs.StringVar(&cfg.opioidTable, "opioid-table", "", "direct mode: "+opioidTableHelp)
	fs.StringVar(&cfg.state, "state", ".anodyne-import-state.json", "with --server: file recording progress, for resuming")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: anodyne import [flags] PATH...\n\nLoads NDJSON files (one resource per line, ids kept), Bundles (transaction\nand batch Bundles are processed as such) or folders of them.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := cfg.parse(fs, args, getenv); err != nil {
		return err
	}
	paths := fs.Args()
	if cfg.opioidTable != "" && cfg.server != "" {
		return usagef("import: --opioid-table applies to a direct import; with --server the server's own table is used")
	}
	if len(paths) == 0 {
		fs.Usage()
		return usagef("import: no PATH given")
	}
	// A path that does not exist is a mistake to say at once, not an
	// interruption to resume.
	if _, _, err := fhir.ImportFileList(paths); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	bar := newProgressBar(stderr, cfg.quiet)
	var (
		rep fhir.ImportReport
		err error
	)
	if cfg.server != "" {
		rep, err = importRemote(ctx, cfg, paths, bar)
	} else {
		rep, err = importDirect(ctx, cfg, paths, bar, stderr)
	}
	bar.finish(err == nil, rep.Stored, rep.Failed)
	if rerr := printImportReport(stdout, cfg.report, rep); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return importStopped(err)
	}
	if rep.Failed > 0 {
		return fmt.Errorf("import: %d resources could not be imported", rep.Failed)
	}
	return nil
}

// importStopped is the error of an import that did not finish: an
// interruption (Ctrl-C, SIGTERM) says so; anything else says what went
// wrong first. Either way what was imported stays, and the same command
// resumes.
func importStopped(err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("import interrupted (run the same command again to resume): %w", err)
	}
	return fmt.Errorf("import stopped: %w (what was imported is kept; run the same command again to resume once this is fixed)", err)
}

func importDirect(ctx context.Context, cfg importConfig, paths []string, bar *progressBar, stderr io.Writer) (fhir.ImportReport, error) {
	// The report is kept when the import fails part-way: it says what
	// was stored before the interruption.
	var rep fhir.ImportReport
	err := cfg.withDirectServer(ctx, useServe, stderr, func(srv *fhir.Server) error {
		var err error
		rep, err = srv.Importer().ImportPaths(ctx, paths, fhir.ImportOptions{
			BatchSize: cfg.batch,
			Restart:   cfg.restart,
			Progress: func(p fhir.ImportProgress) {
				bar.update(p.BytesDone, p.Bytes, p.Stored, p.Failed)
			},
		})
		return err
	})
	return rep, err
}

func printImportReport(stdout io.Writer, path string, rep fhir.ImportReport) error {
	rate := 0.0
	if s := rep.Duration.Seconds(); s > 0 {
		rate = float64(rep.Stored) / s
	}
	fmt.Fprintf(stdout, "imported %d resources from %d files in %s (%.0f resources/s); %d failed; %d skipped (imported by an earlier run)\n",
		rep.Stored, rep.Files, rep.Duration.Round(time.Millisecond), rate, rep.Failed, rep.Skipped)
	if n := len(rep.Retried); n > 0 {
		fmt.Fprintf(stdout, "%d Bundles went in after the other files: a conditional reference of theirs needed a resource another file creates\n", n)
	}
	const shown = 20
	for i, f := range rep.Failures {
		if i == shown {
			fmt.Fprintf(stdout, "... and %d more (see --report)\n", rep.Failed-shown)
			break
		}
		what := ""
		if f.Type != "" {
			what = " " + f.Type + "/" + f.ID
		}
		fmt.Fprintf(stdout, "FAILED %s%s: %s\n", f.Where(), what, f.Reason)
	}
	if path == "" {
		return nil
	}
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the import report: %w", err)
	}
	if err := os.WriteFile(path, raw, 0o640); err != nil {
		return fmt.Errorf("writing the import report: %w", err)
	}
	return nil
}

// importState records, per file content (fhir.ImportFileID), how many
// resources a remote import has sent successfully.
type importState map[string]fileCheckpoint

// fileCheckpoint is how far a remote import got in one file.
type fileCheckpoint struct {
	Done     int  `json:"done"`
	Complete bool `json:"complete"`
}

func loadImportState(path string) (importState, error) {
	st := importState{}
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading import state: %w", err)
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("decoding import state %s: %w", path, err)
	}
	return st, nil
}

func (st importState) save(path string) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding import state: %w", err)
	}
	// Write then rename, so that an interruption never leaves a torn file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o640); err != nil {
		return fmt.Errorf("writing import state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing import state: %w", err)
	}
	return nil
}

// remote talks to a running server.
type remote struct {
	base  string
	token string
	hc    *http.Client
}

func (r remote) do(ctx context.Context, method, url, contentType string, body []byte, hdr ...string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("building request: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/fhir+json")
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	res, err := r.hc.Do(req)
	if err == nil && r.retryable(res) && body != nil && retryKey(hdr) {
		// A request with an Idempotency-Key can be sent again safely: the
		// server answers a copy that got through with the first answer.
		res, err = r.retry(ctx, req, res, body)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil, fmt.Errorf("cannot reach the server at %s: connection refused (is it running? check --server): %w", r.base, err)
		}
		return nil, nil, fmt.Errorf("cannot reach the server at %s (check --server): %w", r.base, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the answer: %w", method, url, err)
	}
	switch res.StatusCode {
	case http.StatusUnauthorized:
		hint := "pass an access token with --token or ANODYNE_TOKEN (\"anodyne token\" prints one)"
		if r.token != "" {
			hint = "the token given is not accepted (expired, or from another server): get a new one"
		}
		return nil, nil, fmt.Errorf("the server at %s refused the request (401 Unauthorized): %s: %s", r.base, hint, diagnostics(raw))
	case http.StatusForbidden:
		return nil, nil, fmt.Errorf("the server at %s refused the request (403 Forbidden): the token's scopes do not allow this (an import needs write scopes such as system/*.cu, an export system/*.rs): %s", r.base, diagnostics(raw))
	}
	return res, raw, nil
}

// retryable reports an answer that says to try again shortly: a copy of
// the request still in progress (409) or the database unavailable (503).
func (r remote) retryable(res *http.Response) bool {
	return (res.StatusCode == http.StatusConflict || res.StatusCode == http.StatusServiceUnavailable) && res.Header.Get("Retry-After") != ""
}

func retryKey(hdr []string) bool {
	for _, h := range hdr {
		if k, _, _ := strings.Cut(h, ":"); strings.EqualFold(strings.TrimSpace(k), fhir.IdempotencyHeader) {
			return true
		}
	}
	return false
}

// retry sends req again while the server says to, for up to two minutes.
func (r remote) retry(ctx context.Context, req *http.Request, res *http.Response, body []byte) (*http.Response, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for r.retryable(res) && time.Now().Before(deadline) {
		wait := time.Second
		if n, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && n > 0 {
			wait = min(time.Duration(n)*time.Second, 10*time.Second)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		again := req.Clone(ctx)
		again.Body = io.NopCloser(bytes.NewReader(body))
		var err error
		if res, err = r.hc.Do(again); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// importKey is the Idempotency-Key of one request of an import: the file
// (ImportFileID: path, size, modification time) and the units it carries,
// so that a run resumed after a kill sends the same key for the same
// request, and the server answers a copy that got through the first time
// without storing it twice.
func importKey(fileID string, from, to int) string {
	return fmt.Sprintf("%s: anodyne-import/%s/%d-%d", fhir.IdempotencyHeader, fileID, from, to)
}

// postBundle sends a transaction or batch Bundle to the base; it reports
// false for any other file, which then goes to $import, and the number of
// entries.
func postBundle(ctx context.Context, rm remote, path, fileID string, deferOK bool, rep *fhir.ImportReport) (bool, int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return false, 0, fmt.Errorf("reading %s: %w", path, err)
	}
	sent, err := postBundleRaw(ctx, rm, path, fileID, raw, deferOK, rep)
	return sent, bundleEntries(raw), err
}

func bundleEntries(raw []byte) int {
	var probe struct {
		Entry []json.RawMessage `json:"entry"`
	}
	_ = json.Unmarshal(raw, &probe)
	return len(probe.Entry)
}

func postBundleRaw(ctx context.Context, rm remote, path, fileID string, raw []byte, deferOK bool, rep *fhir.ImportReport) (bool, error) {
	var probe struct {
		ResourceType string            `json:"resourceType"`
		Type         string            `json:"type"`
		Entry        []json.RawMessage `json:"entry"`
	}
	if json.Unmarshal(raw, &probe) != nil || probe.ResourceType != "Bundle" || (probe.Type != "transaction" && probe.Type != "batch") {
		return false, nil
	}
	res, body, err := rm.do(ctx, http.MethodPost, rm.base, "application/fhir+json", raw, "Prefer: return=minimal", importKey(fileID, 0, len(probe.Entry)))
	if err != nil {
		return false, err
	}
	if res.StatusCode == http.StatusNotImplemented && probe.Type == "transaction" || res.StatusCode == http.StatusRequestEntityTooLarge {
		// No transactions on the server's database, or a Bundle beyond its
		// request limit: the resources go to $import in chunks instead.
		return false, nil
	}
	if res.StatusCode == http.StatusUnauthorized || res.StatusCode >= 500 {
		return false, fmt.Errorf("%s: the server answered %d: %s", path, res.StatusCode, diagnostics(body))
	}
	if deferOK && probe.Type == "transaction" && unresolvedRef(res.StatusCode, body) {
		return false, errWaitForRefs
	}
	if res.StatusCode != http.StatusOK {
		rep.Failed += int64(len(probe.Entry))
		rep.Failures = append(rep.Failures, fhir.ImportFailure{File: path, Entry: -1,
			Reason: fmt.Sprintf("%s rejected with %d (%d entries not imported): %s", probe.Type, res.StatusCode, len(probe.Entry), diagnostics(body))})
		return true, nil
	}
	var out struct {
		Entry []struct {
			Response struct {
				Status  string          `json:"status"`
				Outcome json.RawMessage `json:"outcome"`
			} `json:"response"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return false, fmt.Errorf("%s: decoding the server's answer: %w", path, err)
	}
	for i, e := range out.Entry {
		if strings.HasPrefix(e.Response.Status, "2") {
			rep.Stored++
			continue
		}
		rep.Failed++
		rep.Failures = append(rep.Failures, fhir.ImportFailure{File: path, Entry: i, Reason: e.Response.Status + ": " + diagnostics(e.Response.Outcome)})
	}
	return true, nil
}

// errWaitForRefs: a transaction Bundle's conditional reference found
// nothing; it is sent again once the other files are in.
var errWaitForRefs = errors.New("a conditional reference found nothing yet")

// unresolvedRef recognizes the server's refusal of a transaction whose
// conditional reference matched no resource (412, not-found, "matches 0").
func unresolvedRef(status int, body []byte) bool {
	if status != http.StatusPreconditionFailed {
		return false
	}
	var oo struct {
		Issue []struct {
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &oo) != nil {
		return false
	}
	for _, is := range oo.Issue {
		if is.Code == "not-found" && strings.Contains(is.Diagnostics, "conditional reference") && strings.Contains(is.Diagnostics, "matches 0 resources") {
			return true
		}
	}
	return false
}

// postChunk sends NDJSON to $import and maps the failed lines of the
// chunk back to the file (where[i] is a line, or -1-entry for a Bundle).
func postChunk(ctx context.Context, rm remote, path string, chunk []byte, where []int, key string, rep *fhir.ImportReport) error {
	res, body, err := rm.do(ctx, http.MethodPost, rm.base+"/$import", "application/fhir+ndjson", chunk, key)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusUnprocessableEntity {
		return fmt.Errorf("%s: $import answered %d: %s", path, res.StatusCode, diagnostics(body))
	}
	var oo struct {
		Issue []struct {
			Severity    string `json:"severity"`
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(body, &oo); err != nil {
		return fmt.Errorf("%s: decoding the $import answer: %w", path, err)
	}
	// A refusal by the token's grant is not a fault of the data: stop
	// before the file counts as done, so a run with a better token
	// imports what was refused.
	for _, is := range oo.Issue {
		if is.Severity == "error" && is.Code == "forbidden" {
			return fmt.Errorf("%s: the server refused resources (403 Forbidden): the token's scopes do not allow writing them (an import needs write scopes such as system/*.cu): %s", path, is.Diagnostics)
		}
	}
	failed := 0
	for _, is := range oo.Issue {
		var n int
		var reason string
		if is.Severity != "error" {
			continue
		}
		if _, err := fmt.Sscanf(is.Diagnostics, "line %d:", &n); err != nil || n < 1 || n > len(where) {
			return fmt.Errorf("%s: unexpected $import issue %q", path, is.Diagnostics)
		}
		_, reason, _ = strings.Cut(is.Diagnostics, ": ")
		f := fhir.ImportFailure{File: path, Entry: -1, Reason: reason}
		if w := where[n-1]; w > 0 {
			f.Line = w
		} else {
			f.Entry = -1 - w
		}
		failed++
		rep.Failed++
		rep.Failures = append(rep.Failures, f)
	}
	rep.Stored += int64(len(where) - failed)
	return nil
}

// diagnostics extracts the text of an OperationOutcome for messages.
func diagnostics(raw []byte) string {
	var oo struct {
		Issue []struct {
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(raw, &oo) == nil && len(oo.Issue) > 0 {
		var parts []string
		for _, is := range oo.Issue {
			parts = append(parts, is.Diagnostics)
		}
		return strings.Join(parts, "; ")
	}
	s := strings.TrimSpace(string(raw))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// progressBar draws one self-updating line on a terminal.
type progressBar struct {
	w     io.Writer
	on    bool
	start time.Time
	last  time.Time
	drawn bool
	frac  float64 // of the input read, at the last update
}

func newProgressBar(w io.Writer, quiet bool) *progressBar {
	on := false
	if f, ok := w.(*os.File); ok && !quiet {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progressBar{w: w, on: on, start: time.Now()}
}

func (p *progressBar) update(done, total, stored, failed int64) {
	p.frac = 1.0
	if total > 0 {
		p.frac = min(float64(done)/float64(total), 1)
	}
	if !p.on || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.draw(p.frac, stored, failed)
}

// draw writes the line: bar, percentage, counts, rate and elapsed time.
func (p *progressBar) draw(frac float64, stored, failed int64) {
	p.last = time.Now()
	const width = 30
	n := int(frac * width)
	elapsed := time.Since(p.start)
	rate := float64(stored) / max(elapsed.Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r[%s%s] %3.0f%%  %s resources  %s/s  %d failed  %s ", strings.Repeat("#", n), strings.Repeat(".", width-n),
		frac*100, humanCount(float64(stored)), humanCount(rate), failed, humanDuration(elapsed))
	p.drawn = true
}

// finish draws the last state (100 % when the import completed) and ends
// the line.
func (p *progressBar) finish(complete bool, stored, failed int64) {
	if p.on && (p.drawn || complete) {
		frac := 1.0
		if !complete {
			frac = p.frac
		}
		p.draw(frac, stored, failed)
	}
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

// humanCount writes 950, 12.3k, 4.56M.
func humanCount(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// humanDuration writes 850ms, 12.4s, 3m07s, 1h02m.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}
