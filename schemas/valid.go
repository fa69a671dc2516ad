package schemas

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
)

// maxNestingDepth is encoding/json's: json.Valid rejects deeper values.
const maxNestingDepth = 10000

// validJSON reports whether data is exactly one JSON value with optional
// whitespace around it, accepting what json.Valid accepts (the tests
// compare the two on the examples and on mutations of them) at about four
// times its speed: a payment event is validated on every rebuild, and
// json.Valid's per-byte state machine was the largest part of decoding one.
func validJSON(data []byte) bool {
	return walkJSON(data, nil)
}

// walkJSON is validJSON that also calls member, if not nil, with the name
// (unescaped) and the raw value of each member of data when data is an
// object, as it passes them: decoding a payment event needs no second scan
// to find its members. member may have been called when it returns false.
func walkJSON(data []byte, member func(name, value []byte)) bool {
	i, ok := validValue(data, skipSpace(data, 0), 0, member)
	return ok && skipSpace(data, i) == len(data)
}

// validValue returns the index after the value starting at data[i].
// member, if not nil, is called for the members of an object at depth 1.
func validValue(data []byte, i, depth int, member func(name, value []byte)) (int, bool) {
	if i >= len(data) {
		return i, false
	}
	switch c := data[i]; {
	case c == '"':
		return validString(data, i)
	case c == '{':
		return validObject(data, i, depth+1, member)
	case c == '[':
		return validArray(data, i, depth+1)
	case c == '-' || (c >= '0' && c <= '9'):
		return validNumber(data, i)
	case c == 't':
		return validLiteral(data, i, "true")
	case c == 'f':
		return validLiteral(data, i, "false")
	case c == 'n':
		return validLiteral(data, i, "null")
	}
	return i, false
}

func validLiteral(data []byte, i int, lit string) (int, bool) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

func validObject(data []byte, i, depth int, member func(name, value []byte)) (int, bool) {
	if depth > maxNestingDepth {
		return i, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, true
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return i, false
		}
		nameStart := i
		var ok bool
		if i, ok = validString(data, i); !ok {
			return i, false
		}
		name := data[nameStart:i]
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != ':' {
			return i, false
		}
		valueStart := skipSpace(data, i+1)
		if i, ok = validValue(data, valueStart, depth, nil); !ok {
			return i, false
		}
		if member != nil && depth == 1 {
			member(unquote(name), data[valueStart:i])
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return i, false
		}
		switch data[i] {
		case '}':
			return i + 1, true
		case ',':
			i = skipSpace(data, i+1)
		default:
			return i, false
		}
	}
}

func validArray(data []byte, i, depth int) (int, bool) {
	if depth > maxNestingDepth {
		return i, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = validValue(data, i, depth, nil); !ok {
			return i, false
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return i, false
		}
		switch data[i] {
		case ']':
			return i + 1, true
		case ',':
			i = skipSpace(data, i+1)
		default:
			return i, false
		}
	}
}

// validString checks the string starting at data[i] == '"'.
func validString(data []byte, i int) (int, bool) {
	for i++; ; i++ {
		// Eight bytes at a time while none of them ends the plain run.
		for i+8 <= len(data) && !stopsString(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		for i < len(data) && data[i] >= 0x20 && data[i] != '"' && data[i] != '\\' {
			i++
		}
		if i >= len(data) {
			return i, false
		}
		switch data[i] {
		case '"':
			return i + 1, true
		case '\\':
			i++
			if i >= len(data) {
				return i, false
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(data)-i < 5 {
					return i, false
				}
				for _, h := range data[i+1 : i+5] {
					if !isHex(h) {
						return i, false
					}
				}
				i += 4
			default:
				return i, false
			}
		default: // a control character
			return i, false
		}
	}
}

// stopsString reports whether any of the eight bytes in x is a control
// character, a quote or a backslash (the classic SWAR tests "has a byte less
// than n" and "has a zero byte", exact as to whether there is one).
func stopsString(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	less := (x - ones*0x20) & ^x & highs
	return less|hasZero(x^(ones*'"'))|hasZero(x^(ones*'\\')) != 0
}

// unquote returns the text of a valid JSON string literal, unescaping it
// only if it has escapes (names rarely do).
func unquote(lit []byte) []byte {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	var s string
	_ = json.Unmarshal(lit, &s)
	return []byte(s)
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// validNumber checks -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func validNumber(data []byte, i int) (int, bool) {
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = skipDigits(data, i)
	default:
		return i, false
	}
	if i < len(data) && data[i] == '.' {
		j := skipDigits(data, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := skipDigits(data, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}
