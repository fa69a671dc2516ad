package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime/multipart"
	"reflect"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/schemas"
)

func multipartBody(t *testing.T, fields [][2]string) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, f := range fields {
		if err := w.WriteField(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), b.Bytes()
}

// TestDecodeBody: every encoding yields the same request, and every mistake
// the gateway's framework answers with the same field errors.
func TestDecodeBody(t *testing.T) {
	const jsonCT, formCT = "application/json", "application/x-www-form-urlencoded"
	long := strings.Repeat("é", 129)
	for _, tc := range []struct {
		name, contentType, body string
		want                    notification
		errs                    string // JSON of the field errors
		malformed               bool
		unsupported             bool
	}{
		{name: "json session_id", contentType: jsonCT, body: `{"session_id":"s1","channels":["sms","email"]}`,
			want: notification{SessionID: "s1", Channels: []schemas.Channel{"sms", "email"}}},
		{name: "json charset and unknown fields", contentType: "application/json; charset=utf-8", body: `{"order_no":"o1","channels":["whatsapp"],"extra":{"x":1}}`,
			want: notification{OrderNo: "o1", Channels: []schemas.Channel{"whatsapp"}}},
		{name: "json null and empty identifiers are absent", contentType: jsonCT, body: `{"session_id":null,"order_no":"o1","channels":["sms"]}`,
			want: notification{OrderNo: "o1", Channels: []schemas.Channel{"sms"}}},
		{name: "json 128 characters", contentType: jsonCT, body: `{"session_id":"` + strings.Repeat("é", 128) + `","channels":["sms"]}`,
			want: notification{SessionID: strings.Repeat("é", 128), Channels: []schemas.Channel{"sms"}}},
		{name: "form repeated channels", contentType: formCT, body: "session_id=s1&channels=sms&channels=email&x=y",
			want: notification{SessionID: "s1", Channels: []schemas.Channel{"sms", "email"}}},
		{name: "multipart", contentType: "multipart", body: "order_no=o1&channels=email",
			want: notification{OrderNo: "o1", Channels: []schemas.Channel{"email"}}},

		{name: "json force", contentType: jsonCT, body: `{"session_id":"s1","channels":["sms"],"force":true}`,
			want: notification{SessionID: "s1", Channels: []schemas.Channel{"sms"}, Force: true}},
		{name: "json force false and null", contentType: jsonCT, body: `{"session_id":"s1","channels":["sms"],"force":null}`,
			want: notification{SessionID: "s1", Channels: []schemas.Channel{"sms"}}},
		{name: "form force", contentType: formCT, body: "session_id=s1&channels=sms&force=true",
			want: notification{SessionID: "s1", Channels: []schemas.Channel{"sms"}, Force: true}},
		{name: "form force 0", contentType: formCT, body: "session_id=s1&channels=sms&force=0",
			want: notification{SessionID: "s1", Channels: []schemas.Channel{"sms"}}},
		{name: "json force a string", contentType: jsonCT, body: `{"session_id":"s1","channels":["sms"],"force":"yes"}`, errs: `{"force":["Must be a valid boolean."]}`},
		{name: "form force not a boolean", contentType: formCT, body: "session_id=s1&channels=sms&force=maybe", errs: `{"force":["Must be a valid boolean."]}`},
		{name: "channels missing", contentType: jsonCT, body: `{"session_id":"s1"}`, errs: `{"channels":["This field is required."]}`},
		{name: "channels missing from a form", contentType: formCT, body: "session_id=s1", errs: `{"channels":["This field is required."]}`},
		{name: "channels null", contentType: jsonCT, body: `{"session_id":"s1","channels":null}`, errs: `{"channels":["This field is required."]}`},
		{name: "unknown channel", contentType: jsonCT, body: `{"session_id":"s1","channels":["fax"]}`, errs: `{"channels":["\"fax\" is not a valid choice."]}`},
		{name: "unknown channel in a form", contentType: formCT, body: "session_id=s1&channels=fax", errs: `{"channels":["\"fax\" is not a valid choice."]}`},
		{name: "duplicate channel", contentType: jsonCT, body: `{"session_id":"s1","channels":["sms","sms"]}`, errs: `{"channels":["\"sms\" is listed more than once."]}`},
		{name: "empty channels", contentType: jsonCT, body: `{"session_id":"s1","channels":[]}`, errs: `{"channels":["This list may not be empty."]}`},
		{name: "channels a string", contentType: jsonCT, body: `{"session_id":"s1","channels":"sms"}`, errs: `{"channels":["Expected a list of items but got type \"str\"."]}`},
		{name: "channel a number", contentType: jsonCT, body: `{"session_id":"s1","channels":[5]}`, errs: `{"channels":["\"5\" is not a valid choice."]}`},
		{name: "session_id too long", contentType: jsonCT, body: `{"session_id":"` + long + `","channels":["sms"]}`, errs: `{"session_id":["Ensure this field has no more than 128 characters."]}`},
		{name: "order_no too long in a form", contentType: formCT, body: "order_no=" + long + "&channels=sms", errs: `{"order_no":["Ensure this field has no more than 128 characters."]}`},
		{name: "session_id a number", contentType: jsonCT, body: `{"session_id":12,"channels":["sms"]}`, errs: `{"session_id":["Not a valid string."]}`},
		{name: "no identifier", contentType: jsonCT, body: `{"channels":["sms"]}`, errs: `{"non_field_errors":["Provide session_id or order_no."]}`},
		{name: "empty identifiers", contentType: formCT, body: "session_id=&order_no=&channels=sms", errs: `{"non_field_errors":["Provide session_id or order_no."]}`},
		{name: "field errors before the identifier rule", contentType: jsonCT, body: `{}`, errs: `{"channels":["This field is required."]}`},
		{name: "not an object", contentType: jsonCT, body: `["sms"]`, errs: `{"non_field_errors":["Invalid data. Expected a dictionary, but got list."]}`},

		{name: "malformed json", contentType: jsonCT, body: `{"session_id":`, malformed: true},
		{name: "two json values", contentType: jsonCT, body: `{} {}`, malformed: true},
		{name: "invalid utf-8", contentType: jsonCT, body: "{\"session_id\":\"\xff\"}", malformed: true},
		{name: "multipart without boundary", contentType: "multipart/form-data", body: "x", malformed: true},
		{name: "text/plain", contentType: "text/plain", body: "session_id=s1", unsupported: true},
		{name: "no content type", contentType: "", body: `{}`, unsupported: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := tc.contentType, []byte(tc.body)
			if ct == "multipart" {
				var fields [][2]string
				for _, kv := range strings.Split(tc.body, "&") {
					k, v, _ := strings.Cut(kv, "=")
					fields = append(fields, [2]string{k, v})
				}
				ct, body = multipartBody(t, fields)
			}
			got, errs, err := decodeBody(ct, body)
			var malformed *malformedError
			switch {
			case tc.unsupported:
				if !errors.Is(err, errUnsupportedMediaType) {
					t.Fatalf("err = %v, want unsupported media type", err)
				}
			case tc.malformed:
				if !errors.As(err, &malformed) {
					t.Fatalf("err = %v, want malformed", err)
				}
			case tc.errs != "":
				b, _ := json.Marshal(errs)
				if err != nil || string(b) != tc.errs {
					t.Fatalf("errors = %s (%v), want %s", b, err, tc.errs)
				}
			default:
				if err != nil || errs != nil || !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("decoded %+v, %v, %v; want %+v", got, errs, err, tc.want)
				}
			}
		})
	}
}

func TestValidIdempotencyKey(t *testing.T) {
	for k, want := range map[string]bool{
		"k": true, strings.Repeat("€", 128): true, "order-1:retry 2": true,
		"": false, strings.Repeat("a", 129): false, "a\nb": false, "a\x00": false, "\x7f": false, "\xff": false,
	} {
		if got := validIdempotencyKey(k); got != want {
			t.Errorf("validIdempotencyKey(%q) = %v, want %v", k, got, want)
		}
	}
}
