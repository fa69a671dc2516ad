package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// SchemaMerchantSettings names the merchant-settings schema.
const SchemaMerchantSettings = "merchant-settings"

// MerchantSettings is a merchant's settings, the value of a record on the
// merchant-settings topic keyed by its merchant_id (see
// json/merchant-settings.json). Providers and Templates are kept as
// published, in the configuration file's shapes, their secrets sealed:
// notifyd's configuration code reads them.
type MerchantSettings struct {
	MerchantID  string `json:"merchant_id"`
	DisplayName string `json:"display_name,omitempty"`
	// Cooldown is the merchant's processing.cooldown; nil: the platform's.
	Cooldown *time.Duration `json:"-"`
	// CooldownText is Cooldown as published (a Go duration).
	CooldownText string       `json:"cooldown,omitempty"`
	API          *MerchantAPI `json:"api,omitempty"`
	// Providers are the merchant's providers by channel: one block or a
	// list, as the configuration file's providers.<channel>.
	Providers map[Channel]json.RawMessage `json:"providers,omitempty"`
	// Templates are the merchant's templates, as the configuration
	// file's templates.
	Templates json.RawMessage `json:"templates,omitempty"`
}

// MerchantAPI is a merchant's API principals and their shared rate limit.
type MerchantAPI struct {
	RateLimit *MerchantRateLimit `json:"rate_limit,omitempty"`
	Keys      []MerchantKey      `json:"keys,omitempty"`
	Users     []MerchantUser     `json:"users,omitempty"`
}

// MerchantRateLimit is the rate shared by a merchant's principals.
type MerchantRateLimit struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst,omitempty"`
}

// MerchantKey is one API key of a merchant: its name and the lowercase hex
// SHA-256 of the key.
type MerchantKey struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// MerchantUser is one console and Basic user of a merchant.
type MerchantUser struct {
	Username string `json:"username"`
	Bcrypt   string `json:"bcrypt"`
	Role     string `json:"role"`
}

// SealedKey is the one member of a sealed secret: {"sealed": "v1:…"}.
const SealedKey = "sealed"

var (
	durationText = regexp.MustCompile(`^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`)
	sealedText   = regexp.MustCompile(`^v1:[0-9a-f]{8}:[A-Za-z0-9+/]+={0,2}$`)
	keyName      = regexp.MustCompile(`^[!-~]{1,128}$`)
	userName     = regexp.MustCompile(`^[!-9;-~]{1,128}$`)
	sha256Hex    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	bcryptText   = regexp.MustCompile(`^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)
)

// providerSecrets are the members of a provider's kind block that hold a
// secret, sealed on the topic.
var providerSecrets = map[string][]string{
	"twilio":  {"auth_token"},
	"smtp":    {"password"},
	"webhook": {"receipt_secret"},
	"meta":    {"access_token", "app_secret", "verify_token"},
}

// DecodeMerchantSettings decodes and checks a merchant-settings value
// against its schema. Errors wrap ErrNotJSON or are a *ValidationError
// naming the member (api.keys[1].sha256). That merchant_id equals the
// record's key is the caller's check.
func DecodeMerchantSettings(data []byte) (MerchantSettings, error) {
	var s MerchantSettings
	obj, err := object(data, "")
	if err != nil {
		return s, fmt.Errorf("merchant settings: %w", err)
	}
	if err := s.decode(obj); err != nil {
		return MerchantSettings{}, fmt.Errorf("merchant settings: %w", err)
	}
	return s, nil
}

func (s *MerchantSettings) decode(obj map[string]json.RawMessage) error {
	raw, ok := obj["merchant_id"]
	if !ok {
		return invalid("merchant_id", "is required")
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		v := obj[name]
		var err error
		switch name {
		case "merchant_id":
			if s.MerchantID, err = stringOf(raw, name); err == nil && !ValidMerchantID(s.MerchantID) {
				err = invalid(name, "must be 1 to %d of A-Z, a-z, 0-9, '.', '_' and '-'", MaxMerchantIDLength)
			}
		case "display_name":
			if s.DisplayName, err = stringOf(v, name); err == nil && utf8.RuneCountInString(s.DisplayName) > 256 {
				err = invalid(name, "is longer than 256 characters")
			}
		case "cooldown":
			err = s.decodeCooldown(v)
		case "api":
			s.API = &MerchantAPI{}
			err = s.API.decode(v)
		case "providers":
			err = s.decodeProviders(v)
		case "templates":
			err = decodeTemplates(v)
			s.Templates = v
		default:
			err = invalid(name, "is not a member of merchant settings")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *MerchantSettings) decodeCooldown(v json.RawMessage) error {
	text, err := stringOf(v, "cooldown")
	if err != nil {
		return err
	}
	if !durationText.MatchString(text) {
		return invalid("cooldown", "must be a duration such as 10m or 1h30m")
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		return invalid("cooldown", "must be a duration such as 10m or 1h30m")
	}
	s.Cooldown, s.CooldownText = &d, text
	return nil
}

func (a *MerchantAPI) decode(v json.RawMessage) error {
	obj, err := object(v, "api")
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		switch name {
		case "rate_limit":
			if a.RateLimit, err = decodeRateLimit(obj[name]); err != nil {
				return err
			}
		case "keys":
			if a.Keys, err = decodeKeys(obj[name]); err != nil {
				return err
			}
		case "users":
			if a.Users, err = decodeUsers(obj[name]); err != nil {
				return err
			}
		default:
			return invalid("api."+name, "is not a member of api")
		}
	}
	return nil
}

func decodeRateLimit(v json.RawMessage) (*MerchantRateLimit, error) {
	const at = "api.rate_limit"
	obj, err := object(v, at)
	if err != nil {
		return nil, err
	}
	var r MerchantRateLimit
	if _, ok := obj["per_second"]; !ok {
		return nil, invalid(at+".per_second", "is required")
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		lit := string(bytes.TrimSpace(obj[name]))
		switch name {
		case "per_second":
			// A JSON number (the value is valid JSON): ParseFloat's
			// spellings that are not (Inf, NaN, hex) never come here.
			f, err := strconv.ParseFloat(lit, 64)
			if err != nil || !(f > 0) {
				return nil, invalid(at+".per_second", "must be a number above 0")
			}
			r.PerSecond = f
		case "burst":
			n, ok := positiveInt(lit)
			if !ok || n > 1<<31-1 {
				return nil, invalid(at+".burst", "must be an integer of at least 1")
			}
			r.Burst = int(n)
		default:
			return nil, invalid(at+"."+name, "is not a member of api.rate_limit")
		}
	}
	return &r, nil
}

func decodeKeys(v json.RawMessage) ([]MerchantKey, error) {
	items, err := array(v, "api.keys")
	if err != nil {
		return nil, err
	}
	out := make([]MerchantKey, 0, len(items))
	for i, item := range items {
		at := fmt.Sprintf("api.keys[%d]", i)
		f, err := members(item, at, []string{"name", "sha256"}, []string{"name", "sha256"})
		if err != nil {
			return nil, err
		}
		k := MerchantKey{Name: f["name"], SHA256: f["sha256"]}
		switch {
		case !keyName.MatchString(k.Name):
			return nil, invalid(at+".name", "must be 1 to 128 printable characters without spaces")
		case !sha256Hex.MatchString(k.SHA256):
			return nil, invalid(at+".sha256", "must be the 64 lowercase hex characters of the key's SHA-256")
		}
		out = append(out, k)
	}
	return out, nil
}

func decodeUsers(v json.RawMessage) ([]MerchantUser, error) {
	items, err := array(v, "api.users")
	if err != nil {
		return nil, err
	}
	out := make([]MerchantUser, 0, len(items))
	for i, item := range items {
		at := fmt.Sprintf("api.users[%d]", i)
		f, err := members(item, at, []string{"username", "bcrypt", "role"}, []string{"username", "bcrypt", "role"})
		if err != nil {
			return nil, err
		}
		u := MerchantUser{Username: f["username"], Bcrypt: f["bcrypt"], Role: f["role"]}
		switch {
		case !userName.MatchString(u.Username):
			return nil, invalid(at+".username", "must be 1 to 128 printable characters without spaces or ':'")
		case !bcryptText.MatchString(u.Bcrypt):
			return nil, invalid(at+".bcrypt", "must be a bcrypt hash ($2a$, $2b$ or $2y$)")
		case u.Role != "operator" && u.Role != "viewer":
			return nil, invalid(at+".role", "must be operator or viewer")
		}
		out = append(out, u)
	}
	return out, nil
}

// decodeProviders checks the shape the schema gives providers: channels,
// each a provider block or a non-empty list of them, each with a kind and
// its secrets sealed. The rest is checked as the configuration's is.
func (s *MerchantSettings) decodeProviders(v json.RawMessage) error {
	obj, err := object(v, "providers")
	if err != nil {
		return err
	}
	s.Providers = make(map[Channel]json.RawMessage, len(obj))
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		at := "providers." + name
		if !Channel(name).Valid() {
			return invalid(at, "is not a channel (want email, sms or whatsapp)")
		}
		raw := bytes.TrimSpace(obj[name]) // a member of a valid object: never empty
		blocks := []json.RawMessage{raw}
		if raw[0] == '[' {
			if blocks, err = array(raw, at); err != nil {
				return err
			}
			if len(blocks) == 0 {
				return invalid(at, "must hold at least one provider")
			}
		}
		for i, b := range blocks {
			bat := at
			if raw[0] == '[' {
				bat = fmt.Sprintf("%s[%d]", at, i)
			}
			if err := checkProvider(b, bat); err != nil {
				return err
			}
		}
		s.Providers[Channel(name)] = obj[name]
	}
	return nil
}

func checkProvider(v json.RawMessage, at string) error {
	obj, err := object(v, at)
	if err != nil {
		return err
	}
	kind, ok := obj["kind"]
	if !ok {
		return invalid(at+".kind", "is required")
	}
	if k, err := stringOf(kind, at+".kind"); err != nil || k == "" {
		return invalid(at+".kind", "must be a provider kind")
	}
	for _, block := range slices.Sorted(maps.Keys(providerSecrets)) {
		raw, ok := obj[block]
		if !ok {
			continue
		}
		bobj, err := object(raw, at+"."+block)
		if err != nil {
			return err
		}
		for _, name := range providerSecrets[block] {
			if raw, ok := bobj[name]; ok {
				if err := checkSealed(raw, at+"."+block+"."+name); err != nil {
					return err
				}
			}
		}
		if h, ok := bobj["headers"]; ok && block == "webhook" {
			hobj, err := object(h, at+".webhook.headers")
			if err != nil {
				return err
			}
			for _, name := range slices.Sorted(maps.Keys(hobj)) {
				if err := checkSealed(hobj[name], at+".webhook.headers."+name); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkSealed checks a sealed secret: {"sealed": "v1:<key id>:<base64>"}.
func checkSealed(v json.RawMessage, at string) error {
	f, err := members(v, at, []string{SealedKey}, []string{SealedKey})
	if err != nil || !sealedText.MatchString(f[SealedKey]) {
		return invalid(at, `must be a sealed secret {"sealed": "v1:<key id>:<base64>"}: secrets are never on the topic in clear`)
	}
	return nil
}

func decodeTemplates(v json.RawMessage) error {
	obj, err := object(v, "templates")
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		if !Channel(name).Valid() {
			return invalid("templates."+name, "is not a channel (want email, sms or whatsapp)")
		}
		if _, err := object(obj[name], "templates."+name); err != nil {
			return err
		}
	}
	return nil
}

// object decodes a JSON object's members, exactly as named (at names it in
// errors; "" is the whole value, whose errors wrap ErrNotJSON).
func object(v json.RawMessage, at string) (map[string]json.RawMessage, error) {
	if at == "" && (!utf8.Valid(v) || !json.Valid(v)) {
		return nil, fmt.Errorf("%w: not valid JSON", ErrNotJSON)
	}
	var obj map[string]json.RawMessage
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '{' || json.Unmarshal(v, &obj) != nil {
		if at == "" {
			return nil, fmt.Errorf("%w: not an object", ErrNotJSON)
		}
		return nil, invalid(at, "must be an object")
	}
	return obj, nil
}

func array(v json.RawMessage, at string) ([]json.RawMessage, error) {
	var items []json.RawMessage
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '[' || json.Unmarshal(v, &items) != nil {
		return nil, invalid(at, "must be a list")
	}
	return items, nil
}

// members decodes an object of string members: every one of required
// present, none but allowed.
func members(v json.RawMessage, at string, required, allowed []string) (map[string]string, error) {
	obj, err := object(v, at)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(obj))
	for _, name := range required {
		if _, ok := obj[name]; !ok {
			return nil, invalid(at+"."+name, "is required")
		}
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		if !slices.Contains(allowed, name) {
			return nil, invalid(at+"."+name, "is not a member of %s", at)
		}
		if out[name], err = stringOf(obj[name], at+"."+name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func stringOf(v json.RawMessage, at string) (string, error) {
	var s string
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &s) != nil {
		return "", invalid(at, "must be a string")
	}
	return s, nil
}
