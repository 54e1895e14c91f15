package grpctunnel

// WriteBufferSize is writeBuffer for the external tests.
const WriteBufferSize = writeBuffer
