package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3"; unset, the module's version from the
// build information (a `go install ...@v1.2.3`), else "dev".
var version = ""

// build is what a binary knows of its build: what `notifyd version`
// prints and notifyd_build_info carries.
type build struct {
	Version, Revision, Time, GoVersion string
	// Modified says the working tree had changes not in Revision.
	Modified bool
}

// currentBuild reads the running binary's build information.
func currentBuild() build {
	b := build{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok && b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if s.Value != "" {
					b.Revision = s.Value
				}
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	return b
}

// String is the build in one line.
func (b build) String() string {
	s := "notifyd " + b.Version + " (revision " + b.Revision
	if b.Modified {
		s += ", modified"
	}
	if b.Time != "" {
		s += ", " + b.Time
	}
	return s + ", " + b.GoVersion + ")"
}

// versionCmd is `notifyd version`.
func versionCmd(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageErr(err)
	}
	fmt.Fprintln(stdout, currentBuild())
	return nil
}

// userAgent is the User-Agent notifyd's HTTP providers send:
// notifyd/<version>.
func userAgent() string { return "notifyd/" + currentBuild().Version }
