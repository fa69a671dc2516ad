package main

import (
	"io"
	"reflect"
	"strings"

	"github.com/notifyd/notifyd/dispatch"
)

// secrets returns every secret of the configuration: the fields tagged
// `secret` (a string, with the field its `user=<key>` names as its user),
// and the values of maps tagged `secret:"values"` (webhook headers). They
// feed the Redactor that keeps them out of results and logs.
func (c *Config) secrets() []dispatch.Secret {
	var out []dispatch.Secret
	collectSecrets(reflect.ValueOf(*c), &out)
	return out
}

func collectSecrets(v reflect.Value, out *[]dispatch.Secret) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			collectSecrets(v.Elem(), out)
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag, secret := f.Tag.Lookup("secret")
			switch {
			case secret && f.Type.Kind() == reflect.String:
				s := dispatch.Secret{Value: v.Field(i).String()}
				if userKey, ok := strings.CutPrefix(tag, "user="); ok {
					s.User = fieldByYAML(v, userKey)
				}
				*out = append(*out, s)
			case secret && tag == "values" && f.Type.Kind() == reflect.Map:
				if m, ok := v.Field(i).Interface().(map[string]string); ok {
					*out = append(*out, dispatch.HeaderSecrets(m)...)
				}
			default:
				collectSecrets(v.Field(i), out)
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			collectSecrets(it.Value(), out)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			collectSecrets(v.Index(i), out)
		}
	}
}

// fieldByYAML is the string field of struct v whose YAML key is key.
func fieldByYAML(v reflect.Value, key string) string {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == key && t.Field(i).Type.Kind() == reflect.String {
			return v.Field(i).String()
		}
	}
	return ""
}

// redactingWriter hides the configuration's secrets, in every form the
// Redactor knows, in what is written through it: the log, whose handlers
// write one record per Write.
type redactingWriter struct {
	w io.Writer
	r *dispatch.Redactor
}

func (rw redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(rw.w, rw.r.Secrets(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
