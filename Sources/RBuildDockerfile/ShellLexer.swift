import RBuildSystem
/// Docker's word expansion: quotes, escapes and `$VAR`/`${VAR…}` substitution, applied by the
/// frontend to the arguments of FROM, COPY, ENV, WORKDIR… (never to RUN, whose shell does it).
///
/// Supported: `$v ${v} ${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?msg} ${v?msg} ${v#p} ${v##p} ${v%p}
/// ${v%%p} ${v/p/r} ${v//p/r}` with shell glob patterns, single and double quotes, and the
/// escape token (`\` or the backtick chosen by `# escape=`).
public struct ShellLexer: Sendable {
    public var escape: Character
    /// Leave `$NAME` as written when NAME is not set (used to find heredoc delimiters).
    public var skipUnset = false
    /// Keep quote characters in the output.
    public var rawQuotes = false
    /// Keep escape tokens in the output.
    public var rawEscapes = false

    public init(escape: Character = "\\") {
        self.escape = escape
    }

    /// The result of expanding one word.
    public struct Result: Sendable, Equatable {
        /// The expansion as one string (spaces kept).
        public var word: String
        /// The expansion split into words on unquoted white space.
        public var words: [String]
        /// Names referenced but not set (for the UndefinedVar check).
        public var unmatched: Set<String>
        /// Names referenced and set.
        public var matched: Set<String>
    }

    /// Expands `text` with `env` (a lookup: nil means unset).
    public func expand(_ text: String, env: @escaping (String) -> String?) throws -> Result {
        var state = LexState(chars: Array(text), lexer: self, env: env)
        let (word, words) = try state.process(stopAt: nil)
        return Result(word: word, words: words, unmatched: state.unmatched, matched: state.matched)
    }

    /// Convenience: expand with a dictionary.
    public func expand(_ text: String, env: [String: String]) throws -> Result {
        try expand(text, env: { env[$0] })
    }

    /// `processWords` of BuildKit: the expansion split into words.
    public func words(_ text: String, env: [String: String]) throws -> [String] {
        try expand(text, env: env).words
    }
}

public struct ExpansionError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public var description: String { message }
}

/// Collects characters into words: unquoted white space separates, quoted text does not.
private struct WordCollector {
    var word = ""
    var words: [String] = []
    var inWord = false

    mutating func add(_ c: Character) {
        if c.isWhitespace {
            if inWord && !word.isEmpty {
                words.append(word)
                word = ""
                inWord = false
            }
        } else {
            addRaw(c)
        }
    }

    mutating func addRaw(_ c: Character) {
        word.append(c)
        inWord = true
    }

    mutating func add(_ s: String) { s.forEach { add($0) } }

    mutating func addRaw(_ s: String) {
        word += s
        inWord = true
    }

    mutating func finish() -> [String] {
        if !word.isEmpty {
            words.append(word)
            word = ""
            inWord = false
        }
        return words
    }
}

private struct LexState {
    let chars: [Character]
    let lexer: ShellLexer
    let env: (String) -> String?
    var pos = 0
    var unmatched: Set<String> = []
    var matched: Set<String> = []

    init(chars: [Character], lexer: ShellLexer, env: @escaping (String) -> String?) {
        self.chars = chars
        self.lexer = lexer
        self.env = env
    }

    var peek: Character? { pos < chars.count ? chars[pos] : nil }

    mutating func next() -> Character? {
        guard pos < chars.count else { return nil }
        defer { pos += 1 }
        return chars[pos]
    }

    func fail(_ message: String) -> ExpansionError {
        ExpansionError(message: "failed to process \"\(String(chars))\": \(message)")
    }

    /// Processes up to `stop` (consumed) or the end.
    mutating func process(stopAt stop: Character?) throws -> (String, [String]) {
        var result = ""
        var words = WordCollector()
        while let c = peek {
            if let stop, c == stop {
                pos += 1
                return (result, words.finish())
            }
            switch c {
            case "'":
                let s = try singleQuoted()
                result += s
                words.addRaw(s)
            case "\"":
                let s = try doubleQuoted()
                result += s
                words.addRaw(s)
            case "$":
                let s = try dollar()
                result += s
                words.add(s)
            default:
                pos += 1
                if c == lexer.escape {
                    guard let escaped = next() else { break }
                    if lexer.rawEscapes {
                        result.append(c)
                        words.addRaw(c)
                    }
                    words.addRaw(escaped)
                    result.append(escaped)
                } else {
                    words.add(c)
                    result.append(c)
                }
            }
        }
        if let stop {
            throw fail("unexpected end of statement while looking for matching \(stop)")
        }
        return (result, words.finish())
    }

    mutating func singleQuoted() throws -> String {
        pos += 1
        var out = lexer.rawQuotes ? "'" : ""
        while true {
            guard let c = next() else {
                throw fail("unexpected end of statement while looking for matching single-quote")
            }
            if c == "'" {
                if lexer.rawQuotes { out.append(c) }
                return out
            }
            out.append(c)
        }
    }

    mutating func doubleQuoted() throws -> String {
        pos += 1
        var out = lexer.rawQuotes ? "\"" : ""
        while true {
            guard let c = peek else {
                throw fail("unexpected end of statement while looking for matching double-quote")
            }
            if c == "\"" {
                pos += 1
                if lexer.rawQuotes { out.append(c) }
                return out
            }
            if c == "$" {
                out += try dollar()
                continue
            }
            pos += 1
            if c == lexer.escape {
                guard let n = peek else { continue }     // an escape at the very end is dropped
                if n == "\"" || n == "$" || n == lexer.escape {
                    if lexer.rawEscapes { out.append(c) }
                    out.append(n)
                    pos += 1
                    continue
                }
            }
            out.append(c)
        }
    }

    mutating func name() -> String {
        var name = ""
        while let c = peek {
            if name.isEmpty && c.isASCII && c.isNumber {
                while let d = peek, d.isASCII, d.isNumber { name.append(d); pos += 1 }
                return name
            }
            if name.isEmpty && "@*#?-$!0".contains(c) {
                pos += 1
                return String(c)
            }
            guard c.isLetter || c.isNumber || c == "_" else { break }
            name.append(c)
            pos += 1
        }
        return name
    }

    mutating func lookup(_ name: String) -> String? {
        if let v = env(name) {
            matched.insert(name)
            return v
        }
        unmatched.insert(name)
        return nil
    }

    mutating func dollar() throws -> String {
        let start = pos
        pos += 1
        guard peek == "{" else {
            let n = name()
            if n.isEmpty { return "$" }
            if let v = lookup(n) { return v }
            return lexer.skipUnset ? String(chars[start..<pos]) : ""
        }
        pos += 1
        switch peek {
        case nil: throw fail("syntax error: missing '}'")
        case "{", "}", ":": throw fail("syntax error: bad substitution")
        default: break
        }
        let n = name()
        guard let op = next() else { throw fail("syntax error: missing '}'") }
        if op == "}" {
            if let v = lookup(n) { return v }
            return lexer.skipUnset ? String(chars[start..<pos]) : ""
        }
        let value = lookup(n)
        switch op {
        case ":":
            guard let m = next() else { throw fail("syntax error: missing '}'") }
            let (word, _) = try argument()
            switch m {
            case "-": return (value ?? "").isEmpty ? word : value!
            case "+": return (value ?? "").isEmpty ? "" : word
            case "?":
                if (value ?? "").isEmpty {
                    throw fail("\(n): \(word.isEmpty ? "is not allowed to be \(value == nil ? "unset" : "empty")" : word)")
                }
                return value!
            default:
                throw fail("unsupported modifier (\(m)) in substitution")
            }
        case "-":
            let (word, _) = try argument()
            return value ?? word
        case "+":
            let (word, _) = try argument()
            return value == nil ? "" : word
        case "?":
            let (word, _) = try argument()
            guard let value else { throw fail("\(n): \(word.isEmpty ? "is not allowed to be unset" : word)") }
            return value
        case "#", "%":
            let longest = peek == op
            if longest { pos += 1 }
            let (pattern, _) = try argument()
            let v = value ?? ""
            return op == "#" ? trimPrefix(v, pattern, longest: longest) : trimSuffix(v, pattern, longest: longest)
        case "/":
            let all = peek == "/"
            if all { pos += 1 }
            let (pattern, replacement) = try replaceArguments()
            return replace(value ?? "", pattern, replacement, all: all)
        default:
            throw fail("unsupported modifier (\(op)) in substitution")
        }
    }

    /// The word after a modifier, up to the closing brace; it may itself contain expansions.
    mutating func argument() throws -> (String, [String]) {
        do {
            return try process(stopAt: "}")
        } catch {
            if peek == nil { throw fail("syntax error: missing '}'") }
            throw error
        }
    }

    /// `${v/pattern/replacement}`: the pattern ends at the first unescaped '/'.
    mutating func replaceArguments() throws -> (String, String) {
        var pattern = ""
        while let c = peek, c != "/", c != "}" {
            pos += 1
            if c == lexer.escape, let n = next() { pattern.append(n); continue }
            if c == "$" { pos -= 1; pattern += try dollar(); continue }
            pattern.append(c)
        }
        var replacement = ""
        if peek == "/" {
            pos += 1
            replacement = try argument().0
        } else if peek == "}" {
            pos += 1
        } else {
            throw fail("syntax error: missing '}'")
        }
        return (pattern, replacement)
    }
}

// MARK: - Shell patterns for ${v#p} ${v%p} ${v/p/r}

func trimPrefix(_ s: String, _ pattern: String, longest: Bool) -> String {
    let chars = Array(s)
    let lengths = longest ? Array((0...chars.count).reversed()) : Array(0...chars.count)
    for n in lengths where globMatch(Array(pattern), chars[0..<n]) {
        return String(chars[n...])
    }
    return s
}

func trimSuffix(_ s: String, _ pattern: String, longest: Bool) -> String {
    let chars = Array(s)
    let starts = longest ? Array(0...chars.count) : Array((0...chars.count).reversed())
    for start in starts where globMatch(Array(pattern), chars[start...]) {
        return String(chars[..<start])
    }
    return s
}

func replace(_ s: String, _ pattern: String, _ replacement: String, all: Bool) -> String {
    guard !pattern.isEmpty else { return s }
    let chars = Array(s), p = Array(pattern)
    var out = "", i = 0, replaced = false
    while i < chars.count {
        if !(replaced && !all) {
            // Longest match starting here, as the shell does.
            if let end = (i...chars.count).reversed().first(where: { $0 > i && globMatch(p, chars[i..<$0]) }) {
                out += replacement
                i = end
                replaced = true
                continue
            }
        }
        out.append(chars[i])
        i += 1
    }
    return out
}
