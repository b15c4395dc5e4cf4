// Written here: a shell glob over Characters is a few lines, and fnmatch(3) works on bytes
// (a multi-byte character would count as several for `?`).

/// Shell glob: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\x`.
package func globMatch(_ p: [Character], _ s: ArraySlice<Character>) -> Bool {
    globMatch(p, 0, Array(s), 0)
}

private func globMatch(_ p: [Character], _ pi: Int, _ s: [Character], _ si: Int) -> Bool {
    var pi = pi, si = si
    while pi < p.count {
        switch p[pi] {
        case "*":
            while pi < p.count && p[pi] == "*" { pi += 1 }
            if pi == p.count { return true }
            for k in si...s.count where globMatch(p, pi, s, k) { return true }
            return false
        case "?":
            guard si < s.count else { return false }
            pi += 1
            si += 1
        case "[":
            guard si < s.count, let (ok, next) = matchClass(p, pi, s[si]) else {
                if si < s.count && s[si] == "[" { pi += 1; si += 1; continue }
                return false
            }
            guard ok else { return false }
            pi = next
            si += 1
        case "\\" where pi + 1 < p.count:
            guard si < s.count, s[si] == p[pi + 1] else { return false }
            pi += 2
            si += 1
        default:
            guard si < s.count, s[si] == p[pi] else { return false }
            pi += 1
            si += 1
        }
    }
    return si == s.count
}

/// Matches `c` against the bracket expression at p[start]; nil when it is not one.
private func matchClass(_ p: [Character], _ start: Int, _ c: Character) -> (Bool, Int)? {
    var i = start + 1
    var negate = false
    if i < p.count && (p[i] == "!" || p[i] == "^") { negate = true; i += 1 }
    var matched = false
    var first = true
    while i < p.count && (p[i] != "]" || first) {
        first = false
        var lo = p[i]
        if lo == "\\" && i + 1 < p.count { i += 1; lo = p[i] }
        if i + 2 < p.count && p[i + 1] == "-" && p[i + 2] != "]" {
            let hi = p[i + 2]
            if lo <= c && c <= hi { matched = true }
            i += 3
        } else {
            if c == lo { matched = true }
            i += 1
        }
    }
    guard i < p.count else { return nil }
    return (matched != negate, i + 1)
}
