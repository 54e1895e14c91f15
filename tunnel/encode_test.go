package tunnel

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	tunnelv1 "github.com/sallyport/sallyport/proto/sallyport/tunnel/v1"
)

// TestAppendFrameMatchesProto: the hand encoder writes what proto.Marshal
// writes, for the frames the relay sends and for the corners of the
// encoding (nil and empty messages, negative numbers, empty strings in a
// list, bytes that are not UTF-8, unknown fields at every level).
func TestAppendFrameMatchesProto(t *testing.T) {
	withUnknown := func(m proto.Message) {
		u := protowire.AppendTag(nil, 99, protowire.VarintType)
		m.ProtoReflect().SetUnknown(protowire.AppendVarint(u, 7))
	}
	unknownEverywhere := &Frame{
		Request:  &tunnelv1.RequestHead{Method: "GET", Headers: []*tunnelv1.Header{{Name: "A", Values: []string{"1"}}}},
		Response: &tunnelv1.ResponseHead{Status: 200, Headers: []*tunnelv1.Header{{Name: "B"}}},
		Trailers: []*tunnelv1.Header{{Name: "C"}}, Error: &tunnelv1.Error{Code: "x"},
		Informational: &tunnelv1.ResponseHead{Status: 103},
	}
	for _, m := range []proto.Message{unknownEverywhere, unknownEverywhere.Request, unknownEverywhere.Request.Headers[0],
		unknownEverywhere.Response, unknownEverywhere.Response.Headers[0], unknownEverywhere.Trailers[0],
		unknownEverywhere.Error, unknownEverywhere.Informational} {
		withUnknown(m)
	}
	cases := map[string]*Frame{
		"empty":            {},
		"empty messages":   {Request: &tunnelv1.RequestHead{}, Response: &tunnelv1.ResponseHead{}, Error: &tunnelv1.Error{}, Informational: &tunnelv1.ResponseHead{}},
		"nil header":       {Trailers: []*tunnelv1.Header{nil, {Name: "X"}}, Response: &tunnelv1.ResponseHead{Headers: []*tunnelv1.Header{nil}}},
		"negative numbers": {Request: &tunnelv1.RequestHead{ContentLength: -1}, Response: &tunnelv1.ResponseHead{Status: -3, ContentLength: -1}},
		"empty values":     {Request: &tunnelv1.RequestHead{Headers: []*tunnelv1.Header{{Name: "X", Values: []string{"", "a", ""}}}, TrailerNames: []string{""}}},
		"not UTF-8":        {Request: &tunnelv1.RequestHead{Path: "/caf\xe9", Headers: []*tunnelv1.Header{{Name: "X", Values: []string{"Ren\xe9"}}}}},
		"big head": {Request: &tunnelv1.RequestHead{Method: "GET", Headers: []*tunnelv1.Header{
			{Name: "Cookie", Values: []string{string(make([]byte, 70000))}}}}},
		"unknown fields everywhere": unknownEverywhere,
		"every field":               everyField(t),
	}
	for _, tc := range benchFrames() {
		cases["bench "+tc.name] = tc.f
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) { checkEncodesAsProto(t, f) })
	}
}

// everyField is a Frame with every field of it and of its messages set to
// a value that is not the default, found through the descriptors: a field
// added to tunnel.proto and not to the encoder fails the test.
func everyField(t *testing.T) *Frame {
	t.Helper()
	f := new(Frame)
	fill(t, f.ProtoReflect(), 0)
	return f
}

func fill(t *testing.T, m protoreflect.Message, depth int) {
	if depth > 3 {
		t.Fatal("tunnel.proto's Frame nests deeper than expected; extend the test")
	}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			l := m.Mutable(fd).List()
			for range 2 {
				e := l.NewElement()
				fill(t, e.Message(), depth+1)
				l.Append(e)
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			l.Append(scalar(t, fd, 1))
			l.Append(scalar(t, fd, 2))
		case fd.Kind() == protoreflect.MessageKind:
			fill(t, m.Mutable(fd).Message(), depth+1)
		default:
			m.Set(fd, scalar(t, fd, 300))
		}
	}
}

// scalar is a value of fd's kind that is not the default, derived from n.
func scalar(t *testing.T, fd protoreflect.FieldDescriptor, n int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(string(fd.Name()) + "-\xe9-" + string(rune('a'+n%26)))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(make([]byte, n))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(int64(n) << 20)
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(n))
	}
	t.Fatalf("field %s: kind %s is not in the test; extend scalar", fd.FullName(), fd.Kind())
	return protoreflect.Value{}
}

// TestUnknownFieldsReadDirectly: the encoder reads unknown fields from the
// generated structs, not through protoreflect (the fallback is correct but
// made encoding slower than proto.Marshal): a generated-code layout change
// fails here rather than as a silent slowdown.
func TestUnknownFieldsReadDirectly(t *testing.T) {
	for name, typ := range map[string]reflect.Type{
		"Frame": reflect.TypeFor[tunnelv1.Frame](), "Header": reflect.TypeFor[tunnelv1.Header](),
		"RequestHead": reflect.TypeFor[tunnelv1.RequestHead](), "ResponseHead": reflect.TypeFor[tunnelv1.ResponseHead](),
		"Error": reflect.TypeFor[tunnelv1.Error](),
	} {
		if f, ok := typ.FieldByName("unknownFields"); !ok || f.Type != reflect.TypeFor[[]byte]() {
			t.Errorf("%s has no unknownFields []byte field (found %v): the encoder falls back to GetUnknown", name, ok)
		}
	}
	h := &tunnelv1.Header{Name: "X"}
	h.ProtoReflect().SetUnknown([]byte{0xa0, 0x06, 0x01})
	if got := headerUnknown(h); string(got) != "\xa0\x06\x01" {
		t.Fatalf("headerUnknown = %x, want a00601", got)
	}
	if got := headerUnknown(nil); got != nil {
		t.Fatalf("headerUnknown(nil) = %x", got)
	}
}

// BenchmarkAppendFrame is BenchmarkEncodeFrame with the hand encoder.
func BenchmarkAppendFrame(b *testing.B) {
	for _, tc := range benchFrames() {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(FrameSize(tc.f)))
			var buf []byte
			for b.Loop() {
				buf = AppendFrame(buf[:0], tc.f)
			}
		})
	}
}
