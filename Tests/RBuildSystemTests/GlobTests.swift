import Testing
import RBuildSystem

@Suite struct GlobTests {
    private func m(_ p: String, _ s: String) -> Bool { globMatch(Array(p), Array(s)[...]) }

    @Test func shellGlobRules() {
        #expect(m("*", "") && m("*", "abc") && m("a*", "a") && m("a*c", "abbbc") && !m("a*c", "abcd"))
        #expect(m("*.go", "x.go") && !m("*.go", "x.gox") && m("*a*b", "xaxxb") && !m("*a*b", "xbxa"))
        #expect(m("?b?", "abc") && !m("?", "") && !m("??", "a") && m("é?", "éx"))
        #expect(m("[a-c]x", "bx") && !m("[!a-c]x", "bx") && m("[^a]", "b") && m("[]]", "]"))
        #expect(m("a[b", "a[b") && !m("a[b", "ab"))
        #expect(m("\\*", "*") && !m("\\*", "a") && m("a\\", "a\\"))
        #expect(m("app-*-[0-9]*", "app-web-1-0") && !m("app-*-[0-9]", "app-web-x"))
        #expect(m("**a**", "bab") && !m("a*", "") && m("", "") && !m("", "a"))
    }

    /// Trying every split at every `*` took exponential time (found by scripts/fuzz/bake).
    @Test func manyStarsTakeLinearTime() {
        let s = String(repeating: "a", count: 3000)
        #expect(!m(String(repeating: "*a", count: 10) + "*b", s))
        #expect(m(String(repeating: "*a", count: 10) + "*", s))
    }
}
