package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/anodyne-fhir/anodyne/auth/smart"
	"github.com/anodyne-fhir/anodyne/storage"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// clientsCommand is "anodyne clients add|list|remove": it edits the SMART
// client registry directly in the store the server uses (the server reads
// clients on every request, so no restart is needed). "anodyne users add"
// (usersCommand) does the same for local accounts.
func clientsCommand(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if err := checkSubcommand("clients", args, []subcommand{
		{"add", "--id ID [flags]", "register a client (--replace to change one)"},
		{"list", "[flags]", "list the registered clients"},
		{"remove", "[flags] CLIENT_ID", "remove a client"},
	}, stderr); err != nil {
		return err
	}
	fs := flag.NewFlagSet("anodyne clients "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = subUsage(fs, stderr, map[string]string{
		"add":    "add --id ID [flags]\n\nRegisters a SMART client in the store (a running server sees it at once).",
		"list":   "list [flags]\n\nLists the registered clients.",
		"remove": "remove [flags] CLIENT_ID\n\nRemoves a client.",
	}[args[0]], "clients")
	var store serveConfig
	storeFlags(fs, &store)
	var c smart.Client
	var typ, jwksFile, secret, genKey string
	var redirects, origins listFlag
	var replace bool
	if args[0] == "add" {
		fs.BoolVar(&replace, "replace", false, "replace a client already registered under --id")
		fs.StringVar(&c.ID, "id", "", "client_id (required)")
		fs.StringVar(&c.Name, "name", "", "name shown on the consent page")
		fs.StringVar(&typ, "type", "public", "public, confidential-symmetric or confidential-asymmetric")
		fs.Var(&redirects, "redirect-uri", "registered redirect URI (repeatable)")
		fs.Var(&origins, "origin", "browser origin allowed by CORS (repeatable)")
		fs.StringVar(&c.Scopes, "scope", "", "scopes the client may be granted (space-separated)")
		fs.StringVar(&genKey, "generate-key", "", "generate an ES384 key pair: write the private JWK to this new file (mode 0600) and register the public key (makes the client confidential-asymmetric, for anodyne token and backend services)")
		fs.StringVar(&jwksFile, "jwks-file", "", "file holding the client's public JWKS (asymmetric clients)")
		fs.StringVar(&c.JWKSURL, "jwks-uri", "", "URL of the client's JWKS (asymmetric clients)")
		fs.StringVar(&secret, "secret", "", "client secret for a symmetric client (generated and printed when empty)")
		fs.BoolVar(&c.LaunchEHR, "launch-ehr", false, "the client is an EHR and may create launch contexts")
		fs.BoolVar(&c.ResourceServer, "resource-server", false, "the client is a resource server and may introspect the tokens of every client")
		fs.StringVar(&c.ResearchProject, "research-project", "", "make the client a research client of this project: de-identified reads only, never writes")
		fs.StringVar(&c.ResearchAccess, "research-access", "", "with --research-project: rows (de-identified resources, default) or aggregates (statistics only)")
	}
	if err := parseStoreCommand(fs, args[1:], getenv); err != nil {
		return err
	}
	switch {
	case args[0] == "add" && c.ID == "":
		fs.Usage()
		return usagef("clients add: --id is required")
	case args[0] == "remove" && fs.NArg() != 1:
		fs.Usage()
		return usagef("clients remove: exactly one CLIENT_ID is required")
	case genKey != "" && (jwksFile != "" || c.JWKSURL != ""):
		fs.Usage()
		return usagef("clients add: --generate-key excludes --jwks-file and --jwks-uri")
	case genKey != "" && flagSet(fs, "type") && typ != string(smart.ClientAsymmetric):
		fs.Usage()
		return usagef("clients add: --generate-key registers a %s client, not %s", smart.ClientAsymmetric, typ)
	case args[0] != "remove" && fs.NArg() > 0:
		fs.Usage()
		return usagef("clients %s: unexpected arguments %v", args[0], fs.Args())
	}
	use := useEdit
	if args[0] == "add" {
		use = useAdd
	}
	st, err := openBackend(ctx, store, use)
	if err != nil {
		return err
	}
	defer st.Close()
	cs := smart.NewClientStore(st.backend.KV())
	registered := false
	switch args[0] {
	case "add":
		if err := refuseExisting(ctx, replace, "client", c.ID, func(ctx context.Context) error {
			_, err := cs.Get(ctx, c.ID)
			return err
		}); err != nil {
			return err
		}
		c.Type = smart.ClientType(typ)
		c.RedirectURIs, c.Origins = redirects, origins
		if genKey != "" {
			c.Type = smart.ClientAsymmetric
			jwks, err := generateClientKey(genKey)
			if err != nil {
				return err
			}
			c.JWKS = jwks
			// A key whose client was not registered is of no use.
			defer func() {
				if !registered {
					os.Remove(genKey)
				}
			}()
		}
		if jwksFile != "" {
			b, err := os.ReadFile(jwksFile)
			if err != nil {
				return fmt.Errorf("reading --jwks-file: %w", err)
			}
			c.JWKS = b
		}
		generated, err := smart.RegisterClient(ctx, cs, &c, secret)
		if err != nil {
			return fmt.Errorf("registering client: %w", err)
		}
		registered = true
		fmt.Fprintf(stdout, "registered %s (%s)\n", c.ID, c.Type)
		if genKey != "" {
			fmt.Fprintf(stdout, "private key written to %s (keep it secret); get a token with:\n  anodyne token --client %s --key %s --scope %q\n", genKey, c.ID, genKey, orDefault(c.Scopes, "system/*.rs"))
		}
		if generated != "" && secret == "" {
			fmt.Fprintf(stdout, "client_secret: %s\n(shown once; only its hash is stored)\n", generated)
		}
		return nil
	case "list":
		list, err := cs.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CLIENT_ID\tTYPE\tSCOPE\tREDIRECT_URIS\tRESEARCH")
		for _, x := range list {
			research := "-"
			if x.ResearchProject != "" {
				access := x.ResearchAccess
				if access == "" {
					access = "rows"
				}
				research = x.ResearchProject + " (" + access + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.ID, x.Type, x.Scopes, strings.Join(x.RedirectURIs, " "), research)
		}
		return tw.Flush()
	case "remove":
		if err := cs.Delete(ctx, fs.Arg(0)); err != nil {
			return fmt.Errorf("removing client: %w", err)
		}
		fmt.Fprintf(stdout, "removed %s\n", fs.Arg(0))
		return nil
	}
	return fmt.Errorf("unknown clients command %q (add, list, remove)", args[0])
}

// usersCommand is "anodyne users add --username U --fhir-user Practitioner/1
// [--patient ID]..." with the password read from the first line of stdin,
// so that it never appears in the process list or shell history.
func usersCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	if err := checkSubcommand("users", args, []subcommand{
		{"add", "--username U --fhir-user TYPE/ID [flags]", "add a local account, password on stdin (--replace to change one)"},
		{"list", "[flags]", "list the local accounts"},
		{"remove", "--username U [flags]", "remove an account"},
	}, stderr); err != nil {
		return err
	}
	fs := flag.NewFlagSet("anodyne users "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = subUsage(fs, stderr, map[string]string{
		"add":    "add --username U --fhir-user TYPE/ID [flags] < password\n\nAdds a local sign-in account; the password is the first line of stdin or --password-file.",
		"list":   "list [flags]\n\nLists the local accounts (never their password hashes).",
		"remove": "remove --username U [flags]\n\nRemoves an account.",
	}[args[0]], "users")
	var store serveConfig
	storeFlags(fs, &store)
	var a smart.Account
	var patients listFlag
	if args[0] != "list" {
		fs.StringVar(&a.Username, "username", "", "user name (required)")
	}
	if args[0] == "add" {
		fs.StringVar(&a.FHIRUser, "fhir-user", "", "the FHIR user: Practitioner/<id>, Patient/<id>, RelatedPerson/<id>...")
		fs.Var(&patients, "patient", "a patient id the user may pick in a standalone launch (repeatable)")
		fs.StringVar(&a.Name, "name", "", "the user's display name, given to apps granted the profile scope")
	}
	var passwordFile string
	var replace bool
	if args[0] == "add" {
		fs.StringVar(&passwordFile, "password-file", "", "read the password from the first line of this file instead of stdin")
		fs.BoolVar(&replace, "replace", false, "replace an account already registered under --username")
	}
	if err := parseStoreCommand(fs, args[1:], getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usagef("users %s: unexpected arguments %v", args[0], fs.Args())
	}
	if args[0] == "list" {
		return listUsers(ctx, store, stdout)
	}
	if a.Username == "" {
		fs.Usage()
		return usagef("users %s: --username is required", args[0])
	}
	use := useEdit
	if args[0] == "add" {
		use = useAdd
	}
	st, err := openBackend(ctx, store, use)
	if err != nil {
		return err
	}
	defer st.Close()
	as := smart.NewAccountStore(st.backend.KV())
	if args[0] == "remove" {
		if err := as.Delete(ctx, a.Username); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s\n", a.Username)
		return nil
	}
	if err := refuseExisting(ctx, replace, "user", a.Username, func(ctx context.Context) error {
		_, err := as.Get(ctx, a.Username)
		return err
	}); err != nil {
		return err
	}
	src, from := stdin, "stdin"
	if passwordFile != "" {
		f, err := os.Open(passwordFile)
		if err != nil {
			return fmt.Errorf("opening --password-file: %w", err)
		}
		defer f.Close()
		src, from = f, passwordFile
	}
	line, err := readLine(src)
	if err != nil {
		return fmt.Errorf("reading the password from %s: %w", from, err)
	}
	a.Patients = patients
	if err := as.Put(ctx, a, line); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "added %s as %s\n", strings.ToLower(a.Username), a.FHIRUser)
	return nil
}

// refuseExisting fails when get finds a record and replace was not asked
// for: an add that silently overwrote a client or account (its secret, its
// patients) would be a surprise nobody wants from a typo.
func refuseExisting(ctx context.Context, replace bool, what, id string, get func(context.Context) error) error {
	err := get(ctx)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("looking up %s %s: %w", what, id, err)
	case !replace:
		return fmt.Errorf("%s %s already exists; pass --replace to replace it", what, id)
	}
	return nil
}

// listUsers prints the local accounts (never their password hashes).
func listUsers(ctx context.Context, store serveConfig, stdout io.Writer) error {
	st, err := openBackend(ctx, store, useEdit)
	if err != nil {
		return err
	}
	defer st.Close()
	list, err := smart.NewAccountStore(st.backend.KV()).List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tFHIR_USER\tPATIENTS")
	for _, a := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Username, a.FHIRUser, strings.Join(a.Patients, " "))
	}
	return tw.Flush()
}

// storeFlags are the flags that pick the store, named as for "anodyne
// serve" so that ANODYNE_DATA_DIR and ANODYNE_MONGODB_URI apply to both.
func storeFlags(fs *flag.FlagSet, store *serveConfig) {
	fs.StringVar(&store.DataDir, "data-dir", "./anodyne-data", "directory of the embedded SQLite database")
	fs.StringVar(&store.MongoURI, "mongodb-uri", "", "MongoDB URI (instead of SQLite)")
	fs.StringVar(&store.MongoDB, "mongodb-database", "anodyne", "MongoDB database name")
	fs.DurationVar(&store.MongoConnect, "mongodb-connect-timeout", defaultMongoConnect, "how long to wait for MongoDB to answer before failing")
}

// parseStoreCommand applies ANODYNE_* variables, then the command line;
// errors are usage errors (flag.ErrHelp for a help request).
func parseStoreCommand(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := applyEnv(fs, getenv); err != nil {
		return asUsage(err)
	}
	return asUsage(fs.Parse(args))
}

// subUsage is the Usage of a clients or users subcommand: its synopsis
// and description, then the flags.
func subUsage(fs *flag.FlagSet, w io.Writer, text, cmd string) func() {
	return func() {
		fmt.Fprintf(w, "Usage: anodyne %s %s\n\nFlags:\n", cmd, text)
		fs.PrintDefaults()
	}
}

func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 1024 {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				break
			}
			b.WriteByte(buf[0])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimRight(b.String(), "\r"), nil
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
