package tunnel

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// This file decodes Frames by hand, because generic protobuf decoding costs
// one allocation per string and per header (about 45 for a typical request
// head) and copies body bytes once more. The result is what proto.Unmarshal
// produces — the same accepted inputs, errors and unknown fields —, which
// FuzzDecodeFrame checks against proto.Unmarshal itself:
//
//   - the strings of one head are cut from a single string copy of that
//     head's bytes;
//   - the headers of one head, and all their values, come from one block
//     each (a head is decoded in two passes: count, then fill);
//   - with UnmarshalFrameAliasing, data aliases the input instead of a copy,
//     and the headers of a request or response head go straight into an
//     http.Header instead (recvhead.go; FuzzDecodeFrame checks them against
//     headersFromWire of what proto.Unmarshal produces).
//
// Field numbers are those of proto/sallyport/tunnel/v1/tunnel.proto; a
// field this version does not know, or a known one with another wire type,
// is kept as an unknown field exactly as proto.Unmarshal keeps it.

// errDecode is wrapped (with ErrMalformed) by every decoding error.
var errDecode = errors.New("cannot parse invalid wire-format data")

// UnmarshalFrameAliasing decodes b into the empty frame f, like
// DecodeFrame, for a caller that hands b over: the frame's data aliases b
// instead of being copied, so b must not be modified or reused while the
// frame or its data is in use.
//
// Unlike DecodeFrame, it decodes the headers of a request or response head
// straight into the http.Header that RequestFromHead or RoundTrip uses
// (see recvhead.go): the head's Headers field stays empty. A received head
// is only read by this package, never re-encoded.
func UnmarshalFrameAliasing(b []byte, f *Frame) error {
	return unmarshalChecked(f, b, true, true)
}

func decodeFrame(b []byte, alias bool) (*Frame, error) {
	f := new(Frame)
	if err := unmarshalChecked(f, b, alias, false); err != nil {
		return nil, err
	}
	return f, nil
}

// unmarshalChecked decodes b into f: with alias, f's data aliases b; with
// direct, heads get their headers as an http.Header (see recvhead.go).
func unmarshalChecked(f *Frame, b []byte, alias, direct bool) error {
	if len(b) > MaxFrameSize {
		return malformed("frame of %d bytes exceeds %d", len(b), MaxFrameSize)
	}
	if err := unmarshalFrame(f, b, alias, direct); err != nil {
		return malformed("%v", err)
	}
	return nil
}

// field is one parsed field of a message.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64 // value of a varint field
	b   []byte // contents of a bytes field
}

// nextField parses the field at the start of b and returns it with the
// number of bytes it took.
func nextField(b []byte) (field, int, error) {
	// Fast path: a one-byte tag (every field of tunnel.proto has one) with
	// a one-byte length or varint value, which is most fields of a head.
	if len(b) >= 2 && b[0] < 0x80 && b[1] < 0x80 && b[0]>>3 != 0 {
		num := protowire.Number(b[0] >> 3)
		switch protowire.Type(b[0] & 7) {
		case protowire.BytesType:
			if n := 2 + int(b[1]); n <= len(b) {
				// b[2:n] keeps b's capacity, as strField needs.
				return field{num: num, typ: protowire.BytesType, b: b[2:n]}, n, nil
			}
		case protowire.VarintType:
			return field{num: num, typ: protowire.VarintType, v: uint64(b[1])}, 2, nil
		}
	}
	// Slow path: anything else, errors included.
	tag, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return field{}, 0, errDecode
	}
	num := tag >> 3
	if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return field{}, 0, errDecode
	}
	fl := field{num: protowire.Number(num), typ: protowire.Type(tag & 7)}
	var m int
	switch fl.typ {
	case protowire.VarintType:
		fl.v, m = protowire.ConsumeVarint(b[n:])
	case protowire.BytesType:
		fl.b, m = protowire.ConsumeBytes(b[n:])
	case protowire.EndGroupType:
		return field{}, 0, errDecode
	default:
		m = protowire.ConsumeFieldValue(fl.num, fl.typ, b[n:])
	}
	if m < 0 {
		return field{}, 0, errDecode
	}
	return fl, n + m, nil
}

// unknown appends fl (raw value bytes raw) to an unknown-field buffer the
// way proto.Unmarshal does: a canonical tag, then the value as received.
func appendUnknown(u []byte, fl field, raw []byte) []byte {
	u = protowire.AppendTag(u, fl.num, fl.typ)
	return append(u, raw...)
}

// setUnknown adds u to m's unknown fields.
func setUnknown(m proto.Message, u []byte) {
	if len(u) == 0 {
		return
	}
	r := m.ProtoReflect()
	r.SetUnknown(append(r.GetUnknown(), u...))
}

// rawValue is the value part of a field of n bytes at the start of b.
func rawValue(b []byte, n int) []byte {
	_, tn := protowire.ConsumeVarint(b)
	return b[tn:n]
}

func unmarshalFrame(f *Frame, b []byte, alias, direct bool) error {
	return eachField(f, b, func(fl field) (bool, error) {
		if fl.typ == protowire.VarintType {
			switch fl.num {
			case 4:
				f.End = fl.v != 0
			case 7:
				f.SendBody = fl.v != 0
			default:
				return false, nil
			}
			return true, nil
		}
		if fl.typ != protowire.BytesType {
			return false, nil
		}
		switch fl.num {
		case 1:
			if f.Request == nil {
				if direct {
					// Fast path: headers straight into an http.Header
					// (see recvhead.go).
					var err error
					f.Request, err = decodeRequest(fl.b)
					return true, err
				}
				f.Request = new(tunnelv1.RequestHead)
			} else if err := unmarkRequest(f.Request); err != nil {
				return true, err
			}
			// Slow path: DecodeFrame, or a second head, which merges into
			// the first as proto.Unmarshal merges it.
			return true, unmarshalRequestHead(f.Request, fl.b)
		case 2:
			if f.Response == nil {
				if direct {
					var err error
					f.Response, err = decodeResponse(fl.b)
					return true, err
				}
				f.Response = new(tunnelv1.ResponseHead)
			} else if err := unmarkResponse(f.Response); err != nil {
				return true, err
			}
			return true, unmarshalResponseHead(f.Response, fl.b)
		case 3:
			if alias {
				f.Data = fl.b
			} else {
				f.Data = append(make([]byte, 0, len(fl.b)), fl.b...)
			}
		case 5:
			var hs headerBlock
			hs.count(fl.b)
			hs.alloc(string(fl.b))
			f.Trailers = append(f.Trailers, hs.next())
			return true, hs.fill(f.Trailers[len(f.Trailers)-1], fl.b)
		case 6:
			if f.Error == nil {
				f.Error = new(tunnelv1.Error)
			}
			return true, unmarshalError(f.Error, fl.b)
		case 8:
			if f.Informational == nil {
				f.Informational = new(tunnelv1.ResponseHead)
			}
			return true, unmarshalResponseHead(f.Informational, fl.b)
		default:
			return false, nil
		}
		return true, nil
	})
}

// strField cuts a string field out of s, the string copy of the message
// whose bytes start at base. It does not check UTF-8: every string field of
// a Frame is declared without the check (utf8_validation = NONE in
// tunnel.proto), because HTTP heads may carry bytes that are not UTF-8.
// v must be a subslice of base that, like base, reaches the end of the
// underlying buffer (as protowire.ConsumeBytes returns it), so that its
// offset in base is the difference of their capacities.
func strField(s string, base, v []byte) string {
	start := cap(base) - cap(v)
	return s[start : start+len(v)]
}

// headerBlock hands out the Header messages of one head and their values,
// allocated in one block each after a counting pass.
type headerBlock struct {
	s       string // copy of the head's bytes; strings are cut from it
	base    []byte // the head's bytes
	nh, nv  int    // headers and values counted
	headers []tunnelv1.Header
	values  []string
}

// count counts the headers and values in one Header message b.
func (hb *headerBlock) count(b []byte) {
	hb.nh++
	for len(b) > 0 {
		fl, n, err := nextField(b)
		if err != nil {
			return // fill reports it
		}
		if fl.num == 2 && fl.typ == protowire.BytesType {
			hb.nv++
		}
		b = b[n:]
	}
}

func (hb *headerBlock) alloc(s string) {
	hb.s = s
	hb.headers = make([]tunnelv1.Header, hb.nh)
	if hb.nv > 0 {
		hb.values = make([]string, 0, hb.nv)
	}
}

func (hb *headerBlock) next() *tunnelv1.Header {
	if len(hb.headers) == 0 {
		// More headers than counted cannot happen; stay safe anyway.
		return new(tunnelv1.Header)
	}
	h := &hb.headers[0]
	hb.headers = hb.headers[1:]
	return h
}

// fill decodes the Header message b, whose bytes lie within the string
// copy hb.s (or, for a trailer, are all of it).
func (hb *headerBlock) fill(h *tunnelv1.Header, b []byte) error {
	base := hb.base
	if base == nil {
		base = b
	}
	first := len(hb.values)
	err := eachField(h, b, func(fl field) (bool, error) {
		if fl.typ != protowire.BytesType || (fl.num != 1 && fl.num != 2) {
			return false, nil
		}
		v := strField(hb.s, base, fl.b)
		if fl.num == 1 {
			h.Name = v
		} else {
			hb.values = append(hb.values, v)
		}
		return true, nil
	})
	if len(hb.values) > first {
		// Capped, so that appending to one header's values never
		// overwrites the next one's.
		h.Values = hb.values[first:len(hb.values):len(hb.values)]
	}
	return err
}

// headsHeaders prepares the header block of a head whose repeated Header
// field is number num. It counts the headers but not their values: the
// values block gets room for one value per header, the usual case, and
// fill grows it for the rest (a header's values are a capped subslice, so
// one that moved with the growth stays where it was). Counting the values
// too meant parsing every header twice.
func headsHeaders(b []byte, num protowire.Number) headerBlock {
	hb := headerBlock{base: b}
	for len(b) > 0 {
		fl, n, err := nextField(b)
		if err != nil {
			break
		}
		if fl.num == num && fl.typ == protowire.BytesType {
			hb.nh++
		}
		b = b[n:]
	}
	hb.nv = hb.nh
	hb.alloc(string(hb.base))
	return hb
}

// eachField calls fn for each field of the message b and keeps the fields
// fn does not know (known false) as unknown fields of m.
func eachField(m proto.Message, b []byte, fn func(fl field) (known bool, err error)) error {
	var unknown []byte
	for len(b) > 0 {
		fl, n, err := nextField(b)
		if err != nil {
			return err
		}
		known, err := fn(fl)
		if err != nil {
			return err
		}
		if !known {
			unknown = appendUnknown(unknown, fl, rawValue(b, n))
		}
		b = b[n:]
	}
	setUnknown(m, unknown)
	return nil
}

// headField decodes the fields that request and response heads share: the
// repeated Header field headerNum and the repeated trailer-name field
// namesNum. It reports whether fl was one of them.
func (hb *headerBlock) headField(fl field, headerNum, namesNum protowire.Number,
	headers *[]*tunnelv1.Header, names *[]string,
) (bool, error) {
	if fl.typ != protowire.BytesType {
		return false, nil
	}
	switch fl.num {
	case headerNum:
		hdr := hb.next()
		if err := hb.fill(hdr, fl.b); err != nil {
			return true, err
		}
		if *headers == nil {
			*headers = make([]*tunnelv1.Header, 0, hb.nh)
		}
		*headers = append(*headers, hdr)
		return true, nil
	case namesNum:
		*names = append(*names, strField(hb.s, hb.base, fl.b))
		return true, nil
	}
	return false, nil
}

func unmarshalRequestHead(h *tunnelv1.RequestHead, b []byte) error {
	hb := headsHeaders(b, 6)
	return eachField(h, b, func(fl field) (bool, error) {
		if ok, err := hb.headField(fl, 6, 8, &h.Headers, &h.TrailerNames); ok || err != nil {
			return ok, err
		}
		return requestHeadField(h, hb.s, b, fl), nil
	})
}

// requestHeadField decodes fl into h if it is one of the request head's
// other fields (not its headers or trailer names), whose strings are cut
// from s, the string copy of the head's bytes b. It reports whether it was.
func requestHeadField(h *tunnelv1.RequestHead, s string, b []byte, fl field) bool {
	var dst *string
	switch {
	case fl.typ == protowire.VarintType && fl.num == 7:
		h.ContentLength = int64(fl.v)
	case fl.typ == protowire.VarintType && fl.num == 9:
		h.BackendHttp2 = fl.v != 0
	case fl.typ == protowire.VarintType && fl.num == 12:
		h.ExpectContinue = fl.v != 0
	case fl.typ == protowire.VarintType && fl.num == 13:
		h.Informational = fl.v != 0
	case fl.typ != protowire.BytesType:
		return false
	case fl.num == 1:
		dst = &h.Method
	case fl.num == 2:
		dst = &h.Scheme
	case fl.num == 3:
		dst = &h.Authority
	case fl.num == 4:
		dst = &h.Path
	case fl.num == 5:
		dst = &h.Host
	case fl.num == 10:
		dst = &h.App
	case fl.num == 11:
		dst = &h.RequestId
	default:
		return false
	}
	if dst != nil {
		*dst = strField(s, b, fl.b)
	}
	return true
}

func unmarshalResponseHead(h *tunnelv1.ResponseHead, b []byte) error {
	hb := headsHeaders(b, 2)
	return eachField(h, b, func(fl field) (bool, error) {
		if ok, err := hb.headField(fl, 2, 4, &h.Headers, &h.TrailerNames); ok || err != nil {
			return ok, err
		}
		return responseHeadField(h, fl), nil
	})
}

// responseHeadField is requestHeadField for a response head.
func responseHeadField(h *tunnelv1.ResponseHead, fl field) bool {
	switch {
	case fl.typ == protowire.VarintType && fl.num == 1:
		h.Status = int32(fl.v)
	case fl.typ == protowire.VarintType && fl.num == 3:
		h.ContentLength = int64(fl.v)
	default:
		return false
	}
	return true
}

func unmarshalError(e *tunnelv1.Error, b []byte) error {
	s := string(b)
	return eachField(e, b, func(fl field) (bool, error) {
		var dst *string
		switch {
		case fl.typ == protowire.BytesType && fl.num == 1:
			dst = &e.Code
		case fl.typ == protowire.BytesType && fl.num == 2:
			dst = &e.Message
		default:
			return false, nil
		}
		*dst = strField(s, b, fl.b)
		return true, nil
	})
}
