package gateway

import "testing"

// BenchmarkNormalisePathCost: normalisePath and the version before it
// (oldNormalisePath) on normaliseCostCases.
func BenchmarkNormalisePathCost(b *testing.B) {
	for _, impl := range []struct {
		name string
		f    func(string) (cleanPath, error)
	}{{"new", normalisePath}, {"old", oldNormalisePath}} {
		for _, c := range normaliseCostCases() {
			b.Run(impl.name+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := impl.f(c.escaped); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
