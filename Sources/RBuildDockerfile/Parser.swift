/// One instruction as the Dockerfile wrote it, in the shape BuildKit's parser gives it: a
/// keyword, its `--flags`, and its arguments after the instruction-specific splitting (JSON
/// arrays, words, `name=value` pairs). Typed instructions (`Instruction`) are built from these.
public struct Node: Sendable, Equatable {
    /// The keyword as written (`RUN`, `run`…). `command` is its lower-case form.
    public var keyword: String
    public var flags: [String]
    public var args: [Argument]
    /// Whether the arguments came from a JSON array (exec form).
    public var isJSON: Bool
    public var heredocs: [Heredoc]
    /// The whole logical line, continuations joined, as parsed.
    public var original: String
    public var range: SourceRange
    /// Comment lines directly above the instruction.
    public var comments: [String]

    public var command: String { keyword.lowercased() }

    /// An argument: a word, or for ONBUILD the instruction it carries.
    public indirect enum Argument: Sendable, Equatable {
        case word(String)
        case instruction(Node)

        public var word: String? {
            if case .word(let w) = self { return w }
            return nil
        }
    }

    /// The words of the arguments (ONBUILD's nested instruction excluded).
    public var words: [String] { args.compactMap(\.word) }

    /// BuildKit's s-expression dump: `(copy ["--from=a"] "src" "dst")` without the parentheses.
    public func dump() -> String {
        var s = command
        if !flags.isEmpty {
            s += " [" + flags.map(goQuote).joined(separator: " ") + "]"
        }
        for arg in args {
            switch arg {
            case .word(let w): s += " " + goQuote(w)
            case .instruction(let n): s += " (" + n.dump() + ")"
            }
        }
        return s
    }
}

/// A here-document attached to RUN, COPY or ADD.
public struct Heredoc: Sendable, Equatable {
    public var name: String
    public var fileDescriptor: Int
    /// Whether `$variables` in the content are expanded (the delimiter was not quoted).
    public var expand: Bool
    /// `<<-`: leading tabs are removed from each line.
    public var chomp: Bool
    /// The lines between the instruction and the delimiter, newlines included.
    public var content: String
}

/// A parsed Dockerfile: directives and instructions, nothing evaluated yet.
public struct Dockerfile: Sendable {
    public var fileName: String
    public var nodes: [Node]
    public var escapeToken: Character
    /// `# syntax=` (recorded; rbuild has one frontend).
    public var syntax: String?
    /// `# check=` as written, e.g. `skip=JSONArgsRecommended;error=true`.
    public var check: String?
    /// Non-fatal findings of the parser itself (empty continuation lines).
    public var warnings: [ParserWarning]

    /// The whole file's dump in BuildKit's format, one instruction per line.
    public func dump() -> String {
        nodes.map { "(" + $0.dump() + ")" }.joined(separator: "\n")
    }

    /// Parses `text`. Errors name the file and line.
    public static func parse(_ text: String, fileName: String = "Dockerfile") throws -> Dockerfile {
        var parser = LineParser(text: text, fileName: fileName)
        return try parser.run()
    }
}

public struct ParserWarning: Sendable, Equatable {
    public var message: String
    public var range: SourceRange
}

// MARK: - The line machine

/// Instructions whose shell form may carry heredocs, and those that may carry such an instruction.
let heredocCommands: Set<String> = ["run", "copy", "add"]

struct LineParser {
    let fileName: String
    var lines: [Substring]
    var index = 0
    var escape: Character = "\\"
    var directivesDone = false
    var seenDirectives: Set<String> = []
    var syntax: String?
    var check: String?

    init(text: String, fileName: String) {
        self.fileName = fileName
        var t = Substring(text)
        if t.hasPrefix("\u{FEFF}") { t = t.dropFirst() }
        // Keep the line endings: heredoc content needs them. Split on bytes: a newline byte
        // never occurs inside a multi-byte UTF-8 sequence.
        var out: [Substring] = []
        let u = t.utf8
        var start = u.startIndex
        var i = u.startIndex
        while i < u.endIndex {
            let next = u.index(after: i)
            if u[i] == 0x0A {
                out.append(Substring(u[start..<next]))
                start = next
            }
            i = next
        }
        if start < u.endIndex { out.append(Substring(u[start...])) }
        lines = out
    }

    func error(_ line: Int, _ message: String) -> DockerfileError {
        DockerfileError(file: fileName, line: line, message)
    }

    mutating func run() throws -> Dockerfile {
        var nodes: [Node] = []
        var warnings: [ParserWarning] = []
        var comments: [String] = []
        while index < lines.count {
            let raw = lines[index]
            if isComment(raw) {
                comments.append(trimmed(String(dropLeadingSpace(trimNewline(raw)).dropFirst())))
            }
            let startLine = index + 1
            var processed = try processLine(raw, stripLeft: true, line: startLine)
            index += 1
            var (line, ended) = trimContinuation(processed)
            if ended && line.isEmpty {
                // A blank line ends a run of comments: they belong to no instruction.
                if !isComment(raw) { comments = [] }
                continue
            }
            var emptyContinuation = false
            while !ended && index < lines.count {
                let next = lines[index]
                processed = try processLine(next, stripLeft: false, line: index + 1)
                index += 1
                if isComment(next) { continue }
                if processed.utf8.allSatisfy(isSpaceByte) {
                    emptyContinuation = true
                    continue
                }
                let (part, end) = trimContinuation(processed)
                line += part
                ended = end
            }
            if emptyContinuation {
                warnings.append(ParserWarning(message: "empty continuation line", range: SourceRange(startLine: startLine, endLine: index)))
            }
            var node: Node
            do {
                node = try makeNode(line)
            } catch let e as LocalError {
                throw error(startLine, e.message)
            }
            if canContainHeredoc(node) {
                let docs: [Heredoc]
                do {
                    docs = try heredocs(in: line)
                } catch let e as LocalError {
                    throw error(startLine, e.message)
                }
                for var doc in docs {
                    var terminated = false
                    while index < lines.count {
                        let l = lines[index]
                        index += 1
                        var candidate = trimNewline(l)
                        if doc.chomp { candidate = candidate.drop(while: { $0 == "\t" }) }
                        if candidate == doc.name {
                            terminated = true
                            break
                        }
                        doc.content += l
                    }
                    if !terminated {
                        throw error(startLine, "unterminated heredoc \(doc.name)")
                    }
                    node.heredocs.append(doc)
                }
            }
            node.range = SourceRange(startLine: startLine, endLine: index)
            node.comments = comments
            comments = []
            nodes.append(node)
        }
        if nodes.isEmpty {
            throw error(0, "file with no instructions")
        }
        return Dockerfile(fileName: fileName, nodes: nodes, escapeToken: escape, syntax: syntax, check: check,
                          warnings: warnings)
    }

    func canContainHeredoc(_ node: Node) -> Bool {
        var n = node
        if n.command == "onbuild", case .instruction(let inner)? = n.args.first { n = inner }
        return heredocCommands.contains(n.command) && !n.isJSON
    }

    /// Strips the newline (and, for the first line of an instruction, leading white space),
    /// looks for a parser directive, and drops a whole-line comment.
    mutating func processLine(_ raw: Substring, stripLeft: Bool, line: Int) throws -> Substring {
        var token = trimNewline(raw)
        if stripLeft { token = dropLeadingSpace(token) }
        if !directivesDone { try possibleDirective(token, line: line) }
        if token.utf8.first == 0x23 { return "" }
        return token
    }

    mutating func possibleDirective(_ line: Substring, line number: Int) throws {
        guard !directivesDone else { return }
        // `# key = value`, key starting with a letter; anything else ends the directives.
        guard line.first == "#" else { directivesDone = true; return }
        let body = line.dropFirst().drop(while: isSpace)
        guard let eq = body.firstIndex(of: "="), let first = body.first, first.isASCII, first.isLetter else {
            directivesDone = true
            return
        }
        let key = body[..<eq].trimmingTrailingSpace()
        guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
            directivesDone = true
            return
        }
        let value = trimmed(String(body[body.index(after: eq)...]))
        let k = key.lowercased()
        guard ["escape", "syntax", "check"].contains(k), !value.isEmpty else {
            directivesDone = true
            return
        }
        if seenDirectives.contains(k) {
            throw error(number, "only one \(k) parser directive can be used")
        }
        seenDirectives.insert(k)
        switch k {
        case "escape":
            guard value == "`" || value == "\\" else {
                throw error(number, "invalid escape token '\(value)' does not match ` or \\")
            }
            escape = value.first!
        case "syntax": syntax = value
        default: check = value
        }
    }

    /// A line ends with the escape token (and optional blanks) unless that token is itself
    /// escaped: then it continues on the next line.
    func trimContinuation(_ line: Substring) -> (String, Bool) {
        let u = line.utf8
        let esc = escape.asciiValue!
        var end = u.endIndex
        while end > u.startIndex, u[u.index(before: end)] == 0x20 || u[u.index(before: end)] == 0x09 {
            end = u.index(before: end)
        }
        guard end > u.startIndex else { return (String(line), true) }
        let last = u.index(before: end)
        guard u[last] == esc else { return (String(line), true) }
        if last > u.startIndex, u[u.index(before: last)] == esc { return (String(line), true) }
        return (String(Substring(u[u.startIndex..<last])), false)
    }

    func makeNode(_ line: String) throws -> Node {
        let (keyword, flags, rest) = try splitCommand(line)
        let (args, json) = try parseArguments(command: keyword.lowercased(), rest)
        return Node(keyword: keyword, flags: flags, args: args, isJSON: json, heredocs: [], original: line,
                    range: SourceRange(startLine: 0, endLine: 0), comments: [])
    }

    func parseArguments(command: String, _ rest: String) throws -> ([Node.Argument], Bool) {
        func words(_ w: [String]) -> [Node.Argument] { w.map { .word($0) } }
        switch command {
        case "add", "copy", "volume":
            if let json = try parseJSON(rest) { return (words(json), true) }
            return (words(splitWhitespace(rest)), false)
        case "cmd", "entrypoint", "run", "shell":
            if rest.isEmpty { return ([], false) }
            if let json = try parseJSON(rest) { return (words(json), true) }
            return ([.word(rest)], false)
        case "arg":
            return (words(parseWords(rest)), false)
        case "env", "label":
            return (words(try parseNameValue(rest, key: command.uppercased())), false)
        case "expose", "from":
            return (words(splitWhitespace(rest)), false)
        case "healthcheck":
            let type = rest.prefix(while: { !isSpace($0) })
            if type.isEmpty { return ([], false) }
            let after = String(rest.dropFirst(type.count).drop(while: isSpace))
            var cmd: [Node.Argument] = []
            var json = false
            if !after.isEmpty {
                if let j = try parseJSON(after) {
                    cmd = words(j)
                    json = true
                } else {
                    cmd = [.word(after)]
                }
            }
            return ([.word(String(type))] + cmd, json)
        case "maintainer", "stopsignal", "user", "workdir":
            return (rest.isEmpty ? [] : [.word(rest)], false)
        case "onbuild":
            if rest.isEmpty { return ([], false) }
            return ([.instruction(try makeNode(rest))], false)
        default:
            // Unknown instructions parse (BuildKit ignores their arguments); the typed layer rejects them.
            return ([], false)
        }
    }

    /// `ENV a b` (old form: one pair, the rest of the line is the value) or `ENV a=b c=d`.
    func parseNameValue(_ rest: String, key: String) throws -> [String] {
        let w = parseWords(rest)
        guard let first = w.first else { return [] }
        if !first.contains("=") {
            let name = rest.prefix(while: { !isWhitespaceToken($0) })
            let value = rest.dropFirst(name.count).drop(while: isWhitespaceToken)
            if value.isEmpty {
                throw LocalError("\(key) must have two arguments")
            }
            return [String(name), String(value), ""]
        }
        var out: [String] = []
        for word in w {
            guard let eq = word.firstIndex(of: "=") else {
                throw LocalError("syntax error - can't find = in \(goQuote(word)); must be of the form: name=value")
            }
            out += [String(word[..<eq]), String(word[word.index(after: eq)...]), "="]
        }
        return out
    }

    /// Words split on blanks, quotes and escapes kept (they are removed later, at expansion).
    func parseWords(_ rest: String) -> [String] {
        enum Phase { case spaces, word, quote }
        let esc = escape.asciiValue!
        let b = Array(rest.utf8)
        var words: [String] = []
        var phase = Phase.spaces
        var word: [UInt8] = []
        var quote: UInt8 = 0
        var blankOK = false
        var i = 0
        func emit() { words.append(String(decoding: word, as: UTF8.self)) }
        while i <= b.count {
            let atEnd = i == b.count
            if phase == .spaces {
                if atEnd { break }
                if isSpaceByte(b[i]) { i += 1; continue }
                phase = .word
            }
            if atEnd {
                if blankOK || !word.isEmpty { emit() }
                break
            }
            var ch = b[i]
            if phase == .word {
                if isSpaceByte(ch) {
                    phase = .spaces
                    if blankOK || !word.isEmpty { emit() }
                    word = []
                    blankOK = false
                    i += 1
                    continue
                }
                if ch == 0x27 || ch == 0x22 {
                    quote = ch
                    blankOK = true
                    phase = .quote
                }
                if ch == esc {
                    if i + 1 == b.count { i += 1; continue }
                    word.append(ch)
                    i += 1
                    ch = b[i]
                }
                word.append(ch)
                i += 1
                continue
            }
            // In quotes: the escape token works except inside single quotes.
            if ch == quote { phase = .word }
            if ch == esc && quote != 0x27 {
                if i + 1 == b.count { phase = .word; i += 1; continue }
                word.append(ch)
                i += 1
                ch = b[i]
            }
            word.append(ch)
            i += 1
        }
        return words
    }

    /// `[ "a", "b" ]` → ["a", "b"]; nil when the text is not a JSON array (shell form then).
    /// An array holding anything but strings is an error, as in Docker.
    func parseJSON(_ rest: String) throws -> [String]? {
        let text = rest.drop(while: isSpace)
        guard text.first == "[" else { return nil }
        var reader = JSONArrayReader(Array(text.unicodeScalars))
        return try reader.read()
    }
}

// MARK: - Small helpers

/// Splits off the keyword and the leading `--flags` (quotes and escapes removed), as BuildKit does.
func splitCommand(_ line: String) throws -> (String, [String], String) {
    let b = Array(line.utf8)
    var i = 0
    while i < b.count && isSpaceByte(b[i]) { i += 1 }
    let kStart = i
    while i < b.count && !isBlankByte(b[i]) { i += 1 }
    let keyword = String(decoding: b[kStart..<i], as: UTF8.self)
    while i < b.count && isBlankByte(b[i]) { i += 1 }
    let (restStart, flags) = extractFlags(b, from: i)
    var end = b.count
    while end > restStart && isSpaceByte(b[end - 1]) { end -= 1 }
    var start = restStart
    while start < end && isSpaceByte(b[start]) { start += 1 }
    return (keyword, flags, String(decoding: b[start..<end], as: UTF8.self))
}

/// The `--flag` words at the start of `b[from...]`; returns where the arguments begin.
func extractFlags(_ b: [UInt8], from: Int) -> (Int, [String]) {
    enum Phase { case spaces, word, quote }
    var words: [String] = []
    var phase = Phase.spaces
    var word: [UInt8] = []
    var quote: UInt8 = 0
    var blankOK = false
    var i = from
    while i <= b.count {
        let atEnd = i == b.count
        if phase == .spaces {
            if atEnd { break }
            if isSpaceByte(b[i]) { i += 1; continue }
            // Only a word starting with "--" is a flag.
            if b[i] != 0x2D || i + 1 == b.count || b[i + 1] != 0x2D { return (i, words) }
            phase = .word
        }
        if atEnd {
            if word != [0x2D, 0x2D] && (blankOK || !word.isEmpty) { words.append(String(decoding: word, as: UTF8.self)) }
            break
        }
        var ch = b[i]
        if phase == .word {
            if isSpaceByte(ch) {
                phase = .spaces
                if word == [0x2D, 0x2D] { return (i, words) }
                if blankOK || !word.isEmpty { words.append(String(decoding: word, as: UTF8.self)) }
                word = []
                blankOK = false
                i += 1
                continue
            }
            if ch == 0x27 || ch == 0x22 {
                quote = ch
                blankOK = true
                phase = .quote
                i += 1
                continue
            }
            if ch == 0x5C {
                if i + 1 == b.count { i += 1; continue }
                i += 1
                ch = b[i]
            }
            word.append(ch)
            i += 1
            continue
        }
        if ch == quote { phase = .word; i += 1; continue }
        if ch == 0x5C {
            if i + 1 == b.count { phase = .word; i += 1; continue }
            i += 1
            ch = b[i]
        }
        word.append(ch)
        i += 1
    }
    return (b.count, words)
}

/// Splits on runs of blanks (space, tab, \v, \f, \r), as BuildKit's whitespace regexp does.
func splitWhitespace(_ s: String) -> [String] {
    if s.isEmpty { return [] }
    return s.utf8.split(whereSeparator: isBlankByte).map { String(decoding: $0, as: UTF8.self) }
}

func isWhitespaceToken(_ c: Character) -> Bool {
    c == " " || c == "\t" || c == "\u{0B}" || c == "\u{0C}" || c == "\r"
}

/// BuildKit's `[\t\v\f\r ]`.
@inline(__always) func isBlankByte(_ b: UInt8) -> Bool {
    b == 0x20 || b == 0x09 || b == 0x0B || b == 0x0C || b == 0x0D
}

/// ASCII white space (Go's unicode.IsSpace for the bytes that can appear alone in UTF-8).
@inline(__always) func isSpaceByte(_ b: UInt8) -> Bool {
    b == 0x20 || (b >= 0x09 && b <= 0x0D)
}

func isSpace(_ c: Character) -> Bool { c.isWhitespace }

func trimmed(_ s: String) -> String {
    let u = Array(s.utf8)
    var a = 0, e = u.count
    while a < e && isSpaceByte(u[a]) { a += 1 }
    while e > a && isSpaceByte(u[e - 1]) { e -= 1 }
    if a == 0 && e == u.count { return s }
    return String(decoding: u[a..<e], as: UTF8.self)
}

func trimNewline(_ s: Substring) -> Substring {
    let u = s.utf8
    var e = u.endIndex
    while e > u.startIndex {
        let p = u.index(before: e)
        guard u[p] == 0x0A || u[p] == 0x0D else { break }
        e = p
    }
    return Substring(u[u.startIndex..<e])
}

/// Drops leading white space (bytes).
func dropLeadingSpace(_ s: Substring) -> Substring {
    let u = s.utf8
    var i = u.startIndex
    while i < u.endIndex && isSpaceByte(u[i]) { i = u.index(after: i) }
    return Substring(u[i..<u.endIndex])
}

func isComment(_ line: Substring) -> Bool {
    for b in line.utf8 {
        if isSpaceByte(b) { continue }
        return b == 0x23
    }
    return false
}

extension Substring {
    func trimmingTrailingSpace() -> Substring {
        var e = endIndex
        while e > startIndex, self[index(before: e)].isWhitespace { e = index(before: e) }
        return self[..<e]
    }
}

/// Go's strconv.Quote, which BuildKit's dump uses.
func goQuote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\u{07}": out += "\\a"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{0B}": out += "\\v"
        default:
            if u.value < 0x20 || u.value == 0x7f {
                out += "\\x" + hex(u.value, 2)
            } else if u.value < 0x80 || isGoPrintable(u) {
                out.unicodeScalars.append(u)
            } else if u.value < 0x10000 {
                out += "\\u" + hex(u.value, 4)
            } else {
                out += "\\U" + hex(u.value, 8)
            }
        }
    }
    return out + "\""
}

private func hex(_ v: UInt32, _ width: Int) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, width - s.count)) + s
}

private func isGoPrintable(_ u: Unicode.Scalar) -> Bool {
    switch u.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
         .nonspacingMark, .spacingMark, .enclosingMark,
         .decimalNumber, .letterNumber, .otherNumber,
         .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
         .initialPunctuation, .finalPunctuation, .otherPunctuation,
         .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
        return true
    default:
        return false
    }
}

/// A strict reader for the one JSON shape Dockerfiles use: an array of strings.
struct JSONArrayReader {
    let s: [Unicode.Scalar]
    var i = 0

    init(_ s: [Unicode.Scalar]) { self.s = s }

    /// nil: not valid JSON (the instruction is then in shell form). Throws: valid JSON that is
    /// not an array of strings.
    mutating func read() throws -> [String]? {
        guard let value = parseValue() else { return nil }
        skipSpace()
        // Like Go's json.Decoder, anything after the first value is ignored.
        guard case .array(let items) = value else { return nil }
        var out: [String] = []
        for item in items {
            guard case .string(let str) = item else {
                throw LocalError("when using JSON array syntax, arrays must be comprised of strings only")
            }
            out.append(str)
        }
        return out
    }

    indirect enum Value { case string(String), array([Value]), other }

    mutating func skipSpace() {
        while i < s.count, s[i] == " " || s[i] == "\t" || s[i] == "\n" || s[i] == "\r" { i += 1 }
    }

    mutating func parseValue() -> Value? {
        skipSpace()
        guard i < s.count else { return nil }
        switch s[i] {
        case "[":
            i += 1
            var items: [Value] = []
            skipSpace()
            if i < s.count, s[i] == "]" { i += 1; return .array(items) }
            while true {
                guard let v = parseValue() else { return nil }
                items.append(v)
                skipSpace()
                guard i < s.count else { return nil }
                if s[i] == "," { i += 1; continue }
                if s[i] == "]" { i += 1; return .array(items) }
                return nil
            }
        case "\"":
            return parseString().map { .string($0) }
        case "{":
            // Objects only matter as "not a string": skip balanced braces/strings.
            var depth = 0
            while i < s.count {
                if s[i] == "\"" { guard parseString() != nil else { return nil }; continue }
                if s[i] == "{" { depth += 1 }
                if s[i] == "}" { depth -= 1; if depth == 0 { i += 1; return .other } }
                i += 1
            }
            return nil
        default:
            let start = i
            while i < s.count, !",]} \t\r\n".unicodeScalars.contains(s[i]) { i += 1 }
            let word = String(String.UnicodeScalarView(s[start..<i]))
            if ["true", "false", "null"].contains(word) || Double(word) != nil { return .other }
            return nil
        }
    }

    mutating func parseString() -> String? {
        i += 1
        var out = String.UnicodeScalarView()
        while i < s.count {
            let c = s[i]
            i += 1
            if c == "\"" { return String(out) }
            if c.value < 0x20 { return nil }
            if c != "\\" { out.append(c); continue }
            guard i < s.count else { return nil }
            let e = s[i]
            i += 1
            switch e {
            case "\"": out.append("\"")
            case "\\": out.append("\\")
            case "/": out.append("/")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "u":
                guard let v = hex4() else { return nil }
                if (0xD800..<0xDC00).contains(v), i + 1 < s.count, s[i] == "\\", s[i + 1] == "u" {
                    i += 2
                    guard let lo = hex4(), (0xDC00..<0xE000).contains(lo) else { out.append("\u{FFFD}"); continue }
                    out.append(Unicode.Scalar(0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00))!)
                } else {
                    out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
                }
            default: return nil
            }
        }
        return nil
    }

    mutating func hex4() -> UInt32? {
        guard i + 4 <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[i..<i + 4])), radix: 16) else { return nil }
        i += 4
        return v
    }
}

// MARK: - Heredocs

extension LineParser {
    /// The heredocs a shell-form RUN/COPY/ADD line opens: words like `<<EOF`, `<<-"EOF"`, `3<<EOF`.
    func heredocs(in line: String) throws -> [Heredoc] {
        // Most lines have none: look for "<<" before splitting words.
        let u = Array(line.utf8)
        guard u.count >= 3, (0..<u.count - 1).contains(where: { u[$0] == 0x3C && u[$0 + 1] == 0x3C }) else { return [] }
        return try rawWords(line).compactMap(heredoc(fromWord:))
    }

    func heredoc(fromWord word: String) throws -> Heredoc? {
        // ^(\d*)<<(-?)([^<]*)$
        let digits = word.prefix(while: { $0.isASCII && $0.isNumber })
        var rest = word.dropFirst(digits.count)
        guard rest.hasPrefix("<<") else { return nil }
        rest = rest.dropFirst(2)
        let chomp = rest.first == "-"
        if chomp { rest = rest.dropFirst() }
        guard !rest.isEmpty, !rest.contains("<") else { return nil }
        let (name, quoted) = try unquote(String(rest))
        guard !name.isEmpty else { return nil }
        return Heredoc(name: name, fileDescriptor: Int(digits) ?? 0, expand: !quoted, chomp: chomp, content: "")
    }

    /// Removes shell quoting from a heredoc delimiter; says whether any part was quoted.
    func unquote(_ s: String) throws -> (String, Bool) {
        var out = ""
        var quoted = false
        var quote: Character?
        var it = Array(s)
        var i = 0
        while i < it.count {
            let c = it[i]
            if let q = quote {
                if c == q { quote = nil } else if c == "\\" && q == "\"" && i + 1 < it.count { i += 1; out.append(it[i]) } else { out.append(c) }
            } else if c == "'" || c == "\"" {
                quote = c
                quoted = true
            } else if c == "\\" && i + 1 < it.count {
                i += 1
                out.append(it[i])
                quoted = true
            } else if c.isWhitespace {
                return ("", false)   // not a single word
            } else {
                out.append(c)
            }
            i += 1
        }
        it = []
        if quote != nil { throw LocalError("unterminated quote in heredoc delimiter \(s)") }
        return (out, quoted)
    }

    /// Shell words with quotes and escapes left in place.
    func rawWords(_ line: String) -> [String] {
        var words: [String] = []
        var word = ""
        var quote: Character?
        var inWord = false
        let chars = Array(line)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if let q = quote {
                word.append(c)
                if c == q { quote = nil } else if c == "\\" && q == "\"" && i + 1 < chars.count { i += 1; word.append(chars[i]) }
            } else if c.isWhitespace {
                if inWord { words.append(word); word = ""; inWord = false }
            } else {
                inWord = true
                word.append(c)
                if c == "'" || c == "\"" { quote = c } else if c == "\\" && i + 1 < chars.count { i += 1; word.append(chars[i]) }
            }
            i += 1
        }
        if inWord { words.append(word) }
        return words
    }
}
