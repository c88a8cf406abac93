#!/bin/sh
# Let runtime-tools (which asks for Go 1.21) build with Debian's Go 1.19:
# the four newer standard-library functions it uses, added to the build copy
# in $1.  Nothing else of its source is changed.
set -eu
cd "$1"
mkdir -p vendor/slices
cat > vendor/slices/slices.go <<'GO'
// Package slices: what runtime-tools uses of Go 1.21's slices.
package slices

func Contains[S ~[]E, E comparable](s S, v E) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func DeleteFunc[S ~[]E, E any](s S, del func(E) bool) S {
	out := s[:0]
	for _, x := range s {
		if !del(x) {
			out = append(out, x)
		}
	}
	return out
}
GO
C=vendor/github.com/moby/sys/capability
sed -i 's/sync\.OnceValues(/onceValues(/; s/strings\.CutPrefix(/cutPrefix(/g; /^\t"sync"$/d' $C/capability_linux.go
cat > $C/go119_compat.go <<'GO'
package capability

import (
	"strings"
	"sync"
)

func cutPrefix(s, prefix string) (string, bool) {
	if !strings.HasPrefix(s, prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

func onceValues[T1, T2 any](f func() (T1, T2)) func() (T1, T2) {
	var once sync.Once
	var r1 T1
	var r2 T2
	return func() (T1, T2) {
		once.Do(func() { r1, r2 = f() })
		return r1, r2
	}
}
GO
sed -i 's/sync\.OnceValue(/onceValue(/; /^\t"sync"$/d' validate/capabilities/validate.go
cat > validate/capabilities/go119_compat.go <<'GO'
package capabilities

import "sync"

func onceValue[T any](f func() T) func() T {
	var once sync.Once
	var r T
	return func() T {
		once.Do(func() { r = f() })
		return r
	}
}
GO
