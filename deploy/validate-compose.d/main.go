// Command validate-compose checks docker-compose.yml and the Docker build
// context without a Docker daemon (deploy/validate-compose builds and runs
// it). It is its own module so that the notifyd module does not depend on
// compose-go.
//
// What it checks:
//   - the Compose file loads with compose-go, the library `docker compose`
//     itself is built on: YAML, interpolation, the Compose specification's
//     JSON Schema and its consistency rules (depends_on, volumes and
//     networks that exist, an image or a build on every service);
//   - every service has an image or a build; images other than the ones
//     built here carry an explicit tag that is not "latest";
//   - bind-mounted paths and build contexts exist, inside the repository;
//   - every depends_on names a service, and a service_healthy condition
//     names one with a healthcheck;
//   - ports are well formed (container port 1-65535, published port or
//     range, host IP an IP address) and no host port is published twice;
//   - each build's Dockerfile exists, what it COPYs from the context is
//     there and not excluded by .dockerignore, and so is everything
//     `go build` needs (go.mod, go.sum, the non-test Go files and their
//     //go:embed files).
//
// Usage: validate-compose [-repo DIR] [compose file]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

func main() {
	repo := flag.String("repo", ".", "repository root: bind mounts and build contexts must be inside it")
	flag.Parse()
	file := "docker-compose.yml"
	if flag.NArg() > 0 {
		file = flag.Arg(0)
	}
	root, err := filepath.Abs(*repo)
	if err != nil {
		fail(err)
	}
	if !filepath.IsAbs(file) {
		file = filepath.Join(root, file)
	}
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)), cli.WithOsEnv, cli.WithDotEnv,
		cli.WithResolvedPaths(true), cli.WithInterpolation(true), cli.WithConsistency(true),
		cli.WithNormalization(true))
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(fmt.Errorf("%s does not load (Compose specification): %w", rel(root, file), err))
	}
	v := &validator{root: root, project: project}
	v.check()
	if len(v.errs) > 0 {
		for _, e := range v.errs {
			fmt.Fprintf(os.Stderr, "validate-compose: %s\n", e)
		}
		fmt.Fprintf(os.Stderr, "validate-compose: %s: %d problem(s)\n", rel(root, file), len(v.errs))
		os.Exit(1)
	}
	fmt.Printf("validate-compose: %s OK (compose-spec schema and rules): project %q, services %s; %d bind mounts, %d published ports, %d build(s) checked\n",
		rel(root, file), project.Name, strings.Join(project.ServiceNames(), ", "), v.binds, v.ports, v.builds)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "validate-compose: %v\n", err)
	os.Exit(1)
}

func rel(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

type validator struct {
	root                 string
	project              *types.Project
	errs                 []string
	binds, ports, builds int
}

func (v *validator) errorf(format string, args ...any) {
	v.errs = append(v.errs, fmt.Sprintf(format, args...))
}

// inside reports whether path is the repository root or below it.
func (v *validator) inside(path string) bool {
	r, err := filepath.Rel(v.root, path)
	return err == nil && r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator))
}

func (v *validator) check() {
	if len(v.project.Services) == 0 {
		v.errorf("no services")
	}
	hostPorts := map[string]string{}
	for _, name := range v.project.ServiceNames() {
		s := v.project.Services[name]
		where := "services." + name
		switch {
		case s.Image == "" && s.Build == nil:
			v.errorf("%s: neither image nor build", where)
		case s.Build == nil:
			v.checkImageTag(where, s.Image)
		}
		if s.Build != nil {
			v.checkBuild(where, s.Build)
		}
		for i, vol := range s.Volumes {
			if vol.Type != types.VolumeTypeBind {
				continue
			}
			v.binds++
			at := fmt.Sprintf("%s.volumes[%d] (%s)", where, i, vol.Source)
			if !v.inside(vol.Source) {
				v.errorf("%s: bind mount from outside the repository", at)
				continue
			}
			if _, err := os.Stat(vol.Source); err != nil {
				v.errorf("%s: bind-mounted path does not exist: %v", at, err)
			}
		}
		for dep, d := range s.DependsOn {
			other, ok := v.project.Services[dep]
			if !ok {
				v.errorf("%s.depends_on: no service %q", where, dep)
				continue
			}
			if d.Condition == types.ServiceConditionHealthy && (other.HealthCheck == nil || other.HealthCheck.Disable || len(other.HealthCheck.Test) == 0) {
				v.errorf("%s.depends_on.%s: condition service_healthy, but %s has no healthcheck", where, dep, dep)
			}
		}
		for i, p := range s.Ports {
			v.ports++
			at := fmt.Sprintf("%s.ports[%d]", where, i)
			if p.Target < 1 || p.Target > 65535 {
				v.errorf("%s: container port %d out of range", at, p.Target)
			}
			if p.HostIP != "" && net.ParseIP(p.HostIP) == nil {
				v.errorf("%s: host_ip %q is not an IP address", at, p.HostIP)
			}
			if p.Published == "" {
				continue
			}
			lo, hi, ok := portRange(p.Published)
			if !ok {
				v.errorf("%s: published port %q is not a port or a range of ports", at, p.Published)
				continue
			}
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			for port := lo; port <= hi; port++ {
				key := fmt.Sprintf("%s:%d/%s", p.HostIP, port, proto)
				if prev, dup := hostPorts[key]; dup {
					v.errorf("%s: host port %s already published by %s", at, key, prev)
				}
				hostPorts[key] = at
			}
		}
	}
}

func portRange(s string) (lo, hi int, ok bool) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err := strconv.Atoi(a)
	if err != nil || lo < 1 || lo > 65535 {
		return 0, 0, false
	}
	hi = lo
	if isRange {
		hi, err = strconv.Atoi(b)
		if err != nil || hi < lo || hi > 65535 {
			return 0, 0, false
		}
	}
	return lo, hi, true
}

func (v *validator) checkImageTag(where, image string) {
	ref := image
	if i := strings.Index(ref, "@"); i >= 0 { // pinned by digest
		return
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon <= slash || ref[colon+1:] == "latest" {
		v.errorf("%s.image: %q has no explicit version tag", where, image)
	}
}

func (v *validator) checkBuild(where string, b *types.BuildConfig) {
	v.builds++
	ctxDir := b.Context
	if !v.inside(ctxDir) {
		v.errorf("%s.build.context: %s is outside the repository", where, ctxDir)
		return
	}
	if st, err := os.Stat(ctxDir); err != nil || !st.IsDir() {
		v.errorf("%s.build.context: %s is not a directory", where, ctxDir)
		return
	}
	if b.DockerfileInline != "" {
		return
	}
	dockerfile := b.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if !filepath.IsAbs(dockerfile) {
		dockerfile = filepath.Join(ctxDir, dockerfile)
	}
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		v.errorf("%s.build.dockerfile: %v", where, err)
		return
	}
	excluded, err := dockerignore(ctxDir)
	if err != nil {
		v.errorf("%s: .dockerignore: %v", where, err)
		return
	}
	// COPY/ADD sources taken from the build context (not --from a stage).
	for n, ins := range instructions(string(data)) {
		if ins.cmd != "COPY" && ins.cmd != "ADD" {
			continue
		}
		args := strings.Fields(ins.args)
		var srcs []string
		fromStage := false
		for _, a := range args {
			if strings.HasPrefix(a, "--") {
				if strings.HasPrefix(a, "--from=") {
					fromStage = true
				}
				continue
			}
			srcs = append(srcs, a)
		}
		if fromStage || len(srcs) < 2 {
			continue
		}
		for _, src := range srcs[:len(srcs)-1] {
			if src == "." || strings.ContainsAny(src, "*?[") || strings.Contains(src, "://") {
				continue
			}
			at := fmt.Sprintf("%s: %s line %d (%s %s)", where, rel(v.root, dockerfile), n, ins.cmd, src)
			path := filepath.Join(ctxDir, filepath.FromSlash(src))
			if _, err := os.Stat(path); err != nil {
				v.errorf("%s: not in the build context: %v", at, err)
			} else if ex, _ := excluded.MatchesOrParentMatches(filepath.ToSlash(filepath.Clean(src))); ex {
				v.errorf("%s: excluded by .dockerignore", at)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(ctxDir, "go.mod")); err == nil {
		v.checkGoSources(where, ctxDir, excluded)
	}
}

// instructions splits a Dockerfile into instructions (continuation lines
// joined), keyed by the line each starts on.
func instructions(text string) map[int]struct{ cmd, args string } {
	out := map[int]struct{ cmd, args string }{}
	sc := bufio.NewScanner(strings.NewReader(text))
	line, start := 0, 0
	var cur strings.Builder
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return
		}
		cmd, args, _ := strings.Cut(s, " ")
		out[start] = struct{ cmd, args string }{strings.ToUpper(cmd), args}
	}
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = line
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return out
}

func dockerignore(ctxDir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(ctxDir, ".dockerignore"))
	if errors.Is(err, fs.ErrNotExist) {
		return patternmatcher.New(nil)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, err
	}
	return patternmatcher.New(patterns)
}

var embedLine = regexp.MustCompile(`^//go:embed\s+(.+)$`)

// checkGoSources: everything `go build` of the module needs is sent to the
// builder: go.mod, go.sum, each non-test Go file and what it embeds. Nested
// modules (a directory with its own go.mod) and testdata are not needed.
func (v *validator) checkGoSources(where, ctxDir string, excluded *patternmatcher.PatternMatcher) {
	need := []string{"go.mod", "go.sum"}
	_ = filepath.WalkDir(ctxDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		name := d.Name()
		if d.IsDir() {
			if path != ctxDir && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != ctxDir {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		r, _ := filepath.Rel(ctxDir, path)
		need = append(need, filepath.ToSlash(r))
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, l := range strings.Split(string(data), "\n") {
			m := embedLine.FindStringSubmatch(strings.TrimSpace(l))
			if m == nil {
				continue
			}
			for _, pat := range strings.Fields(m[1]) {
				matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), strings.Trim(pat, `"`)))
				for _, mm := range matches {
					r, _ := filepath.Rel(ctxDir, mm)
					need = append(need, filepath.ToSlash(r))
				}
			}
		}
		return nil
	})
	slices.Sort(need)
	for _, f := range slices.Compact(need) {
		if ex, _ := excluded.MatchesOrParentMatches(f); ex {
			v.errorf("%s: %s is needed by go build but excluded by .dockerignore", where, f)
		}
	}
}
