package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/anodyne-fhir/anodyne/fhir"
)

// exportConfig is the configuration of "anodyne export".
type exportConfig struct {
	dataFlags
	types       string
	since       string
	typeFilters listFlag
	patients    bool
	group       string
}

// exportCommand is "anodyne export [flags] OUTDIR": a Bulk Data export
// into one NDJSON file per resource type, from a running server
// ($export, polled to completion) or directly from the database.
func exportCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	var cfg exportConfig
	fs := flag.NewFlagSet("anodyne export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.register(fs, dataFlagHelp{
		server:  "FHIR base URL of a running server (e.g. http://127.0.0.1:8080/fhir); without it the database is read directly",
		token:   "bearer access token for --server (needs search scopes on the exported types)",
		baseURL: "direct mode: public URL of the server root (as given to anodyne serve)",
		quiet:   "no progress output",
	})
	fs.StringVar(&cfg.types, "type", "", "comma-separated resource types to export (default: all)")
	fs.StringVar(&cfg.since, "since", "", "only resources changed at or after this FHIR instant (e.g. 2024-05-01T02:00:00Z)")
	fs.Var(&cfg.typeFilters, "type-filter", "search restricting one type, e.g. 'Observation?code=http://loinc.org|8302-2' (repeatable; filters of one type are ORed)")
	fs.BoolVar(&cfg.patients, "patient", false, "export the Patient compartments only (Patient/$export)")
	fs.StringVar(&cfg.group, "group", "", "export the compartments of this Group's member Patients (Group/[id]/$export)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: anodyne export [flags] OUTDIR\n\nWrites one NDJSON file per resource type into OUTDIR.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := cfg.parse(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usagef("export: exactly one OUTDIR is required")
	}
	if cfg.patients && cfg.group != "" {
		return usagef("export: --patient and --group exclude each other")
	}
	out := fs.Arg(0)
	q := url.Values{}
	if cfg.types != "" {
		q.Set("_type", cfg.types)
	}
	if cfg.since != "" {
		q.Set("_since", cfg.since)
	}
	if len(cfg.typeFilters) > 0 {
		q.Set("_typeFilter", strings.Join(cfg.typeFilters, ","))
	}
	start := time.Now()
	var files []fhir.ExportFile
	var err error
	if cfg.server != "" {
		files, err = exportRemote(ctx, cfg, q, out, stderr)
	} else {
		files, err = exportDirect(ctx, cfg, q, out, stderr)
	}
	if err != nil {
		return err
	}
	var n int64
	for _, f := range files {
		fmt.Fprintf(stdout, "%s\t%d\t%s\n", f.Type, f.Count, f.Path)
		n += f.Count
	}
	d := time.Since(start)
	fmt.Fprintf(stdout, "exported %d resources in %d files in %s (%.0f resources/s)\n", n, len(files), d.Round(time.Millisecond), float64(n)/max(d.Seconds(), 1e-3))
	return nil
}

func exportDirect(ctx context.Context, cfg exportConfig, q url.Values, out string, stderr io.Writer) ([]fhir.ExportFile, error) {
	var files []fhir.ExportFile
	err := cfg.withDirectServer(ctx, useExport, stderr, func(srv *fhir.Server) error {
		// Created once the store is known to exist: a wrong --data-dir
		// leaves nothing behind.
		if err := makeOutDir(out); err != nil {
			return err
		}
		var err error
		files, err = srv.Export(ctx, q, cfg.patients, cfg.group, out)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// exportRemote runs the Bulk Data flow: kick-off, poll, download, and
// finally DELETE so that the server can drop its copy of the files.
func exportRemote(ctx context.Context, cfg exportConfig, q url.Values, out string, stderr io.Writer) ([]fhir.ExportFile, error) {
	if err := makeOutDir(out); err != nil {
		return nil, err
	}
	rm := cfg.remote()
	path := "/$export"
	switch {
	case cfg.group != "":
		path = "/Group/" + url.PathEscape(cfg.group) + "/$export"
	case cfg.patients:
		path = "/Patient/$export"
	}
	kick := rm.base + path
	if len(q) > 0 {
		kick += "?" + q.Encode()
	}
	res, body, err := rm.do(ctx, http.MethodGet, kick, "", nil, "Prefer: respond-async")
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("export kick-off answered %d: %s", res.StatusCode, diagnostics(body))
	}
	status := res.Header.Get("Content-Location")
	if status == "" {
		return nil, errors.New("export kick-off answered without Content-Location")
	}
	var manifest struct {
		Output []struct {
			Type  string `json:"type"`
			URL   string `json:"url"`
			Count int64  `json:"count"`
		} `json:"output"`
	}
	for {
		res, body, err := rm.do(ctx, http.MethodGet, status, "", nil)
		if err != nil {
			return nil, err
		}
		if res.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &manifest); err != nil {
				return nil, fmt.Errorf("decoding the export manifest: %w", err)
			}
			break
		}
		if res.StatusCode != http.StatusAccepted {
			return nil, fmt.Errorf("export status answered %d: %s", res.StatusCode, diagnostics(body))
		}
		if !cfg.quiet {
			fmt.Fprintf(stderr, "export: %s\n", res.Header.Get("X-Progress"))
		}
		wait := time.Second
		if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = min(time.Duration(s)*time.Second, 10*time.Second)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	var files []fhir.ExportFile
	seen := map[string]int{}
	for _, o := range manifest.Output {
		if !validTypeName(o.Type) {
			return nil, fmt.Errorf("the manifest names an invalid type %q", o.Type)
		}
		seen[o.Type]++
		name := o.Type + ".ndjson"
		if n := seen[o.Type]; n > 1 {
			name = o.Type + "." + strconv.Itoa(n) + ".ndjson"
		}
		dest := filepath.Join(out, name)
		if err := download(ctx, rm, o.URL, dest); err != nil {
			return nil, err
		}
		files = append(files, fhir.ExportFile{Type: o.Type, Path: dest, Count: o.Count})
	}
	if res, body, err := rm.do(ctx, http.MethodDelete, status, "", nil); err != nil || res.StatusCode != http.StatusAccepted {
		if err == nil {
			err = fmt.Errorf("answered %d: %s", res.StatusCode, diagnostics(body))
		}
		fmt.Fprintf(stderr, "export: could not release the server's copy: %v\n", err)
	}
	return files, nil
}

// validTypeName keeps manifest types from naming paths outside OUTDIR.
func validTypeName(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// download streams one output file to dest.
func download(ctx context.Context, rm remote, u, dest string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Accept", "application/fhir+ndjson")
	if rm.token != "" {
		req.Header.Set("Authorization", "Bearer "+rm.token)
	}
	res, err := rm.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return fmt.Errorf("GET %s answered %d: %s", u, res.StatusCode, diagnostics(raw))
	}
	f, err := os.Create(dest)
	if err != nil {
		return fmt.Errorf("creating %s: %w", dest, err)
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return fmt.Errorf("downloading %s: %w", u, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", dest, err)
	}
	return nil
}

func makeOutDir(out string) error {
	if err := os.MkdirAll(out, 0o750); err != nil {
		return fmt.Errorf("creating %s: %w", out, err)
	}
	return nil
}
