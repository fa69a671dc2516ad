package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/consumer"
	"github.com/notifyd/notifyd/dispatch"
	"github.com/notifyd/notifyd/internal/seal"
	"github.com/notifyd/notifyd/internal/secretfile"
	"github.com/notifyd/notifyd/schemas"
)

// MerchantsConfig is the merchants block: how merchants' secrets are
// sealed on the merchant-settings topic.
type MerchantsConfig struct {
	// SealingKey seals and opens the secrets of merchants' settings
	// (merchants.sealing_key or sealing_key_file): base64 of 32 bytes
	// (`openssl rand -base64 32`). Unset: the key in store.dir
	// (merchant-sealing-key, 0600), made at first need; every instance
	// and the CLI of one deployment must use the same key.
	SealingKey string `yaml:"sealing_key" secret:""`
	// PreviousSealingKeys still open what they sealed, while `notifyd
	// merchant reseal` seals it again with SealingKey (rotation).
	PreviousSealingKeys []PreviousSealingKey `yaml:"previous_sealing_keys"`
}

// PreviousSealingKey is one of merchants.previous_sealing_keys: key or
// key_file.
type PreviousSealingKey struct {
	Key string `yaml:"key" secret:""`
}

// localSealingKey is the file of the sealing key made in store.dir.
const localSealingKey = "merchant-sealing-key"

func (m MerchantsConfig) validate() error {
	if m.SealingKey != "" {
		if _, err := seal.ParseKey(m.SealingKey); err != nil {
			return fmt.Errorf("merchants.sealing_key: %w", err)
		}
	}
	for i, k := range m.PreviousSealingKeys {
		if _, err := seal.ParseKey(k.Key); err != nil {
			return fmt.Errorf("merchants.previous_sealing_keys[%d].key: %w", i, err)
		}
	}
	return nil
}

// sealingKeys returns the deployment's sealing keys: merchants.sealing_key
// (else the one in store.dir, made now if there is none) and the previous
// ones.
func (c *Config) sealingKeys() (*seal.Keys, error) {
	current := c.Merchants.SealingKey
	if current == "" {
		if err := os.MkdirAll(c.Store.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("merchants.sealing_key: %w", err)
		}
		var err error
		if current, err = secretfile.ReadOrMake(filepath.Join(c.Store.Dir, localSealingKey), seal.NewKey); err != nil {
			return nil, fmt.Errorf("merchants.sealing_key: %w", err)
		}
	}
	var previous []string
	for _, k := range c.Merchants.PreviousSealingKeys {
		previous = append(previous, k.Key)
	}
	keys, err := seal.New(current, previous...)
	if err != nil {
		return nil, fmt.Errorf("merchants.%w", err)
	}
	return keys, nil
}

// merchantConfig is how merchants' providers and templates are built: as
// the platform's (console providers print to console).
func (c *Config) merchantConfig(kinds *dispatch.Registry, console io.Writer) dispatch.MerchantConfig {
	return dispatch.MerchantConfig{Kinds: kinds, Env: dispatch.Env{Console: console, PublicURL: c.API.PublicURL, UserAgent: userAgent()}}
}

// merchantProviders and merchantTemplates are the parts of a merchant's
// settings read with the configuration's rules.
type merchantParts struct {
	Providers map[string]ProviderChain `yaml:"providers"`
	Templates dispatch.TemplateConfig  `yaml:"templates"`
}

// merchantCompiler reads merchants' providers and templates as the
// configuration file's are read (every key known, each error naming its
// key), literally (no *_file, no ${ENV}: a record never reads this
// machine's files or environment), their secrets opened with keys; and
// refuses a key or user that is the platform's.
func (c *Config) merchantCompiler(keys *seal.Keys) consumer.MerchantCompiler {
	platformKeys, platformUsers := map[string]bool{}, map[string]bool{}
	for _, k := range c.API.Keys {
		platformKeys[strings.ToLower(k.SHA256)] = true
	}
	for _, u := range c.API.Users {
		platformUsers[u.Username] = true
	}
	return func(s schemas.MerchantSettings) (dispatch.MerchantProfile, error) {
		var p dispatch.MerchantProfile
		if s.API != nil {
			for i, k := range s.API.Keys {
				if platformKeys[k.SHA256] {
					return p, fmt.Errorf("api.keys[%d].sha256: the key is one of api.keys", i)
				}
			}
			for i, u := range s.API.Users {
				if platformUsers[u.Username] {
					return p, fmt.Errorf("api.users[%d].username: %q is one of api.users", i, u.Username)
				}
			}
		}
		doc := map[string]any{}
		if len(s.Providers) > 0 {
			doc["providers"] = s.Providers
		}
		if len(s.Templates) > 0 {
			doc["templates"] = s.Templates
		}
		if len(doc) == 0 {
			return p, nil
		}
		raw, err := json.Marshal(doc)
		if err != nil {
			return p, err
		}
		var root yaml.Node
		if err := yaml.Unmarshal(raw, &root); err != nil || len(root.Content) == 0 {
			return p, errors.New("providers, templates: not readable")
		}
		l := newLoader(true)
		opened, err := unsealTree(root.Content[0], keys, s.MerchantID, "")
		l.secrets = append(l.secrets, opened...)
		if err != nil {
			return p, err
		}
		var parts merchantParts
		if err := l.decodeInto(root.Content[0], &parts, ""); err != nil {
			return p, err
		}
		cfg := Config{Providers: parts.Providers}
		for _, sec := range cfg.secrets() {
			for _, v := range []string{sec.Value} {
				if v != "" && !slices.Contains(opened, v) {
					return p, errors.New("providers: a secret is in clear (every secret is sealed: notifyd merchant put)")
				}
			}
		}
		if len(parts.Providers) > 0 {
			p.Providers = map[schemas.Channel][]dispatch.ProviderConfig{}
			for ch, chain := range parts.Providers {
				p.Providers[schemas.Channel(ch)] = chain
			}
		}
		p.Templates = parts.Templates
		return p, nil
	}
}

// unsealTree replaces every {sealed: "v1:…"} mapping under n by the
// secret it seals for merchantID, and returns the secrets.
func unsealTree(n *yaml.Node, keys *seal.Keys, merchantID, path string) ([]string, error) {
	var opened []string
	switch n.Kind {
	case yaml.MappingNode:
		if len(n.Content) == 2 && n.Content[0].Value == schemas.SealedKey && n.Content[1].Kind == yaml.ScalarNode {
			plain, err := keys.Open(merchantID, n.Content[1].Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: plain, Line: n.Line, Column: n.Column}
			return []string{plain}, nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			more, err := unsealTree(n.Content[i+1], keys, merchantID, join(path, n.Content[i].Value))
			if err != nil {
				return nil, err
			}
			opened = append(opened, more...)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			more, err := unsealTree(item, keys, merchantID, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			opened = append(opened, more...)
		}
	}
	return opened, nil
}

// MerchantAPI is a merchant file's api block.
type MerchantAPI struct {
	RateLimit *dispatch.RateLimit `yaml:"rate_limit"`
	Keys      []MerchantKeyFile   `yaml:"keys"`
	Users     []MerchantUserFile  `yaml:"users"`
}

// MerchantKeyFile is one of a merchant file's api.keys.
type MerchantKeyFile struct {
	Name   string `yaml:"name"`
	SHA256 string `yaml:"sha256"`
}

// MerchantUserFile is one of a merchant file's api.users.
type MerchantUserFile struct {
	Username string   `yaml:"username"`
	Bcrypt   string   `yaml:"bcrypt"`
	Role     api.Role `yaml:"role"`
}

// merchantFileShape is a merchant's settings as `notifyd merchant put
// -file` reads them: the configuration file's YAML style, secrets from
// *_file or ${ENV} as the configuration allows.
type merchantFileShape struct {
	MerchantID  string                   `yaml:"merchant_id"`
	DisplayName string                   `yaml:"display_name"`
	Cooldown    time.Duration            `yaml:"cooldown"`
	API         MerchantAPI              `yaml:"api"`
	Providers   map[string]ProviderChain `yaml:"providers"`
	Templates   dispatch.TemplateConfig  `yaml:"templates"`
}

// merchantRecord reads a merchant file into the value of its
// merchant-settings record: the settings in JSON, each secret sealed with
// keys for the merchant. The file is read with the configuration's rules
// (every key known, *_file and ${ENV} resolved); the record is then
// checked exactly as every instance will check it (check).
func merchantRecord(data []byte, keys *seal.Keys, check func(merchantID string, value []byte) error) (string, []byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return "", nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) == 0 {
		return "", nil, errors.New("merchant_id: is required")
	}
	l := newLoader(false)
	l.secretNodes = map[*yaml.Node]bool{}
	var shape merchantFileShape
	if err := l.decodeInto(root.Content[0], &shape, ""); err != nil {
		return "", nil, err
	}
	if !schemas.ValidMerchantID(shape.MerchantID) {
		return "", nil, fmt.Errorf("merchant_id: must be 1 to %d of A-Z, a-z, 0-9, '.', '_' and '-'", schemas.MaxMerchantIDLength)
	}
	settings := map[string]any{"merchant_id": shape.MerchantID}
	if shape.DisplayName != "" {
		settings["display_name"] = shape.DisplayName
	}
	for i := 0; i+1 < len(root.Content[0].Content); i += 2 {
		k, v := root.Content[0].Content[i], root.Content[0].Content[i+1]
		switch k.Value {
		case "cooldown":
			if shape.Cooldown < 0 {
				return "", nil, fmt.Errorf("cooldown: must not be negative, got %s", shape.Cooldown)
			}
			settings["cooldown"] = shape.Cooldown.String()
		case "providers", "templates":
			j, err := nodeJSON(v, l.secretNodes, keys, shape.MerchantID)
			if err != nil {
				return "", nil, l.hide(fmt.Errorf("%s: %w", k.Value, err))
			}
			if j != nil {
				settings[k.Value] = j
			}
		}
	}
	if a := shape.API; a.RateLimit != nil || len(a.Keys) > 0 || len(a.Users) > 0 {
		out := map[string]any{}
		if a.RateLimit != nil {
			rl := map[string]any{"per_second": a.RateLimit.PerSecond}
			if a.RateLimit.Burst > 0 {
				rl["burst"] = a.RateLimit.Burst
			}
			out["rate_limit"] = rl
		}
		if len(a.Keys) > 0 {
			keys := make([]schemas.MerchantKey, 0, len(a.Keys))
			for _, k := range a.Keys {
				keys = append(keys, schemas.MerchantKey{Name: k.Name, SHA256: strings.ToLower(k.SHA256)})
			}
			out["keys"] = keys
		}
		if len(a.Users) > 0 {
			users := make([]schemas.MerchantUser, 0, len(a.Users))
			for _, u := range a.Users {
				users = append(users, schemas.MerchantUser{Username: u.Username, Bcrypt: u.Bcrypt, Role: string(u.Role)})
			}
			out["users"] = users
		}
		settings["api"] = out
	}
	value, err := json.Marshal(settings)
	if err != nil {
		return "", nil, err
	}
	if err := check(shape.MerchantID, value); err != nil {
		return "", nil, l.hide(err)
	}
	return shape.MerchantID, value, nil
}

// nodeJSON is the JSON value of a YAML node as notifyd reads it, with the
// scalars in secrets sealed for merchantID ({"sealed": "v1:…"}); nil for
// an empty node.
func nodeJSON(n *yaml.Node, secrets map[*yaml.Node]bool, keys *seal.Keys, merchantID string) (any, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" {
				merged, err := nodeJSON(v, secrets, keys, merchantID)
				if err != nil {
					return nil, err
				}
				if m, ok := merged.(map[string]any); ok {
					for mk, mv := range m {
						if _, set := out[mk]; !set {
							out[mk] = mv
						}
					}
				}
				continue
			}
			j, err := nodeJSON(v, secrets, keys, merchantID)
			if err != nil {
				return nil, err
			}
			if j != nil {
				out[k.Value] = j
			}
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	case yaml.SequenceNode:
		out := []any{}
		for _, item := range n.Content {
			j, err := nodeJSON(item, secrets, keys, merchantID)
			if err != nil {
				return nil, err
			}
			out = append(out, j)
		}
		return out, nil
	case yaml.ScalarNode:
		if secrets[n] {
			if n.Value == "" {
				return nil, nil
			}
			s, err := keys.Seal(merchantID, n.Value)
			if err != nil {
				return nil, err
			}
			return map[string]any{schemas.SealedKey: s}, nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, err
		}
		return v, nil
	}
	return nil, nil
}

// shownSettings is a record's value as `notifyd merchant get` prints it:
// indented, each sealed secret shown as "sealed (key <id>)".
func shownSettings(value []byte) ([]byte, error) {
	var v any
	if err := json.Unmarshal(value, &v); err != nil {
		return nil, err
	}
	var hide func(v any) any
	hide = func(v any) any {
		switch t := v.(type) {
		case map[string]any:
			if s, ok := t[schemas.SealedKey].(string); ok && len(t) == 1 {
				return "sealed (key " + seal.KeyID(s) + ")"
			}
			for _, k := range slices.Collect(maps.Keys(t)) {
				t[k] = hide(t[k])
			}
		case []any:
			for i := range t {
				t[i] = hide(t[i])
			}
		}
		return v
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	err := enc.Encode(hide(v))
	return b.Bytes(), err
}

// resealed is value with every sealed secret sealed again with keys'
// current key; changed is false when every one already was.
func resealed(merchantID string, value []byte, keys *seal.Keys) (out []byte, changed bool, err error) {
	var v any
	if err := json.Unmarshal(value, &v); err != nil {
		return nil, false, err
	}
	var walk func(v any, path string) (any, error)
	walk = func(v any, path string) (any, error) {
		switch t := v.(type) {
		case map[string]any:
			if s, ok := t[schemas.SealedKey].(string); ok && len(t) == 1 {
				if seal.KeyID(s) == keys.CurrentID() {
					return v, nil
				}
				plain, err := keys.Open(merchantID, s)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", path, err)
				}
				again, err := keys.Seal(merchantID, plain)
				if err != nil {
					return nil, err
				}
				changed = true
				return map[string]any{schemas.SealedKey: again}, nil
			}
			for _, k := range slices.Sorted(maps.Keys(t)) {
				var err error
				if t[k], err = walk(t[k], join(path, k)); err != nil {
					return nil, err
				}
			}
		case []any:
			for i := range t {
				var err error
				if t[i], err = walk(t[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return nil, err
				}
			}
		}
		return v, nil
	}
	if v, err = walk(v, ""); err != nil {
		return nil, false, err
	}
	out, err = json.Marshal(v)
	return out, changed, err
}

// merchantDirectory gives the API the principals of merchants' settings
// (consumer.Merchants, kept current from the topic).
type merchantDirectory struct{ m *consumer.Merchants }

func (d merchantDirectory) Key(sha256Hex string) (string, string, bool) {
	p, ok := d.m.Key(sha256Hex)
	return p.Name, p.Merchant, ok
}

func (d merchantDirectory) User(username string) (api.User, bool) {
	p, ok := d.m.User(username)
	return api.User{Username: p.Name, Bcrypt: p.Bcrypt, Role: api.Role(p.Role), Merchant: p.Merchant}, ok
}

func (d merchantDirectory) RateLimit(merchantID string) *dispatch.RateLimit {
	s, ok := d.m.Get(merchantID)
	if !ok || s.API == nil || s.API.RateLimit == nil {
		return nil
	}
	return &dispatch.RateLimit{PerSecond: s.API.RateLimit.PerSecond, Burst: s.API.RateLimit.Burst}
}
