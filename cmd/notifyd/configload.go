package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/notifyd/notifyd/dispatch"
)

// Loading a configuration file, in order:
//
//  1. The text is parsed as YAML, as written: nothing is substituted into
//     the text, so a secret's characters can never be read as YAML (an
//     anchor, a tag, a comment, a new key).
//  2. The tree is walked against the Config type: an unknown key stops
//     loading, named in full (kafka.brokerz). A key `<name>_file` beside a
//     secret (a field tagged `secret`) is replaced by `<name>` holding the
//     file's content without its final line break; both stop loading.
//     `${NAME}` in a scalar value (never in a key) is replaced by the
//     environment variable NAME, which must be set; the result is a
//     string for string fields, and is read as YAML would read a plain
//     scalar for the others (a number, a duration, a boolean).
//  3. The tree is decoded into Config, defaults are set, and Validate
//     checks it.
//
// No error of loading holds a value: type errors name the key and the type
// wanted, and any text of an error that holds a value taken from the
// environment or a file, or a secret, has it replaced by ***.

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// loader carries what the walk of one file learns.
type loader struct {
	// lines maps a line of the file to the key it holds, so that decode
	// errors (reported by line) can name the key.
	lines map[int]string
	// revealed are values taken from the environment or files, and the
	// file's secrets: no error may show them. secrets are those of them
	// that went into secrets, hidden however short.
	revealed []string
	secrets  []string
	missing  []string
	visited  map[*yaml.Node]bool
	// literal takes the text as it is: no <name>_file key, no ${ENV}
	// (what arrives on a topic never reads this machine's files or
	// environment).
	literal bool
	// secretNodes are the scalars walked as secrets (after *_file and
	// ${ENV} were resolved into them): what `notifyd merchant put` seals.
	secretNodes map[*yaml.Node]bool
}

// newLoader returns a loader; literal: see loader.literal.
func newLoader(literal bool) *loader {
	return &loader{lines: map[int]string{}, visited: map[*yaml.Node]bool{}, literal: literal}
}

// decodeInto walks n against target's type at path (an error names the
// key, as a configuration's) and decodes it into target, a pointer. No
// error holds a secret or a value taken from a file or the environment.
func (l *loader) decodeInto(n *yaml.Node, target any, path string) error {
	if err := l.walk(n, reflect.TypeOf(target).Elem(), path, false); err != nil {
		return l.hide(err)
	}
	if len(l.missing) > 0 {
		return fmt.Errorf("environment variables referenced but not set: %s", strings.Join(l.missing, ", "))
	}
	if err := n.Decode(target); err != nil {
		return l.hide(l.nameKey(err))
	}
	return nil
}

// ParseConfig parses, defaults and validates a configuration.
func ParseConfig(data []byte) (Config, error) {
	l := newLoader(false)
	c, err := l.parse(data)
	if err != nil {
		return Config{}, l.hide(err)
	}
	return c, nil
}

func (l *loader) parse(data []byte) (Config, error) {
	var c Config
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Config{}, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) > 0 {
		if err := l.walk(root.Content[0], reflect.TypeOf(c), "", false); err != nil {
			return Config{}, err
		}
		if len(l.missing) > 0 {
			return Config{}, fmt.Errorf("environment variables referenced but not set: %s", strings.Join(l.missing, ", "))
		}
		if err := root.Decode(&c); err != nil {
			return Config{}, l.nameKey(err)
		}
	}
	// A file's templates add to and override the built-in ones, cell by
	// cell (<channel>.<state>.<language>): naming its providers never
	// leaves a state without a template.
	c.fileTemplates = countTemplates(c.Templates)
	c.apiUnset = c.API.Listen == ""
	c.Templates = dispatch.MergeTemplates(dispatch.DefaultTemplates(), c.Templates)
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// walk checks n against the Go type t at path, substitutes ${ENV} into its
// scalars, resolves *_file keys and merge keys (<<), and checks that each
// scalar decodes into its field, so that an error names the very key (a
// line of flow style holds several); secret says n is (inside) a secret.
func (l *loader) walk(n *yaml.Node, t reflect.Type, path string, secret bool) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if l.visited[n] {
		return nil // an anchor's node, already walked where it was defined
	}
	l.visited[n] = true
	if path != "" {
		l.lines[n.Line] = path
	}
	if t == reflect.TypeFor[ProviderChain]() {
		if n.Kind == yaml.MappingNode {
			// A single provider block: a chain of one.
			item := *n
			*n = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{&item}, Line: n.Line, Column: n.Column}
			l.visited[&item] = false
			return l.walk(&item, t.Elem(), path, secret)
		}
		if n.Kind == yaml.SequenceNode {
			if len(n.Content) == 0 {
				return fmt.Errorf("%s: want at least one provider", path)
			}
			for i, v := range n.Content {
				if err := l.walk(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), secret); err != nil {
					return err
				}
			}
			return nil
		}
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		return l.walkStruct(n, t, path, secret)
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			l.lines[k.Line] = key
			if err := l.walk(v, t.Elem(), key, secret); err != nil {
				return err
			}
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for _, v := range n.Content {
			if err := l.walk(v, t.Elem(), path, secret); err != nil {
				return err
			}
		}
	case n.Kind == yaml.ScalarNode:
		return l.scalar(n, t, path, secret)
	case n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode:
		// A mapping or list where the field wants something else.
		return fmt.Errorf("%s: want %s", path, kindWanted(t))
	}
	return nil
}

// walkStruct walks a mapping into a struct.
func (l *loader) walkStruct(n *yaml.Node, t reflect.Type, path string, secret bool) error {
	fields := fieldsOf(t)
	given := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		given[n.Content[i].Value] = true
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := join(path, k.Value)
		l.lines[k.Line] = key
		if k.Value == "<<" && k.Tag == "!!merge" {
			// A merge key: its mapping (or list of mappings) is part of
			// this one.
			merged := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				merged = v.Content
			}
			for _, m := range merged {
				if err := l.walk(m, t, path, secret); err != nil {
					return err
				}
			}
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			base, isFile := strings.CutSuffix(k.Value, "_file")
			if bf, known := fields[base]; isFile && known && bf.secret && !l.literal {
				if given[base] {
					return fmt.Errorf("%s, %s: set one of them, not both", join(path, base), key)
				}
				if err := l.readSecretFile(k, v, key, base, bf.typ); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("%s: unknown key", key)
		}
		if err := l.walk(v, f.typ, key, secret || f.secret); err != nil {
			return err
		}
	}
	return nil
}

type field struct {
	typ    reflect.Type
	secret bool
}

// fieldsOf maps a struct's YAML keys to their fields.
func fieldsOf(t reflect.Type) map[string]field {
	fields := map[string]field{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		_, secret := f.Tag.Lookup("secret")
		fields[name] = field{typ: f.Type, secret: secret}
	}
	return fields
}

// scalar substitutes ${ENV} into a scalar and checks that it decodes into
// its field.
func (l *loader) scalar(n *yaml.Node, t reflect.Type, path string, secret bool) error {
	if secret && l.secretNodes != nil {
		l.secretNodes[n] = true
	}
	if secret && n.Value != "" && !envRef.MatchString(n.Value) {
		l.secrets = append(l.secrets, n.Value) // written in the file itself
	}
	if strings.Contains(n.Value, "${") && !l.literal {
		values, refs := l.expand(n.Value)
		for _, v := range values {
			if secret {
				l.secrets = append(l.secrets, v)
			} else {
				l.revealed = append(l.revealed, v)
			}
		}
		if refs {
			n.Value = l.expanded(n.Value)
			if err := l.settle(n, t, path); err != nil {
				return err
			}
		}
	}
	if n.Kind != yaml.ScalarNode || t.Kind() == reflect.String || t.Kind() == reflect.Interface {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map, reflect.Slice:
		if n.Tag == "!!null" {
			return nil // "key:" with nothing: the field stays empty
		}
		return fmt.Errorf("%s: want %s", path, kindWanted(t))
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return fmt.Errorf("%s: want %s", path, kindWanted(t))
	}
	return nil
}

// expand reports the values of the environment variables ${NAME} in s
// refers to (recording the unset ones) and whether it refers to any.
func (l *loader) expand(s string) (values []string, refs bool) {
	for _, m := range envRef.FindAllStringSubmatch(s, -1) {
		refs = true
		v, ok := os.LookupEnv(m[1])
		if !ok {
			if !slices.Contains(l.missing, m[1]) {
				l.missing = append(l.missing, m[1])
			}
			continue
		}
		values = append(values, v)
	}
	return values, refs
}

// expanded is s with every ${NAME} replaced by its variable ("" when unset:
// loading fails then anyway).
func (l *loader) expanded(s string) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string { return os.Getenv(ref[2 : len(ref)-1]) })
}

// settle makes a scalar whose value was replaced decode as the field
// wants: verbatim into a string; a comma-separated list into a list of
// strings (kafka.brokers: ${KAFKA_BROKERS} with a,b); as a plain YAML
// scalar otherwise, where an empty value is an error rather than the
// field's default.
func (l *loader) settle(n *yaml.Node, t reflect.Type, path string) error {
	switch {
	case t.Kind() == reflect.String:
		n.Tag, n.Style = "!!str", 0
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		items := []*yaml.Node{}
		for _, item := range strings.Split(n.Value, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: item, Line: n.Line, Column: n.Column})
			}
		}
		*n = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: items, Line: n.Line, Column: n.Column}
	case strings.TrimSpace(n.Value) == "":
		return fmt.Errorf("%s: the environment gives an empty value (want %s)", path, kindWanted(t))
	default:
		n.Tag, n.Style = "", 0
	}
	return nil
}

// readSecretFile turns `<base>_file: PATH` into `<base>: <content>`: the
// content without its final line break for a string; for a map of
// strings (webhook headers), "Name: value" lines.
func (l *loader) readSecretFile(k, v *yaml.Node, key, base string, t reflect.Type) error {
	if v.Kind != yaml.ScalarNode || v.Value == "" {
		return fmt.Errorf("%s: want the path of a file", key)
	}
	l.visited[v] = true
	path := v.Value
	if strings.Contains(path, "${") {
		// A path is no secret: it stays in errors.
		l.expand(path)
		path = l.expanded(path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	content := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if content == "" {
		return fmt.Errorf("%s: %s is empty", key, path)
	}
	k.Value = base
	switch {
	case t.Kind() == reflect.String:
		l.secrets = append(l.secrets, content)
		v.Value, v.Tag, v.Style = content, "!!str", 0
		if l.secretNodes != nil {
			l.secretNodes[v] = true
		}
	case t.Kind() == reflect.Map && t.Elem().Kind() == reflect.String:
		m := yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: v.Line, Column: v.Column}
		for i, line := range strings.Split(content, "\n") {
			line = strings.TrimSuffix(line, "\r")
			if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			name, value, ok := strings.Cut(line, ":")
			if !ok || strings.TrimSpace(name) == "" {
				return fmt.Errorf("%s: line %d of %s is not \"Name: value\"", key, i+1, path)
			}
			value = strings.TrimSpace(value)
			l.secrets = append(l.secrets, value)
			vn := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
			if l.secretNodes != nil {
				l.secretNodes[vn] = true
			}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: strings.TrimSpace(name)}, vn)
		}
		*v = m
	default:
		return fmt.Errorf("%s: unknown key", key)
	}
	return nil
}

// kindWanted phrases what a field of type t takes.
func kindWanted(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	}
	return wanted(t.String())
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var (
	yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlInto = regexp.MustCompile(` into (\S+)$`)
)

// nameKey rewrites yaml's "line N: cannot unmarshal !!str `…` into int"
// into "key: want int", without the value.
func (l *loader) nameKey(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) == 0 {
		return err
	}
	m := yamlLine.FindStringSubmatch(te.Errors[0])
	if m == nil {
		return errors.New("a value has the wrong type")
	}
	line, _ := strconv.Atoi(m[1])
	key, ok := l.lines[line]
	if !ok {
		key = "line " + m[1]
	}
	want := "another type"
	if into := yamlInto.FindStringSubmatch(m[2]); into != nil {
		want = wanted(into[1])
	}
	return fmt.Errorf("%s: want %s", key, want)
}

// wanted phrases a Go type for a configuration error.
func wanted(goType string) string {
	switch goType {
	case "time.Duration":
		return "a duration such as 500ms, 10s or 1h"
	case "int", "int64", "int32":
		return "a whole number"
	case "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	}
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "main."), strings.Contains(goType, "Config"):
		return "a mapping"
	}
	return goType
}

// hide replaces, in err's text, every secret and every value taken from the
// environment or a file by ***, when it has at least minHidden characters.
func (l *loader) hide(err error) error {
	msg := err.Error()
	hidden := msg
	for _, v := range l.secrets {
		if len(v) >= minHidden {
			hidden = strings.ReplaceAll(hidden, v, "***")
		}
	}
	for _, v := range l.revealed {
		if len(v) >= minHidden {
			hidden = strings.ReplaceAll(hidden, v, "***")
		}
	}
	if hidden == msg {
		return err
	}
	return errors.New(hidden)
}

// minHidden: shorter values (a port, a count, "2") are no secret worth
// garbling every message for.
const minHidden = 4

// LoadConfig reads a configuration file. A file replaces the built-in
// templates and providers: what it does not configure is not configured.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}
