package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

// cmdIO is what a command reads and writes. On a help request (-h,
// --help, "anodyne help CMD") stderr is the caller's stdout: help is the
// answer asked for, not a diagnostic.
type cmdIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	ready          chan<- string // serve: receives the bound address
}

// command is one entry of the command table, which drives both the
// dispatch and the usage text.
type command struct {
	name     string
	synopsis string // what follows the name in the usage line
	summary  string
	run      func(ctx context.Context, args []string, cio cmdIO) error
}

// commands is the table of anodyne's commands, in the order the usage
// text lists them.
func commands() []command {
	return []command{
		{"serve", "[flags]", "run the FHIR server", func(ctx context.Context, args []string, cio cmdIO) error {
			cfg, err := parseServe(args, cio.stderr, cio.getenv)
			if err != nil {
				return asUsage(err)
			}
			return serve(ctx, cfg, cio.stderr, cio.ready)
		}},
		{"demo", "[flags]", "load the generated pain-clinic data set, register a demo clinician, run the server", func(ctx context.Context, args []string, cio cmdIO) error {
			return demoCommand(ctx, args, cio.stdout, cio.stderr, cio.getenv, cio.ready)
		}},
		{"clients", "add|list|remove [flags]", "manage the SMART apps allowed to ask for tokens", func(ctx context.Context, args []string, cio cmdIO) error {
			return clientsCommand(ctx, args, cio.stdout, cio.stderr, cio.getenv)
		}},
		{"users", "add|list|remove [flags]", "manage local sign-in accounts (password on stdin or --password-file)", func(ctx context.Context, args []string, cio cmdIO) error {
			return usersCommand(ctx, args, cio.stdin, cio.stdout, cio.stderr, cio.getenv)
		}},
		{"import", "[flags] PATH...", "load NDJSON files, Bundles or folders (directly or via --server)", func(ctx context.Context, args []string, cio cmdIO) error {
			return importCommand(ctx, args, cio.stdout, cio.stderr, cio.getenv)
		}},
		{"export", "[flags] OUTDIR", "Bulk Data export to NDJSON files (directly or via --server)", func(ctx context.Context, args []string, cio cmdIO) error {
			return exportCommand(ctx, args, cio.stdout, cio.stderr, cio.getenv)
		}},
		{"backup", "[flags] DIR", "copy a running SQLite store consistently into DIR", func(ctx context.Context, args []string, cio cmdIO) error {
			return backupCommand(ctx, args, cio.stdout, cio.stderr, cio.getenv)
		}},
		{"restore", "[flags] DIR", "put a backup in place as the store of an empty data directory", func(ctx context.Context, args []string, cio cmdIO) error {
			return restoreCommand(ctx, args, cio.stdout, cio.stderr, cio.getenv)
		}},
		{"token", "--client ID --key FILE --scope SCOPES", "get an access token from a running server (SMART Backend Services), for curl", func(ctx context.Context, args []string, cio cmdIO) error {
			return tokenCommand(ctx, args, cio.stdout, cio.stderr, cio.getenv)
		}},
		{"version", "", "print the module version, VCS commit and Go version", func(ctx context.Context, args []string, cio cmdIO) error {
			fs := flag.NewFlagSet("anodyne version", flag.ContinueOnError)
			fs.SetOutput(cio.stderr)
			fs.Usage = func() {
				fmt.Fprintln(cio.stderr, "Usage: anodyne version\n\nPrints the module version, the VCS commit of the build and the Go version.")
			}
			if err := fs.Parse(args); err != nil {
				return asUsage(err)
			}
			if fs.NArg() > 0 {
				fs.Usage()
				return usagef("version: unexpected arguments %v", fs.Args())
			}
			return versionCommand(cio.stdout)
		}},
		{"help", "[COMMAND [SUBCOMMAND]]", "show this help, or the flags of a command", helpCommand},
	}
}

// lookupCommand finds a command of the table by name.
func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// printUsage writes the list of commands.
func printUsage(w io.Writer) {
	fmt.Fprint(w, "Anodyne, a FHIR R4 server.\n\nUsage:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	for _, c := range commands() {
		line := "anodyne " + c.name
		if c.synopsis != "" {
			line += " " + c.synopsis
		}
		fmt.Fprintf(tw, "  %s\t%s\n", line, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, "\nRun \"anodyne help COMMAND\" or \"anodyne COMMAND --help\" for a command's flags.\n")
}

// helpCommand is "anodyne help [COMMAND [SUBCOMMAND]]": the usage, or
// what COMMAND --help prints, on stdout.
func helpCommand(ctx context.Context, args []string, cio cmdIO) error {
	if len(args) == 0 || args[0] == "help" || wantsHelp(args[:1]) {
		printUsage(cio.stdout)
		return nil
	}
	c, ok := lookupCommand(args[0])
	if !ok {
		printUsage(cio.stderr)
		return usagef("help: unknown command %q", args[0])
	}
	cio.stderr = cio.stdout
	err := c.run(ctx, append(append([]string{}, args[1:]...), "--help"), cio)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// subcommand is one of the verbs of clients or users.
type subcommand struct{ name, synopsis, summary string }

// checkSubcommand validates the verb of clients or users before anything
// is opened: a help request lists the verbs, a missing or unknown verb is
// a usage error.
func checkSubcommand(cmd string, args []string, subs []subcommand, stderr io.Writer) error {
	list := func() {
		fmt.Fprintf(stderr, "Usage: anodyne %s SUBCOMMAND [flags]\n\nSubcommands:\n", cmd)
		tw := tabwriter.NewWriter(stderr, 0, 4, 3, ' ', 0)
		for _, s := range subs {
			fmt.Fprintf(tw, "  anodyne %s %s %s\t%s\n", cmd, s.name, s.synopsis, s.summary)
		}
		tw.Flush()
		fmt.Fprintf(stderr, "\nRun \"anodyne %s SUBCOMMAND --help\" for its flags.\n", cmd)
	}
	if len(args) == 0 {
		list()
		return usagef("%s: missing subcommand", cmd)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		list()
		return flag.ErrHelp
	}
	for _, s := range subs {
		if s.name == args[0] {
			return nil
		}
	}
	list()
	return usagef("%s: unknown subcommand %q", cmd, args[0])
}

// usageError is a command line that cannot be run as written: exit
// status 2, with the usage on stderr.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// asUsage marks a flag parsing or validation error as a usage error;
// flag.ErrHelp (help asked for) passes unchanged.
func asUsage(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	return usageError{err}
}

// exitCode maps run's error to the process exit status: 0 for success
// and help, 2 for usage errors, 1 for everything else.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// wantsHelp reports whether a command line asks for help (before "--").
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}
