package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestREADMEExamples runs the README's examples against notifyd on the
// embedded broker, so that the README cannot drift from what notifyd
// answers: the quickstart (publish, resend, its printed result and exit
// status) and every curl command of the HTTP API's walk-through, each
// answer's status code (the code named by the comment above it) and shape
// (the JSON written under it: every member given, with its value unless the
// value holds "…"; "…" in place of members allows others; for curl -i, the
// status line and headers given).
func TestREADMEExamples(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	dir := t.TempDir()
	broker, httpAddr, apiAddr := freePort(t), freePort(t), freePort(t)
	cfgPath := filepath.Join(dir, "notifyd.yaml")
	// The embedded default, on free ports: console providers, built-in
	// templates, the API with the key it makes.
	cfg := fmt.Sprintf("embedded_broker: {listen: %q}\nstore: {dir: %q}\nhttp: {listen: %q}\napi: {listen: %q}\nlog: {level: warn}\n"+
		"providers:\n  email: {kind: console}\n  sms: {kind: console}\n  whatsapp: {kind: console}\n",
		broker, filepath.Join(dir, "data"), httpAddr, apiAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	serveForTest(t, httpAddr, "-config", cfgPath)

	// The quickstart: the event it publishes, the resend and its result.
	quick := section(t, readme, "## Quickstart", "## ")
	shBlock := block(t, quick, "```sh\necho '")
	event := shBlock[strings.Index(shBlock, "echo '")+len("echo '") : strings.Index(shBlock, "' | ./notifyd publish")]
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"publish", "-config", cfgPath, "-topic", "payment-events"}, strings.NewReader(event), &out, &errOut)
	if want := commentAfter(shBlock, "./notifyd publish"); code != 0 || strings.TrimSpace(errOut.String()) != want {
		t.Errorf("quickstart publish: exit %d, %q; the README says %q", code, errOut.String(), want)
	}
	resendLine := regexp.MustCompile(`(?m)^\./notifyd (resend .*)$`).FindStringSubmatch(shBlock)
	if resendLine == nil {
		t.Fatal("no resend in the quickstart")
	}
	out.Reset()
	code = run(t.Context(), append(strings.Fields(resendLine[1]), "-config", cfgPath), nil, &out, &errOut)
	printed := block(t, quick, "```json\n")
	lines := strings.Split(strings.TrimSpace(printed), "\n")
	wantExit := strings.TrimPrefix(lines[len(lines)-1], "exit status ")
	if strconv.Itoa(code) != wantExit {
		t.Errorf("quickstart resend exited %d, the README says %s", code, wantExit)
	}
	if strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
		t.Errorf("resend printed more than one line: %q", out.String())
	}
	if err := sameShape(strings.Join(lines[:len(lines)-1], ""), out.String()); err != nil {
		t.Errorf("quickstart resend: %v\nprinted %s", err, out.String())
	}

	// The HTTP API's walk-through.
	key, err := os.ReadFile(filepath.Join(dir, "data", "api-key"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEY": strings.TrimSpace(string(key)), "API": "http://" + apiAddr + "/b/pbl/v2/message-notification/"}
	walk := block(t, section(t, readme, "## HTTP API", "\n## "), "```sh\nKEY=$(cat data/api-key)")
	examples := parseExamples(t, walk)
	if len(examples) < 15 {
		t.Fatalf("%d curl examples found in the README", len(examples))
	}
	for _, ex := range examples {
		t.Run(ex.command, func(t *testing.T) {
			status, header, body := curl(t, ex.command, env)
			if status != ex.status {
				t.Errorf("status %d, the README says %d: %s", status, ex.status, body)
			}
			for _, h := range ex.headers {
				name, value, _ := strings.Cut(h, ": ")
				if got := header.Get(name); got != value {
					t.Errorf("header %s: %q, the README says %q", name, got, value)
				}
			}
			if ex.body != "" {
				if err := sameShape(ex.body, body); err != nil {
					t.Errorf("%v\nanswered %s", err, body)
				}
			}
		})
	}
}

// section is the text of readme from the heading start to the next
// heading end.
func section(t *testing.T, readme, start, end string) string {
	t.Helper()
	i := strings.Index(readme, start)
	if i < 0 {
		t.Fatalf("README: no %q", start)
	}
	s := readme[i+len(start):]
	if j := strings.Index(s, end); j >= 0 {
		return s[:j]
	}
	return s
}

// block is the fenced block of text that starts with opening, without
// its fences.
func block(t *testing.T, text, opening string) string {
	t.Helper()
	i := strings.Index(text, opening)
	if i < 0 {
		t.Fatalf("README: no block %q", opening)
	}
	s := text[i+strings.Index(opening, "\n")+1:]
	return s[:strings.Index(s, "```")]
}

// commentAfter is the "#   " comment on the line after the one holding
// marker.
func commentAfter(text, marker string) string {
	rest := text[strings.Index(text, marker):]
	rest = rest[strings.Index(rest, "\n")+1:]
	line, _, _ := strings.Cut(rest, "\n")
	return strings.TrimSpace(strings.TrimPrefix(line, "#"))
}

// example is a curl command of the README with its expected answer.
type example struct {
	command string
	status  int
	headers []string // "Name: value", for curl -i
	body    string
}

// parseExamples reads a walk-through block: comments ending a statement
// with a status code ("...: 400, ...") set the status of the commands
// after them; a command (its continued lines joined) is followed by the
// lines of its answer.
func parseExamples(t *testing.T, text string) []example {
	t.Helper()
	codeRE := regexp.MustCompile(`: (\d{3})\b`)
	var out []example
	status := 0
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "#"):
			if m := codeRE.FindStringSubmatch(line); m != nil {
				status, _ = strconv.Atoi(m[1])
			}
		case strings.HasPrefix(line, "curl "):
			cmd := line
			for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
				i++
				cmd = strings.TrimSuffix(cmd, "\\") + " " + strings.TrimSpace(lines[i])
			}
			ex := example{command: cmd, status: status}
			for i+1 < len(lines) && lines[i+1] != "" && !strings.HasPrefix(lines[i+1], "#") && !strings.HasPrefix(lines[i+1], "curl ") {
				i++
				switch l := lines[i]; {
				case strings.HasPrefix(l, "HTTP/"):
					code, _ := strconv.Atoi(strings.Fields(l)[1])
					if code != status {
						t.Fatalf("README: %q under a comment saying %d", l, status)
					}
				case strings.HasPrefix(l, "{") || strings.HasPrefix(l, " "):
					ex.body += strings.TrimSpace(l)
				default:
					ex.headers = append(ex.headers, l)
				}
			}
			if status == 0 {
				t.Fatalf("README: no status code stated before %q", cmd)
			}
			out = append(out, ex)
		}
	}
	return out
}

// curl makes the request a README curl command line describes (-s, -i,
// -H, -d, -F and the URL, with $NAME and ${NAME} from env) and returns the
// answer.
func curl(t *testing.T, command string, env map[string]string) (int, http.Header, string) {
	t.Helper()
	args := shellWords(t, command, env)[1:]
	var (
		target   string
		headers  = http.Header{}
		data     []string
		formData [][2]string
	)
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "-s", "-i", "-si":
		case "-H":
			i++
			name, value, _ := strings.Cut(args[i], ": ")
			headers.Add(name, value)
		case "-d":
			i++
			data = append(data, args[i])
		case "-F":
			i++
			k, v, _ := strings.Cut(args[i], "=")
			formData = append(formData, [2]string{k, v})
		default:
			if strings.HasPrefix(a, "-") {
				t.Fatalf("README: curl flag %s not understood by the test", a)
			}
			target = a
		}
	}
	method, body := http.MethodGet, io.Reader(nil)
	switch {
	case len(formData) > 0:
		method = http.MethodPost
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		for _, kv := range formData {
			_ = mw.WriteField(kv[0], kv[1])
		}
		_ = mw.Close()
		body = &b
		headers.Set("Content-Type", mw.FormDataContentType())
	case len(data) > 0:
		method = http.MethodPost
		body = strings.NewReader(strings.Join(data, "&"))
		if headers.Get("Content-Type") == "" {
			headers.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if _, err := url.Parse(target); err != nil || target == "" {
		t.Fatalf("README: no URL in %q", command)
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = headers
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(b))
}

// shellWords splits a command line as sh would for the README's commands:
// words, '...' literally, "..." and bare words with $NAME and ${NAME}
// replaced from env.
func shellWords(t *testing.T, line string, env map[string]string) []string {
	t.Helper()
	expand := func(s string) string {
		return regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`).ReplaceAllStringFunc(s, func(m string) string {
			name := strings.Trim(m, "${}")
			v, ok := env[name]
			if !ok {
				t.Fatalf("README: $%s is not set by the test", name)
			}
			return v
		})
	}
	var words []string
	var cur strings.Builder
	in := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == ' ' || c == '\t':
			if in {
				words, in = append(words, cur.String()), false
				cur.Reset()
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			cur.WriteString(line[i+1 : i+1+j])
			i, in = i+1+j, true
		case c == '"':
			j := i + 1
			var s strings.Builder
			for ; line[j] != '"'; j++ {
				if line[j] == '\\' {
					j++
				}
				s.WriteByte(line[j])
			}
			cur.WriteString(expand(s.String()))
			i, in = j, true
		default:
			j := i
			for j < len(line) && !strings.ContainsRune(" \t'\"", rune(line[j])) {
				j++
			}
			cur.WriteString(expand(line[i:j]))
			i, in = j-1, true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// sameShape reports how the JSON answer differs from the README's text of
// it: every member written must be there, with the value written unless
// it holds "…" (then the value must start with what precedes it); "…" in
// place of members allows others, which are otherwise refused.
func sameShape(readme, answer string) error {
	// ",…" and "…," where members stand become a member named "…".
	text := regexp.MustCompile(`,\s*…\s*}`).ReplaceAllString(readme, `,"…":0}`)
	var want, got any
	if err := json.Unmarshal([]byte(text), &want); err != nil {
		return fmt.Errorf("the README's JSON %q does not parse: %w", readme, err)
	}
	if err := json.Unmarshal([]byte(answer), &got); err != nil {
		return fmt.Errorf("the answer is not JSON: %w", err)
	}
	return shapeDiff("", want, got)
}

func shapeDiff(path string, want, got any) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: an object in the README, %v answered", path, got)
		}
		_, open := w["…"]
		for k, wv := range w {
			if k == "…" {
				continue
			}
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s: in the README, not answered", path, k)
			}
			if err := shapeDiff(path+"."+k, wv, gv); err != nil {
				return err
			}
		}
		if !open {
			for k := range g {
				if _, ok := w[k]; !ok {
					return fmt.Errorf("%s.%s: answered, not in the README", path, k)
				}
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: %v in the README, %v answered", path, want, got)
		}
		for i := range w {
			if err := shapeDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	case string:
		g, ok := got.(string)
		if prefix, _, elided := strings.Cut(w, "…"); elided && ok && strings.HasPrefix(g, prefix) {
			return nil
		}
		if !ok || g != w {
			return fmt.Errorf("%s: %q in the README, %v answered", path, w, got)
		}
		return nil
	default:
		if fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Errorf("%s: %v in the README, %v answered", path, want, got)
		}
		return nil
	}
}
