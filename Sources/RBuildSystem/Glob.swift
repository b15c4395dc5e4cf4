// Written here: a shell glob over Characters is a few lines, and fnmatch(3) works on bytes
// (a multi-byte character would count as several for `?`).

/// Shell glob: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\x`.
///
/// Every token but `*` matches one character, so only the last `*` ever needs to take more:
/// on a mismatch it takes one more character and matching resumes after it (time is length
/// of pattern × length of text). Trying every split at every `*` took exponential time:
/// `*a*a*a*a*a*a*a*a*a*a*b` against 3,000 `a`s ran for ever (scripts/fuzz/bake found it).
package func globMatch(_ p: [Character], _ s: ArraySlice<Character>) -> Bool {
    let s = Array(s)
    var pi = 0, si = 0
    var star: (pi: Int, si: Int)?
    while pi < p.count || si < s.count {
        if pi < p.count {
            if p[pi] == "*" {
                while pi < p.count && p[pi] == "*" { pi += 1 }
                star = (pi, si)
                continue
            }
            if si < s.count, let next = step(p, pi, s[si]) {
                pi = next
                si += 1
                continue
            }
        }
        guard let st = star, st.si < s.count else { return false }
        star = (st.pi, st.si + 1)
        pi = st.pi
        si = st.si + 1
    }
    return true
}

/// Where the pattern continues after its token at `pi` when that token matches `c`; nil when not.
private func step(_ p: [Character], _ pi: Int, _ c: Character) -> Int? {
    switch p[pi] {
    case "?":
        return pi + 1
    case "[":
        // Not a bracket expression (no closing ]): a literal [.
        guard let (ok, next) = matchClass(p, pi, c) else { return c == "[" ? pi + 1 : nil }
        return ok ? next : nil
    case "\\" where pi + 1 < p.count:
        return c == p[pi + 1] ? pi + 2 : nil
    default:
        return c == p[pi] ? pi + 1 : nil
    }
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
