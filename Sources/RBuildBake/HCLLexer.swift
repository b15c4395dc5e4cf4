// The tokens of HCL's native syntax (https://github.com/hashicorp/hcl/blob/main/hclsyntax/spec.md).
// Quoted strings and heredocs are not single tokens: the lexer reports where one starts and the
// parser reads its template (literal runs and `${…}` interpolations) through `TemplateReader`,
// because an interpolation holds a whole expression.

enum Token: Equatable {
    case ident(String)
    case number(Double)
    /// An opening `"`; the template follows.
    case quote
    /// `<<EOT` or `<<-EOT` (flush), its newline consumed; the template follows.
    case heredoc(marker: String, flush: Bool)
    case punct(String)
    case newline
    case eof

    var display: String {
        switch self {
        case .ident(let s): "\"\(s)\""
        case .number(let d): HCLValue.formatNumber(d)
        case .quote: "a string"
        case .heredoc: "a heredoc"
        case .punct(let p): "\"\(p)\""
        case .newline: "end of line"
        case .eof: "end of file"
        }
    }
}

struct Lexer {
    let file: String
    let bytes: [UInt8]
    var offset = 0
    var line = 1
    var column = 1

    init(file: String, bytes: [UInt8]) {
        self.file = file
        self.bytes = bytes
    }

    var pos: SourcePos { SourcePos(file: file, line: line, column: column) }
    var atEnd: Bool { offset >= bytes.count }
    func peekByte(_ ahead: Int = 0) -> UInt8? {
        offset + ahead < bytes.count ? bytes[offset + ahead] : nil
    }

    mutating func advance() {
        let b = bytes[offset]
        offset += 1
        if b == UInt8(ascii: "\n") {
            line += 1
            column = 1
        } else if b & 0xC0 != 0x80 {
            // A UTF-8 continuation byte belongs to the character already counted.
            column += 1
        }
    }

    /// Skips blanks and comments; newlines too when `newlines` (inside brackets they mean nothing).
    mutating func skipTrivia(newlines: Bool) throws {
        while let b = peekByte() {
            switch b {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                advance()
            case UInt8(ascii: "\n") where newlines:
                advance()
            case UInt8(ascii: "#"):
                while let c = peekByte(), c != UInt8(ascii: "\n") { advance() }
            case UInt8(ascii: "/") where peekByte(1) == UInt8(ascii: "/"):
                while let c = peekByte(), c != UInt8(ascii: "\n") { advance() }
            case UInt8(ascii: "/") where peekByte(1) == UInt8(ascii: "*"):
                let start = pos
                advance()
                advance()
                while true {
                    guard let c = peekByte() else { throw start.error("unterminated /* comment: close it with */") }
                    if c == UInt8(ascii: "*") && peekByte(1) == UInt8(ascii: "/") {
                        advance()
                        advance()
                        break
                    }
                    advance()
                }
            default:
                return
            }
        }
    }

    static func isIdentStart(_ b: UInt8) -> Bool {
        (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || b == UInt8(ascii: "_") || b >= 0x80
    }
    static func isIdentContinue(_ b: UInt8) -> Bool {
        isIdentStart(b) || isDigit(b) || b == UInt8(ascii: "-")
    }
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    private static let puncts3 = ["..."]
    private static let puncts2 = ["==", "!=", "<=", ">=", "&&", "||", "=>"]
    private static let puncts1 = Set("{}[]()=:,.?!+-*/%<>".utf8)

    /// The next token and where it starts.
    mutating func next(newlines skipNewlines: Bool) throws -> (Token, SourcePos) {
        try skipTrivia(newlines: skipNewlines)
        let start = pos
        guard let b = peekByte() else { return (.eof, start) }
        if b == UInt8(ascii: "\n") {
            advance()
            return (.newline, start)
        }
        if Self.isIdentStart(b) {
            var s: [UInt8] = []
            while let c = peekByte(), Self.isIdentContinue(c) {
                s.append(c)
                advance()
            }
            return (.ident(String(decoding: s, as: UTF8.self)), start)
        }
        if Self.isDigit(b) {
            return (.number(try lexNumber(start)), start)
        }
        if b == UInt8(ascii: "\"") {
            advance()
            return (.quote, start)
        }
        if b == UInt8(ascii: "<"), peekByte(1) == UInt8(ascii: "<") {
            return (try lexHeredocStart(start), start)
        }
        for p in Self.puncts3 + Self.puncts2 where matches(p) {
            for _ in p.utf8 { advance() }
            return (.punct(p), start)
        }
        if Self.puncts1.contains(b) {
            advance()
            return (.punct(String(UnicodeScalar(b))), start)
        }
        let ch = String(decoding: bytes[offset..<min(offset + 4, bytes.count)], as: UTF8.self).prefix(1)
        throw start.error("unexpected character \"\(ch)\"")
    }

    func matches(_ s: String) -> Bool {
        var i = offset
        for c in s.utf8 {
            guard i < bytes.count, bytes[i] == c else { return false }
            i += 1
        }
        return true
    }

    private mutating func lexNumber(_ start: SourcePos) throws -> Double {
        var s: [UInt8] = []
        while let c = peekByte(), Self.isDigit(c) { s.append(c); advance() }
        if peekByte() == UInt8(ascii: "."), let d = peekByte(1), Self.isDigit(d) {
            s.append(UInt8(ascii: "."))
            advance()
            while let c = peekByte(), Self.isDigit(c) { s.append(c); advance() }
        }
        if let e = peekByte(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            var ahead = 1
            if let sign = peekByte(1), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { ahead = 2 }
            if let d = peekByte(ahead), Self.isDigit(d) {
                for _ in 0..<ahead { s.append(bytes[offset]); advance() }
                while let c = peekByte(), Self.isDigit(c) { s.append(c); advance() }
            }
        }
        guard let d = Double(String(decoding: s, as: UTF8.self)) else {
            throw start.error("invalid number")
        }
        return d
    }

    private mutating func lexHeredocStart(_ start: SourcePos) throws -> Token {
        advance()
        advance()
        var flush = false
        if peekByte() == UInt8(ascii: "-") {
            flush = true
            advance()
        }
        var marker: [UInt8] = []
        while let c = peekByte(), Self.isIdentContinue(c) { marker.append(c); advance() }
        guard !marker.isEmpty else {
            throw start.error("a heredoc needs a marker name after <<, as in <<EOT")
        }
        if peekByte() == UInt8(ascii: "\r") { advance() }
        guard peekByte() == UInt8(ascii: "\n") else {
            throw pos.error("a heredoc's marker must end its line (<<\(String(decoding: marker, as: UTF8.self)) then a newline)")
        }
        advance()
        return .heredoc(marker: String(decoding: marker, as: UTF8.self), flush: flush)
    }
}
