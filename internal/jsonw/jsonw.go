// Package jsonw appends JSON values to byte slices the way encoding/json
// writes them, without reflection, for the few documents baldurd encodes on
// every write (a DLQ entry, an audit record). Callers check their output
// against encoding/json in tests.
//
// Imports: the standard library only.
package jsonw

import (
	"strconv"
	"time"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// String appends s as a JSON string, escaped as encoding/json escapes it:
// quote, backslash and control characters; <, > and & as \u003c, \u003e
// and \u0026; U+2028 and U+2029; invalid UTF-8 as U+FFFD.
func String(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Key appends "name": (name needs no escaping).
func Key(b []byte, name string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

// StringField appends "name":"v", unless omitEmpty and v is empty.
func StringField(b []byte, name, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	return append(String(Key(b, name), v), ',')
}

// IntField appends "name":v,.
func IntField(b []byte, name string, v int64) []byte {
	return append(strconv.AppendInt(Key(b, name), v, 10), ',')
}

// UintField appends "name":v,.
func UintField(b []byte, name string, v uint64) []byte {
	return append(strconv.AppendUint(Key(b, name), v, 10), ',')
}

// TimeField appends "name":"<RFC 3339 with nanoseconds>", as time.Time's
// MarshalJSON writes it.
func TimeField(b []byte, name string, t time.Time) []byte {
	b = append(Key(b, name), '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"', ',')
}

// Float appends a finite float64 as encoding/json writes it: the shortest
// decimal that reads back the same, in exponent form below 1e-6 and from
// 1e21 on, with a two-digit exponent written without its leading zero.
func Float(b []byte, f float64) []byte {
	abs := f
	if abs < 0 {
		abs = -abs
	}
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-07 → e-7
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
