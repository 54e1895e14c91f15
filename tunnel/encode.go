package tunnel

import (
	"reflect"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/runtime/protoimpl"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// This file encodes Frames by hand, the counterpart of decode.go: generic
// protobuf encoding walks each message twice through its field tables (a
// size pass, then the marshal pass) and was about 5% of the gateway's CPU
// in small exchanges. The bytes are exactly what proto.Marshal writes —
// fields in number order, zero scalars and empty strings left out (implicit
// presence), a present message even when empty, unknown fields last — and
// TestAppendFrameMatchesProto and FuzzAppendFrame check that against
// proto.Marshal itself. Field numbers are those of
// proto/sallyport/tunnel/v1/tunnel.proto; a field added there must be
// added here too (the tests fail until it is).

// FrameSize is the length of f's encoding.
func FrameSize(f *Frame) int {
	n := 0
	if f.Request != nil {
		n += msgSize(requestHeadSize(f.Request))
	}
	if f.Response != nil {
		n += msgSize(responseHeadSize(f.Response))
	}
	if len(f.Data) > 0 {
		n += 1 + protowire.SizeBytes(len(f.Data))
	}
	if f.End {
		n += 2
	}
	for _, h := range f.Trailers {
		n += msgSize(headerMsgSize(h))
	}
	if f.Error != nil {
		n += msgSize(errorSize(f.Error))
	}
	if f.SendBody {
		n += 2
	}
	if f.Informational != nil {
		n += msgSize(responseHeadSize(f.Informational))
	}
	return n + len(frameUnknown(f))
}

// AppendFrame appends f's encoding to b.
func AppendFrame(b []byte, f *Frame) []byte {
	if f.Request != nil {
		b = appendRequestHeadField(b, 1, f.Request)
	}
	if f.Response != nil {
		b = appendResponseHeadField(b, 2, f.Response)
	}
	if len(f.Data) > 0 {
		b = tag(b, 3, protowire.BytesType)
		b = append(appendLen(b, len(f.Data)), f.Data...)
	}
	if f.End {
		b = appendBool(b, 4)
	}
	for _, h := range f.Trailers {
		b = appendHeaderField(b, 5, h)
	}
	if e := f.Error; e != nil {
		b = tag(b, 6, protowire.BytesType)
		b = appendLen(b, errorSize(e))
		b = appendString(b, 1, e.Code)
		b = appendString(b, 2, e.Message)
		b = append(b, errorUnknown(e)...)
	}
	if f.SendBody {
		b = appendBool(b, 7)
	}
	if f.Informational != nil {
		b = appendResponseHeadField(b, 8, f.Informational)
	}
	return append(b, frameUnknown(f)...)
}

// The unknown fields of each message, which proto.Marshal writes last.
func frameUnknown(m *tunnelv1.Frame) []byte { return unknownAt(unsafe.Pointer(m), frameUnknownOff, m) }
func headerUnknown(m *tunnelv1.Header) []byte {
	return unknownAt(unsafe.Pointer(m), headerUnknownOff, m)
}
func errorUnknown(m *tunnelv1.Error) []byte { return unknownAt(unsafe.Pointer(m), errorUnknownOff, m) }

func requestHeadUnknown(m *tunnelv1.RequestHead) []byte {
	return unknownAt(unsafe.Pointer(m), requestHeadUnknownOff, m)
}

func responseHeadUnknown(m *tunnelv1.ResponseHead) []byte {
	return unknownAt(unsafe.Pointer(m), responseHeadUnknownOff, m)
}

var (
	frameUnknownOff        = unknownOffset[tunnelv1.Frame]()
	headerUnknownOff       = unknownOffset[tunnelv1.Header]()
	requestHeadUnknownOff  = unknownOffset[tunnelv1.RequestHead]()
	responseHeadUnknownOff = unknownOffset[tunnelv1.ResponseHead]()
	errorUnknownOff        = unknownOffset[tunnelv1.Error]()
)

// tag appends the tag of field num, which is below 16 for every field of
// a Frame: one byte.
func tag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	return append(b, byte(num)<<3|byte(typ))
}

// appendLen appends a length, most often below 128: one byte.
func appendLen(b []byte, n int) []byte {
	if n < 0x80 {
		return append(b, byte(n))
	}
	return protowire.AppendVarint(b, uint64(n))
}

// unknownOffset is the offset of the unknownFields field that generated
// message structs of type T hold, or 0 if there is none (it is never the
// first field). protoreflect's GetUnknown costs about 20 ns a call, which
// made encoding a request head slower than proto.Marshal (a head and each
// of its headers are read three times: two sizes and the append); reading
// the field at its offset, as protobuf's own fast path does, is one load.
// If the generated code ever lays the field out otherwise, unknownAt falls
// back to GetUnknown (TestUnknownFieldsReadDirectly notices).
func unknownOffset[T any]() uintptr {
	f, ok := reflect.TypeFor[T]().FieldByName("unknownFields")
	if !ok || f.Type != reflect.TypeFor[protoimpl.UnknownFields]() {
		return 0
	}
	return f.Offset
}

// unknownAt reads the unknown fields of m, whose struct is at p (nil for
// a nil message), at offset off.
func unknownAt(p unsafe.Pointer, off uintptr, m proto.Message) []byte {
	switch {
	case p == nil:
		return nil
	case off == 0:
		return m.ProtoReflect().GetUnknown()
	}
	return *(*[]byte)(unsafe.Add(p, off))
}

// msgSize is the size of a length-delimited field of n bytes: its one-byte
// tag (every field number of a Frame is below 16), length and bytes.
func msgSize(n int) int { return 1 + protowire.SizeBytes(n) }

func strSize(s string) int {
	if s == "" {
		return 0
	}
	return 1 + protowire.SizeBytes(len(s))
}

func varintSize(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func boolSize(v bool) int {
	if v {
		return 2
	}
	return 0
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = tag(b, num, protowire.BytesType)
	return append(appendLen(b, len(s)), s...)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = tag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBool(b []byte, num protowire.Number) []byte {
	return append(tag(b, num, protowire.VarintType), 1)
}

// appendRepeated appends each of ss as field num; unlike a singular
// string, an empty element is written.
func appendRepeated(b []byte, num protowire.Number, ss []string) []byte {
	for _, s := range ss {
		b = tag(b, num, protowire.BytesType)
		b = append(appendLen(b, len(s)), s...)
	}
	return b
}

func repeatedSize(ss []string) int {
	n := 0
	for _, s := range ss {
		n += 1 + protowire.SizeBytes(len(s))
	}
	return n
}

// headerMsgSize and appendHeaderField take a nil Header as an empty one, as
// proto.Marshal does.
func headerMsgSize(h *tunnelv1.Header) int {
	return strSize(h.GetName()) + repeatedSize(h.GetValues()) + len(headerUnknown(h))
}

func headersSize(hs []*tunnelv1.Header) int {
	n := 0
	for _, h := range hs {
		n += msgSize(headerMsgSize(h))
	}
	return n
}

func appendHeaderField(b []byte, num protowire.Number, h *tunnelv1.Header) []byte {
	b = tag(b, num, protowire.BytesType)
	b = appendLen(b, headerMsgSize(h))
	b = appendString(b, 1, h.GetName())
	b = appendRepeated(b, 2, h.GetValues())
	return append(b, headerUnknown(h)...)
}

func requestHeadSize(h *tunnelv1.RequestHead) int {
	return strSize(h.Method) + strSize(h.Scheme) + strSize(h.Authority) + strSize(h.Path) +
		strSize(h.Host) + headersSize(h.Headers) + varintSize(uint64(h.ContentLength)) +
		repeatedSize(h.TrailerNames) + boolSize(h.BackendHttp2) + strSize(h.App) +
		strSize(h.RequestId) + boolSize(h.ExpectContinue) + boolSize(h.Informational) +
		len(requestHeadUnknown(h))
}

func appendRequestHeadField(b []byte, num protowire.Number, h *tunnelv1.RequestHead) []byte {
	b = tag(b, num, protowire.BytesType)
	b = appendLen(b, requestHeadSize(h))
	b = appendString(b, 1, h.Method)
	b = appendString(b, 2, h.Scheme)
	b = appendString(b, 3, h.Authority)
	b = appendString(b, 4, h.Path)
	b = appendString(b, 5, h.Host)
	for _, hd := range h.Headers {
		b = appendHeaderField(b, 6, hd)
	}
	b = appendVarint(b, 7, uint64(h.ContentLength))
	b = appendRepeated(b, 8, h.TrailerNames)
	if h.BackendHttp2 {
		b = appendBool(b, 9)
	}
	b = appendString(b, 10, h.App)
	b = appendString(b, 11, h.RequestId)
	if h.ExpectContinue {
		b = appendBool(b, 12)
	}
	if h.Informational {
		b = appendBool(b, 13)
	}
	return append(b, requestHeadUnknown(h)...)
}

func responseHeadSize(h *tunnelv1.ResponseHead) int {
	// An int32 is encoded as the int64 of the same value (10 bytes when
	// negative), as proto.Marshal does.
	return varintSize(uint64(int64(h.Status))) + headersSize(h.Headers) +
		varintSize(uint64(h.ContentLength)) + repeatedSize(h.TrailerNames) + len(responseHeadUnknown(h))
}

func appendResponseHeadField(b []byte, num protowire.Number, h *tunnelv1.ResponseHead) []byte {
	b = tag(b, num, protowire.BytesType)
	b = appendLen(b, responseHeadSize(h))
	b = appendVarint(b, 1, uint64(int64(h.Status)))
	for _, hd := range h.Headers {
		b = appendHeaderField(b, 2, hd)
	}
	b = appendVarint(b, 3, uint64(h.ContentLength))
	b = appendRepeated(b, 4, h.TrailerNames)
	return append(b, responseHeadUnknown(h)...)
}

func errorSize(e *tunnelv1.Error) int {
	return strSize(e.Code) + strSize(e.Message) + len(errorUnknown(e))
}
